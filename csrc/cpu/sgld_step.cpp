// ATen glue of the C++ CPU SGLD step: checks, then one at::parallel_for over (tensor, chunk) work items
// of the whole list, so that many small tensors and a few large ones both keep every thread busy.
#include <ATen/Parallel.h>

#include "cpu/sgld_step.h"
#include "stnas_ops.h"

namespace stnas {
namespace {

constexpr int64_t kChunk = 1 << 16;  // elements per work item: a multiple of 4 and of kNoiseBlock

struct WorkItem {
  int64_t tensor, begin, end;
};

template <class G>
void run_items(const std::vector<WorkItem>& items, int64_t first, int64_t last, const TensorList& params,
               const TensorList& grads, const TensorList& momenta, const cpu::SgldScalars& s,
               const std::vector<int64_t>& indices) {
  for (int64_t w = first; w < last; ++w) {
    const WorkItem& it = items[w];
    float* p = params[it.tensor].data_ptr<float>();
    const G* g = grads.empty() ? nullptr : static_cast<const G*>(grads[it.tensor].const_data_ptr());
    float* v = momenta.empty() ? nullptr : momenta[it.tensor].data_ptr<float>();
    cpu::sgld_step_range_dispatch<G>(p, g, v, it.begin, it.end, s,
                                     static_cast<uint32_t>(indices[it.tensor]));
  }
}

}  // namespace

void sgld_step_cpu(const TensorList& params, const TensorList& grads, const TensorList& momenta,
                   double lr, double weight_decay, double momentum, double sigma, int64_t seed,
                   int64_t step, const std::vector<int64_t>& indices) {
  const size_t n = params.size();
  TORCH_CHECK(grads.empty() || grads.size() == n, "sgld_step_cpu: grads has ", grads.size(),
              " tensors but params has ", n, " (give one grad per param, or none for noise only)");
  TORCH_CHECK(momenta.empty() || momenta.size() == n, "sgld_step_cpu: momenta has ", momenta.size(),
              " tensors but params has ", n);
  TORCH_CHECK(indices.size() == n, "sgld_step_cpu: indices has ", indices.size(), " entries but params has ", n);
  const at::ScalarType gtype = grads.empty() ? at::kFloat : grads[0].scalar_type();
  TORCH_CHECK(gtype == at::kFloat || gtype == at::kBFloat16 || gtype == at::kHalf,
              "sgld_step_cpu: grads must be float32, bfloat16 or float16, got ", gtype);
  std::vector<WorkItem> items;
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = params[i];
    TORCH_CHECK(p.device().is_cpu(), "sgld_step_cpu: params[", i, "] is on ", p.device(), ", expected CPU");
    TORCH_CHECK(p.scalar_type() == at::kFloat, "sgld_step_cpu: params[", i, "] must be float32, got ", p.scalar_type());
    TORCH_CHECK(p.is_non_overlapping_and_dense(), "sgld_step_cpu: params[", i, "] must be dense");
    if (!grads.empty()) {
      const at::Tensor& g = grads[i];
      TORCH_CHECK(g.device().is_cpu() && g.scalar_type() == gtype, "sgld_step_cpu: grads[", i,
                  "] must be a CPU ", gtype, " tensor like grads[0], got ", g.scalar_type(), " on ", g.device());
      TORCH_CHECK(g.sizes() == p.sizes() && g.strides() == p.strides(), "sgld_step_cpu: grads[", i,
                  "] must have params[", i, "]'s shape and strides");
    }
    if (!momenta.empty()) {
      const at::Tensor& v = momenta[i];
      TORCH_CHECK(v.device().is_cpu() && v.scalar_type() == at::kFloat && v.sizes() == p.sizes() &&
                      v.strides() == p.strides(),
                  "sgld_step_cpu: momenta[", i, "] must be a CPU float32 tensor with params[", i, "]'s layout");
    }
    for (int64_t b = 0; b < p.numel(); b += kChunk) items.push_back({static_cast<int64_t>(i), b, std::min(b + kChunk, p.numel())});
  }
  const cpu::SgldScalars s{static_cast<float>(lr), static_cast<float>(weight_decay),
                           static_cast<float>(momentum), static_cast<float>(sigma),
                           static_cast<uint64_t>(seed), static_cast<uint64_t>(step)};
  at::parallel_for(0, static_cast<int64_t>(items.size()), 1, [&](int64_t first, int64_t last) {
    switch (gtype) {
      case at::kBFloat16:
        run_items<cpu::BFloat16>(items, first, last, params, grads, momenta, s, indices);
        break;
      case at::kHalf:
        run_items<cpu::Half>(items, first, last, params, grads, momenta, s, indices);
        break;
      default:
        run_items<float>(items, first, last, params, grads, momenta, s, indices);
    }
  });
}

}  // namespace stnas
