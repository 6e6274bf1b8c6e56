// ATen glue of the CUDA masked path sum: checks, argument packing, and the fixed-order sum of the
// per-block dot-product partials (so the weights' gradient does not depend on scheduling).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/masked_path_sum.cuh"
#include "stnas_ops.h"

namespace stnas {
namespace {

void check_inputs(const char* fn, const TensorList& ys, const at::Tensor& weights,
                  const std::vector<int64_t>& active, const at::Tensor& like) {
  TORCH_CHECK(!active.empty() && active.size() <= static_cast<size_t>(cuda::kMaxPaths), fn, ": between 1 and ",
              cuda::kMaxPaths, " active paths are supported, got ", active.size());
  TORCH_CHECK(like.is_cuda() && like.is_non_overlapping_and_dense(), fn, ": tensors must be dense CUDA tensors");
  const at::ScalarType t = like.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kBFloat16 || t == at::kHalf, fn,
              ": paths must be float32, bfloat16 or float16, got ", t);
  TORCH_CHECK(weights.device() == like.device() && weights.dim() == 1 && weights.is_floating_point(), fn,
              ": weights must be a 1-D floating-point tensor on ", like.device());
  for (size_t a = 0; a < active.size(); ++a) {
    TORCH_CHECK(active[a] >= 0 && active[a] < weights.numel(), fn, ": active[", a, "] = ", active[a],
                " is out of range for ", weights.numel(), " weights");
  }
  for (size_t a = 0; a < ys.size(); ++a) {
    TORCH_CHECK(ys[a].device() == like.device() && ys[a].scalar_type() == t && ys[a].sizes() == like.sizes() &&
                    ys[a].strides() == like.strides(),
                fn, ": ys[", a, "] must be a ", t, " tensor on ", like.device(), " with the others' shape and strides");
  }
}

template <class F>
void dispatch_type(at::ScalarType t, F&& f) {
  switch (t) {
    case at::kBFloat16:
      f(__nv_bfloat16{});
      break;
    case at::kHalf:
      f(__half{});
      break;
    default:
      f(float{});
  }
}

int max_blocks_for(const at::Tensor& t) {
  return 8 * at::cuda::getDeviceProperties(t.device().index())->multiProcessorCount;
}

}  // namespace

at::Tensor masked_path_sum_forward_cuda(const TensorList& ys, const at::Tensor& weights,
                                        const std::vector<int64_t>& active) {
  TORCH_CHECK(!ys.empty() && ys.size() == active.size(), "masked_path_sum_forward_cuda: ys has ", ys.size(),
              " tensors but active has ", active.size(), " indices");
  check_inputs("masked_path_sum_forward_cuda", ys, weights, active, ys[0]);
  const c10::cuda::CUDAGuard guard(ys[0].device());
  const at::Tensor w = weights.to(at::kFloat).contiguous();  // on the device: no host sync
  at::Tensor out = at::empty_like(ys[0]);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  dispatch_type(out.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    cuda::PathArgs<T> args{};
    args.paths = static_cast<int32_t>(ys.size());
    for (size_t a = 0; a < ys.size(); ++a) {
      args.y[a] = static_cast<const T*>(ys[a].const_data_ptr());
      args.weight_index[a] = static_cast<int32_t>(active[a]);
    }
    const cudaError_t err = cuda::launch_masked_path_sum_forward<T>(
        args, w.const_data_ptr<float>(), static_cast<T*>(out.data_ptr()), out.numel(), max_blocks_for(out), stream);
    TORCH_CHECK(err == cudaSuccess, "masked_path_sum_forward_cuda: kernel launch failed: ", cudaGetErrorString(err));
  });
  return out;
}

std::tuple<TensorList, at::Tensor> masked_path_sum_backward_cuda(const at::Tensor& grad_out,
                                                                 const TensorList& ys,
                                                                 const at::Tensor& weights,
                                                                 const std::vector<int64_t>& active,
                                                                 bool need_grad_weights) {
  TORCH_CHECK(!need_grad_weights || ys.size() == active.size(), "masked_path_sum_backward_cuda: ys has ",
              ys.size(), " tensors but active has ", active.size(), " indices");
  check_inputs("masked_path_sum_backward_cuda", need_grad_weights ? ys : TensorList{}, weights, active, grad_out);
  const c10::cuda::CUDAGuard guard(grad_out.device());
  const at::Tensor w = weights.to(at::kFloat).contiguous();
  const int paths = static_cast<int>(active.size());
  TensorList grad_ys;
  for (int a = 0; a < paths; ++a) grad_ys.push_back(at::empty_like(grad_out));
  const int max_blocks = max_blocks_for(grad_out);
  at::Tensor partial = need_grad_weights
                           ? at::zeros({max_blocks, weights.numel()}, grad_out.options().dtype(at::kFloat))
                           : at::empty({0}, grad_out.options().dtype(at::kFloat));
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  int blocks = 0;
  dispatch_type(grad_out.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    cuda::PathArgs<T> args{};
    args.paths = paths;
    args.num_weights = static_cast<int32_t>(weights.numel());
    for (int a = 0; a < paths; ++a) {
      if (need_grad_weights) args.y[a] = static_cast<const T*>(ys[a].const_data_ptr());
      args.grad[a] = static_cast<T*>(grad_ys[a].data_ptr());
      args.weight_index[a] = static_cast<int32_t>(active[a]);
    }
    cudaError_t err = cudaSuccess;
    if (grad_out.numel() > 0) {
      blocks = cuda::launch_masked_path_sum_backward<T>(args, static_cast<const T*>(grad_out.const_data_ptr()),
                                                        w.const_data_ptr<float>(), partial.data_ptr<float>(),
                                                        grad_out.numel(), need_grad_weights, max_blocks, stream, &err);
    }
    TORCH_CHECK(err == cudaSuccess, "masked_path_sum_backward_cuda: kernel launch failed: ", cudaGetErrorString(err));
  });
  if (!need_grad_weights || blocks == 0) return {grad_ys, at::zeros_like(weights)};
  return {grad_ys, partial.narrow(0, 0, blocks).sum(0).to(weights.scalar_type())};
}

}  // namespace stnas
