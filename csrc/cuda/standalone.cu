// Torch-free C entry points over the CUDA kernels, for the standalone library that CMake builds and for
// the CUDA unit test. Distinct extern "C" names keep it harmless inside the torch extension too.
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

}  // extern "C"
