// Torch-free C entry points over the CUDA kernels, for the standalone library that CMake builds and for
// the CUDA unit test. Distinct extern "C" names keep it harmless inside the torch extension too.
#include "cuda/batch_norm_act.cuh"
#include "cuda/masked_path_sum.cuh"
#include "cuda/sgld_step.cuh"

extern "C" {

// fp32 params/grads/momenta (momenta may be null: no momentum; grads may be null: noise only).
// chunk_size: elements per argument-table chunk, a multiple of 2048 (0: the default, 65,536).
cudaError_t stnas_sgld_step_f32(float* const* params, const float* const* grads, float* const* momenta,
                                const int64_t* sizes, const uint32_t* noise_index, int count, float lr,
                                float weight_decay, float momentum, float sigma, uint64_t seed, uint64_t step,
                                int64_t chunk_size, cudaStream_t stream) {
  std::vector<stnas::cuda::TensorRef> refs;
  for (int i = 0; i < count; ++i) {
    refs.push_back({{params[i], grads ? const_cast<float*>(grads[i]) : nullptr, momenta ? momenta[i] : nullptr, nullptr},
                    sizes[i], noise_index[i]});
  }
  const stnas::cuda::SgldScalars s{lr, weight_decay, momentum, sigma, seed, step};
  return stnas::cuda::launch_sgld_step<float>(refs, grads != nullptr, momenta != nullptr, s, stream,
                                              chunk_size > 0 ? chunk_size : stnas::cuda::kSgldChunk);
}

// out = sum_a w[weight_index[a]] * ys[a] over n fp32 elements; w on the device.
cudaError_t stnas_masked_path_sum_forward_f32(const float* const* ys, const int32_t* weight_index, int paths,
                                              const float* w, float* out, int64_t n, cudaStream_t stream) {
  if (paths < 1 || paths > stnas::cuda::kMaxPaths) return cudaErrorInvalidValue;
  stnas::cuda::PathArgs<float> args{};
  args.paths = paths;
  for (int a = 0; a < paths; ++a) {
    args.y[a] = ys[a];
    args.weight_index[a] = weight_index[a];
  }
  return stnas::cuda::launch_masked_path_sum_forward<float>(args, w, out, n, 1024, stream);
}

// grads[a] = w[weight_index[a]] * gout; partial (1024 x num_weights floats, zero-filled by the caller)
// receives per-block dot products of gout with ys[a] when ys is not null. Returns the blocks used, or -1.
int stnas_masked_path_sum_backward_f32(const float* gout, const float* const* ys, float* const* grads,
                                       const int32_t* weight_index, int paths, int num_weights, const float* w,
                                       float* partial, int64_t n, cudaStream_t stream) {
  if (paths < 1 || paths > stnas::cuda::kMaxPaths) return -1;
  stnas::cuda::PathArgs<float> args{};
  args.paths = paths;
  args.num_weights = num_weights;
  for (int a = 0; a < paths; ++a) {
    if (ys) args.y[a] = ys[a];
    args.grad[a] = grads[a];
    args.weight_index[a] = weight_index[a];
  }
  cudaError_t err = cudaSuccess;
  const int blocks = stnas::cuda::launch_masked_path_sum_backward<float>(args, gout, w, partial, n, ys != nullptr,
                                                                         1024, stream, &err);
  return err == cudaSuccess ? blocks : -1;
}

// Training-mode BatchNorm + addend + activation over fp32 (N, C, H, W): channels_last when rows != 0,
// else contiguous NCHW. add, weight, bias, running_* may be null; act 0 none, 1 relu, 2 relu6.
// workspace: stnas_batch_norm_act_workspace_floats(...) floats. mean/invstd: C floats out.
int64_t stnas_batch_norm_act_workspace_floats(int64_t n, int64_t c, int64_t hw, int rows, int sm_count) {
  const stnas::cuda::BnaShape sh{n * hw, c, hw, rows != 0};
  return 3 * c + 2 * stnas::cuda::bna_grid(sh, sm_count).chunks * c;
}

cudaError_t stnas_batch_norm_act_forward_f32(const float* x, const float* add, float* y, const float* weight,
                                             const float* bias, float* running_mean, float* running_var,
                                             float* mean, float* invstd, float* workspace, int64_t n, int64_t c,
                                             int64_t hw, int rows, float momentum, float eps, int act,
                                             int sm_count, cudaStream_t stream) {
  const stnas::cuda::BnaShape sh{n * hw, c, hw, rows != 0};
  const stnas::cuda::BnaGrid g = stnas::cuda::bna_grid(sh, sm_count);
  stnas::cuda::BnaForwardArgs<float> a{x, add, y, weight, bias, running_mean, running_var, mean, invstd,
                                       workspace, workspace + c, workspace + 3 * c, workspace + 3 * c + g.chunks * c,
                                       true, momentum, eps, act};
  return stnas::cuda::launch_batch_norm_act_forward<float>(sh, g, a, stream);
}

// Its backward (training mode): grad_add may be null (no addend), y may be null when act == 0.
cudaError_t stnas_batch_norm_act_backward_f32(const float* grad_y, const float* x, const float* y,
                                              const float* weight, const float* mean, const float* invstd,
                                              float* grad_x, float* grad_add, float* grad_weight, float* grad_bias,
                                              float* workspace, int64_t n, int64_t c, int64_t hw, int rows, int act,
                                              int sm_count, cudaStream_t stream) {
  const stnas::cuda::BnaShape sh{n * hw, c, hw, rows != 0};
  const stnas::cuda::BnaGrid g = stnas::cuda::bna_grid(sh, sm_count);
  stnas::cuda::BnaBackwardArgs<float> a{grad_y, x, y, weight, mean, invstd, grad_x, grad_add, grad_weight, grad_bias,
                                        workspace, workspace + 3 * c, workspace + 3 * c + g.chunks * c, true, act};
  return stnas::cuda::launch_batch_norm_act_backward<float>(sh, g, a, stream);
}

}  // extern "C"
