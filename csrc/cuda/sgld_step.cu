// ATen glue of the CUDA SGLD step: checks, then one multi-tensor launch (per argument-table fill) on the
// current stream.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/sgld_step.cuh"
#include "stnas_ops.h"

namespace stnas {

void sgld_step_cuda(const TensorList& params, const TensorList& grads, const TensorList& momenta,
                    double lr, double weight_decay, double momentum, double sigma, int64_t seed,
                    int64_t step, const std::vector<int64_t>& indices) {
  const size_t n = params.size();
  if (n == 0) return;
  TORCH_CHECK(grads.empty() || grads.size() == n, "sgld_step_cuda: grads has ", grads.size(),
              " tensors but params has ", n, " (give one grad per param, or none for noise only)");
  TORCH_CHECK(momenta.empty() || momenta.size() == n, "sgld_step_cuda: momenta has ", momenta.size(),
              " tensors but params has ", n);
  TORCH_CHECK(indices.size() == n, "sgld_step_cuda: indices has ", indices.size(), " entries but params has ", n);
  const at::Device device = params[0].device();
  TORCH_CHECK(device.is_cuda(), "sgld_step_cuda: params[0] is on ", device, ", expected a CUDA device");
  const at::ScalarType gtype = grads.empty() ? at::kFloat : grads[0].scalar_type();
  TORCH_CHECK(gtype == at::kFloat || gtype == at::kBFloat16 || gtype == at::kHalf,
              "sgld_step_cuda: grads must be float32, bfloat16 or float16, got ", gtype);
  std::vector<cuda::TensorRef> refs;
  refs.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = params[i];
    TORCH_CHECK(p.device() == device, "sgld_step_cuda: params[", i, "] is on ", p.device(), " but params[0] on ", device);
    TORCH_CHECK(p.scalar_type() == at::kFloat, "sgld_step_cuda: params[", i, "] must be float32, got ", p.scalar_type());
    TORCH_CHECK(p.is_non_overlapping_and_dense(), "sgld_step_cuda: params[", i, "] must be dense");
    cuda::TensorRef ref{{p.data_ptr(), nullptr, nullptr, nullptr}, p.numel(), static_cast<uint32_t>(indices[i])};
    if (!grads.empty()) {
      const at::Tensor& g = grads[i];
      TORCH_CHECK(g.device() == device && g.scalar_type() == gtype, "sgld_step_cuda: grads[", i,
                  "] must be a ", gtype, " tensor on ", device, ", got ", g.scalar_type(), " on ", g.device());
      TORCH_CHECK(g.sizes() == p.sizes() && g.strides() == p.strides(), "sgld_step_cuda: grads[", i,
                  "] must have params[", i, "]'s shape and strides");
      ref.pointers[1] = const_cast<void*>(g.const_data_ptr());
    }
    if (!momenta.empty()) {
      const at::Tensor& v = momenta[i];
      TORCH_CHECK(v.device() == device && v.scalar_type() == at::kFloat && v.sizes() == p.sizes() &&
                      v.strides() == p.strides(),
                  "sgld_step_cuda: momenta[", i, "] must be a float32 tensor on ", device, " with params[", i, "]'s layout");
      ref.pointers[2] = v.data_ptr();
    }
    refs.push_back(ref);
  }
  const c10::cuda::CUDAGuard guard(device);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const cuda::SgldScalars s{static_cast<float>(lr), static_cast<float>(weight_decay), static_cast<float>(momentum),
                            static_cast<float>(sigma), static_cast<uint64_t>(seed), static_cast<uint64_t>(step)};
  cudaError_t err;
  switch (gtype) {
    case at::kBFloat16:
      err = cuda::launch_sgld_step<__nv_bfloat16>(refs, !grads.empty(), !momenta.empty(), s, stream);
      break;
    case at::kHalf:
      err = cuda::launch_sgld_step<__half>(refs, !grads.empty(), !momenta.empty(), s, stream);
      break;
    default:
      err = cuda::launch_sgld_step<float>(refs, !grads.empty(), !momenta.empty(), s, stream);
  }
  TORCH_CHECK(err == cudaSuccess, "sgld_step_cuda: kernel launch failed: ", cudaGetErrorString(err));
}

}  // namespace stnas
