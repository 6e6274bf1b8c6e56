// ATen glue of the C++ CPU masked path sum: checks, then at::parallel_for over fixed-size ranges.
#include <ATen/Parallel.h>

#include "cpu/masked_path_sum.h"
#include "stnas_ops.h"

namespace stnas {
namespace {

constexpr int64_t kRange = 1 << 15;  // elements per parallel work item (fixed: reductions reproducible)

void check_paths(const char* fn, const TensorList& ys, const at::Tensor& weights,
                 const std::vector<int64_t>& active, const at::Tensor& like) {
  TORCH_CHECK(weights.device().is_cpu() && weights.dim() == 1 && weights.is_floating_point(), fn,
              ": weights must be a 1-D floating-point CPU tensor");
  for (size_t a = 0; a < active.size(); ++a) {
    TORCH_CHECK(active[a] >= 0 && active[a] < weights.numel(), fn, ": active[", a, "] = ", active[a],
                " is out of range for ", weights.numel(), " weights");
  }
  const at::ScalarType t = like.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kBFloat16 || t == at::kHalf, fn,
              ": paths must be float32, bfloat16 or float16, got ", t);
  TORCH_CHECK(like.device().is_cpu() && like.is_non_overlapping_and_dense(), fn,
              ": tensors must be dense CPU tensors");
  for (size_t a = 0; a < ys.size(); ++a) {
    TORCH_CHECK(ys[a].device().is_cpu() && ys[a].scalar_type() == t && ys[a].sizes() == like.sizes() &&
                    ys[a].strides() == like.strides(),
                fn, ": ys[", a, "] must be a CPU ", t, " tensor with the same shape and strides as the others");
  }
}

std::vector<float> gathered_weights(const at::Tensor& weights, const std::vector<int64_t>& active) {
  const at::Tensor w = weights.to(at::kFloat).contiguous();
  const float* wp = w.const_data_ptr<float>();
  std::vector<float> out(active.size());
  for (size_t a = 0; a < active.size(); ++a) out[a] = wp[active[a]];
  return out;
}

template <class T>
const T* const_ptr(const at::Tensor& t) {
  return static_cast<const T*>(t.const_data_ptr());
}
template <class T>
T* mut_ptr(at::Tensor& t) {
  return static_cast<T*>(t.data_ptr());
}

template <class F>
void dispatch_type(at::ScalarType t, F&& f) {
  switch (t) {
    case at::kBFloat16:
      f(cpu::BFloat16{});
      break;
    case at::kHalf:
      f(cpu::Half{});
      break;
    default:
      f(float{});
  }
}

}  // namespace

at::Tensor masked_path_sum_forward_cpu(const TensorList& ys, const at::Tensor& weights,
                                       const std::vector<int64_t>& active) {
  TORCH_CHECK(!ys.empty(), "masked_path_sum_forward_cpu: ys is empty");
  TORCH_CHECK(ys.size() == active.size(), "masked_path_sum_forward_cpu: ys has ", ys.size(),
              " tensors but active has ", active.size(), " indices");
  check_paths("masked_path_sum_forward_cpu", ys, weights, active, ys[0]);
  const std::vector<float> w = gathered_weights(weights, active);
  at::Tensor out = at::empty_like(ys[0]);
  const int64_t n = out.numel(), paths = static_cast<int64_t>(ys.size());
  dispatch_type(out.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    std::vector<const T*> ptrs(paths);
    for (int64_t a = 0; a < paths; ++a) ptrs[a] = const_ptr<T>(ys[a]);
    T* o = mut_ptr<T>(out);
    at::parallel_for(0, (n + kRange - 1) / kRange, 1, [&](int64_t first, int64_t last) {
      for (int64_t r = first; r < last; ++r) {
        cpu::masked_path_sum_forward_range<T>(ptrs.data(), w.data(), paths, o, r * kRange,
                                              std::min(n, (r + 1) * kRange));
      }
    });
  });
  return out;
}

std::tuple<TensorList, at::Tensor> masked_path_sum_backward_cpu(const at::Tensor& grad_out,
                                                                const TensorList& ys,
                                                                const at::Tensor& weights,
                                                                const std::vector<int64_t>& active,
                                                                bool need_grad_weights) {
  TORCH_CHECK(!active.empty(), "masked_path_sum_backward_cpu: active is empty");
  TORCH_CHECK(!need_grad_weights || ys.size() == active.size(), "masked_path_sum_backward_cpu: ys has ",
              ys.size(), " tensors but active has ", active.size(), " indices");
  check_paths("masked_path_sum_backward_cpu", need_grad_weights ? ys : TensorList{}, weights, active, grad_out);
  const std::vector<float> w = gathered_weights(weights, active);
  const int64_t n = grad_out.numel(), paths = static_cast<int64_t>(active.size());
  const int64_t ranges = (n + kRange - 1) / kRange;
  TensorList grad_ys;
  for (int64_t a = 0; a < paths; ++a) grad_ys.push_back(at::empty_like(grad_out));
  std::vector<double> partial(need_grad_weights ? ranges * paths : 0, 0.0);
  dispatch_type(grad_out.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    std::vector<const T*> yp(need_grad_weights ? paths : 0);
    for (size_t a = 0; a < yp.size(); ++a) yp[a] = const_ptr<T>(ys[a]);
    std::vector<T*> gp(paths);
    for (int64_t a = 0; a < paths; ++a) gp[a] = mut_ptr<T>(grad_ys[a]);
    const T* g = const_ptr<T>(grad_out);
    at::parallel_for(0, ranges, 1, [&](int64_t first, int64_t last) {
      for (int64_t r = first; r < last; ++r) {
        cpu::masked_path_sum_backward_range<T>(g, need_grad_weights ? yp.data() : nullptr, w.data(), paths,
                                               gp.data(), need_grad_weights ? &partial[r * paths] : nullptr,
                                               r * kRange, std::min(n, (r + 1) * kRange));
      }
    });
  });
  at::Tensor grad_w = at::zeros({weights.numel()}, weights.options().dtype(at::kDouble));
  if (need_grad_weights) {
    double* gw = grad_w.data_ptr<double>();
    for (int64_t r = 0; r < ranges; ++r)  // fixed order: the same sum for any thread count
      for (int64_t a = 0; a < paths; ++a) gw[active[a]] += partial[r * paths + a];
  }
  return {grad_ys, grad_w.to(weights.scalar_type())};
}

}  // namespace stnas
