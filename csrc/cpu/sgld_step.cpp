// ATen glue of the C++ CPU SGLD step: checks, then one at::parallel_for over equal-sized chunks of the
// concatenation of all tensors of the list, so that one large tensor, many small ones, or a mix all
// split evenly across threads (a chunk may span several small tensors or start mid-tensor).
#include <ATen/Parallel.h>

#include <algorithm>

#include "cpu/sgld_step.h"
#include "stnas_ops.h"

namespace stnas {
namespace {

// Elements per parallel work item: large enough that the per-chunk cost (a binary search, a dispatch)
// is noise, small enough that a list of ~100K elements still spreads over the threads. The result does
// not depend on it: any split gives the serial result (see sgld_step_range_body).
constexpr int64_t kChunk = 1 << 14;

struct TensorRef {
  float* p;
  const void* g;
  float* v;
  int64_t offset;  // of the tensor's first element in the concatenation
  int64_t numel;
  uint32_t noise_index;
};

template <class G>
void run_chunk(const std::vector<TensorRef>& refs, int64_t begin, int64_t end, const cpu::SgldScalars& s) {
  // First tensor whose range reaches past `begin` (empty tensors are skipped by the loop below).
  auto it = std::upper_bound(refs.begin(), refs.end(), begin,
                             [](int64_t x, const TensorRef& r) { return x < r.offset + r.numel; });
  for (; it != refs.end() && it->offset < end; ++it) {
    const int64_t lo = std::max(begin, it->offset) - it->offset;
    const int64_t hi = std::min(end, it->offset + it->numel) - it->offset;
    if (lo < hi) {
      cpu::sgld_step_range_dispatch<G>(it->p, static_cast<const G*>(it->g), it->v, lo, hi, s, it->noise_index);
    }
  }
}

}  // namespace

void sgld_step_cpu(const TensorList& params, const TensorList& grads, const TensorList& momenta,
                   double lr, double weight_decay, double momentum, double sigma, int64_t seed,
                   int64_t step, const std::vector<int64_t>& indices) {
  const size_t n = params.size();
  TORCH_CHECK(grads.empty() || grads.size() == n, "sgld_step_cpu: grads has ", grads.size(),
              " tensors but params has ", n, " (expected one grad per param, or none for noise only)");
  TORCH_CHECK(momenta.empty() || momenta.size() == n, "sgld_step_cpu: momenta has ", momenta.size(),
              " tensors but params has ", n, " (expected one buffer per param, or none for no momentum)");
  TORCH_CHECK(indices.size() == n, "sgld_step_cpu: indices has ", indices.size(),
              " entries but params has ", n, " (expected one Philox index per param)");
  const at::ScalarType gtype = grads.empty() ? at::kFloat : grads[0].scalar_type();
  TORCH_CHECK(gtype == at::kFloat || gtype == at::kBFloat16 || gtype == at::kHalf,
              "sgld_step_cpu: grads must be float32, bfloat16 or float16, got grads[0] of dtype ", gtype);
  std::vector<TensorRef> refs;
  refs.reserve(n);
  int64_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = params[i];
    TORCH_CHECK(p.device().is_cpu(), "sgld_step_cpu: params[", i, "] is on ", p.device(), ", expected CPU");
    TORCH_CHECK(p.scalar_type() == at::kFloat, "sgld_step_cpu: params[", i, "] has dtype ", p.scalar_type(),
                ", expected float32");
    TORCH_CHECK(p.is_non_overlapping_and_dense(), "sgld_step_cpu: params[", i,
                "] must be dense (contiguous or channels_last), got strides ", p.strides());
    TensorRef ref{p.data_ptr<float>(), nullptr, nullptr, total, p.numel(), static_cast<uint32_t>(indices[i])};
    if (!grads.empty()) {
      const at::Tensor& g = grads[i];
      TORCH_CHECK(g.device().is_cpu(), "sgld_step_cpu: grads[", i, "] is on ", g.device(), ", expected CPU");
      TORCH_CHECK(g.scalar_type() == gtype, "sgld_step_cpu: grads[", i, "] has dtype ", g.scalar_type(),
                  ", expected ", gtype, " like grads[0]");
      TORCH_CHECK(g.sizes() == p.sizes() && g.strides() == p.strides(), "sgld_step_cpu: grads[", i,
                  "] has shape ", g.sizes(), " and strides ", g.strides(), ", expected params[", i, "]'s ",
                  p.sizes(), " and ", p.strides());
      ref.g = g.const_data_ptr();
    }
    if (!momenta.empty()) {
      const at::Tensor& v = momenta[i];
      TORCH_CHECK(v.device().is_cpu(), "sgld_step_cpu: momenta[", i, "] is on ", v.device(), ", expected CPU");
      TORCH_CHECK(v.scalar_type() == at::kFloat, "sgld_step_cpu: momenta[", i, "] has dtype ", v.scalar_type(),
                  ", expected float32");
      TORCH_CHECK(v.sizes() == p.sizes() && v.strides() == p.strides(), "sgld_step_cpu: momenta[", i,
                  "] has shape ", v.sizes(), " and strides ", v.strides(), ", expected params[", i, "]'s ",
                  p.sizes(), " and ", p.strides());
      ref.v = v.data_ptr<float>();
    }
    total += ref.numel;
    refs.push_back(ref);
  }
  if (total == 0 || (grads.empty() && sigma == 0.0)) return;  // nothing changes
  const cpu::SgldScalars s{static_cast<float>(lr), static_cast<float>(weight_decay),
                           static_cast<float>(momentum), static_cast<float>(sigma),
                           static_cast<uint64_t>(seed), static_cast<uint64_t>(step)};
  const int64_t chunks = (total + kChunk - 1) / kChunk;
  at::parallel_for(0, chunks, 1, [&](int64_t first, int64_t last) {
    const int64_t begin = first * kChunk, end = std::min(total, last * kChunk);
    switch (gtype) {
      case at::kBFloat16:
        run_chunk<cpu::BFloat16>(refs, begin, end, s);
        break;
      case at::kHalf:
        run_chunk<cpu::Half>(refs, begin, end, s);
        break;
      default:
        run_chunk<float>(refs, begin, end, s);
    }
  });
}

}  // namespace stnas
