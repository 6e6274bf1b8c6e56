// Torch-free CUDA kernels of the masked path sum over the A <= kMaxPaths active paths of a node.
//   forward:  out = sum_a w[idx[a]] * y_a                     (fp32 accumulation)
//   backward: gy_a = w[idx[a]] * gout ; partial[block][idx[a]] = sum over the block of gout * y_a
// Byte floor: forward (A + 1) * N * sizeof(T); backward (1 + A [+ A if the dots are needed]) * N * sizeof(T).
// Pointers and active indices travel in the kernel arguments and the weights are read on the device,
// so nothing waits for the host. 16-byte accesses when every pointer is aligned.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace stnas::cuda {

constexpr int kMaxPaths = 16;

template <class T>
struct PathArgs {
  const T* y[kMaxPaths];
  T* grad[kMaxPaths];
  int32_t weight_index[kMaxPaths];
  int32_t paths;
  int32_t num_weights;  // K: the row length of the backward's partial sums
};

__device__ __forceinline__ float mps_to_f32(float x) { return x; }
__device__ __forceinline__ float mps_to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float mps_to_f32(__half x) { return __half2float(x); }
template <class T>
__device__ __forceinline__ T mps_from_f32(float x);
template <>
__device__ __forceinline__ float mps_from_f32<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 mps_from_f32<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
template <>
__device__ __forceinline__ __half mps_from_f32<__half>(float x) { return __float2half(x); }

template <class T>
struct alignas(16) Pack {
  static constexpr int kN = 16 / sizeof(T);
  T v[kN];
};

template <class T, bool kVector>
__global__ void masked_path_sum_forward_kernel(PathArgs<T> args, const float* __restrict__ w, T* __restrict__ out,
                                               int64_t n) {
  constexpr int kN = kVector ? Pack<T>::kN : 1;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x * kN;
  for (int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kN; i < n; i += stride) {
    float acc[kN];
#pragma unroll
    for (int k = 0; k < kN; ++k) acc[k] = 0.f;
    for (int a = 0; a < args.paths; ++a) {
      const float wa = w[args.weight_index[a]];
      if (kVector && i + kN <= n) {
        const Pack<T> y = *reinterpret_cast<const Pack<T>*>(args.y[a] + i);
#pragma unroll
        for (int k = 0; k < kN; ++k) acc[k] += wa * mps_to_f32(y.v[k]);
      } else {
#pragma unroll
        for (int k = 0; k < kN; ++k)
          if (i + k < n) acc[k] += wa * mps_to_f32(args.y[a][i + k]);
      }
    }
    if (kVector && i + kN <= n) {
      Pack<T> o;
#pragma unroll
      for (int k = 0; k < kN; ++k) o.v[k] = mps_from_f32<T>(acc[k]);
      *reinterpret_cast<Pack<T>*>(out + i) = o;
    } else {
#pragma unroll
      for (int k = 0; k < kN; ++k)
        if (i + k < n) out[i + k] = mps_from_f32<T>(acc[k]);
    }
  }
}

constexpr int kMpsThreads = 256;

// One pass over gout: every gradient written, and (kDot) each path's dot product reduced per block into
// partial[blockIdx.x * K + idx[a]] (K = num_weights; the caller zero-fills it, so inactive columns stay
// zero) and the caller sums the rows in a fixed order: no index tensor, no host sync.
template <class T, bool kVector, bool kDot>
__global__ void __launch_bounds__(kMpsThreads) masked_path_sum_backward_kernel(
    PathArgs<T> args, const T* __restrict__ gout, const float* __restrict__ w, float* __restrict__ partial,
    int64_t n) {
  constexpr int kN = kVector ? Pack<T>::kN : 1;
  float dot[kMaxPaths];
#pragma unroll
  for (int a = 0; a < kMaxPaths; ++a) dot[a] = 0.f;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x * kN;
  for (int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kN; i < n; i += stride) {
    const bool full = kVector && i + kN <= n;
    float g[kN];
    if (full) {
      const Pack<T> gp = *reinterpret_cast<const Pack<T>*>(gout + i);
#pragma unroll
      for (int k = 0; k < kN; ++k) g[k] = mps_to_f32(gp.v[k]);
    } else {
#pragma unroll
      for (int k = 0; k < kN; ++k) g[k] = i + k < n ? mps_to_f32(gout[i + k]) : 0.f;
    }
#pragma unroll
    for (int a = 0; a < kMaxPaths; ++a) {  // unrolled so that dot[] stays in registers
      if (a < args.paths) {
        const float wa = w[args.weight_index[a]];
        if (full) {
          Pack<T> o;
#pragma unroll
          for (int k = 0; k < kN; ++k) o.v[k] = mps_from_f32<T>(wa * g[k]);
          *reinterpret_cast<Pack<T>*>(args.grad[a] + i) = o;
          if (kDot) {
            const Pack<T> y = *reinterpret_cast<const Pack<T>*>(args.y[a] + i);
#pragma unroll
            for (int k = 0; k < kN; ++k) dot[a] += g[k] * mps_to_f32(y.v[k]);
          }
        } else {
#pragma unroll
          for (int k = 0; k < kN; ++k) {
            if (i + k < n) {
              args.grad[a][i + k] = mps_from_f32<T>(wa * g[k]);
              if (kDot) dot[a] += g[k] * mps_to_f32(args.y[a][i + k]);
            }
          }
        }
      }
    }
  }
  if (!kDot) return;
  __shared__ float warp_sums[kMaxPaths][kMpsThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int a = 0; a < kMaxPaths; ++a) {
    if (a < args.paths) {
      float x = dot[a];
#pragma unroll
      for (int off = 16; off > 0; off /= 2) x += __shfl_down_sync(0xffffffffu, x, off);
      if (lane == 0) warp_sums[a][warp] = x;
    }
  }
  __syncthreads();
  if (threadIdx.x < args.paths) {
    float total = 0.f;
    for (int k = 0; k < kMpsThreads / 32; ++k) total += warp_sums[threadIdx.x][k];
    partial[static_cast<int64_t>(blockIdx.x) * args.num_weights + args.weight_index[threadIdx.x]] = total;
  }
}

template <class T>
bool paths_aligned(const PathArgs<T>& args, const void* extra) {
  bool ok = reinterpret_cast<uintptr_t>(extra) % 16 == 0;
  for (int a = 0; a < args.paths; ++a) {
    ok = ok && reinterpret_cast<uintptr_t>(args.y[a]) % 16 == 0 && reinterpret_cast<uintptr_t>(args.grad[a]) % 16 == 0;
  }
  return ok;
}

inline int mps_blocks(int64_t n, int elems_per_thread, int max_blocks) {
  const int64_t want = (n + static_cast<int64_t>(kMpsThreads) * elems_per_thread - 1) /
                       (static_cast<int64_t>(kMpsThreads) * elems_per_thread);
  return static_cast<int>(want < 1 ? 1 : (want > max_blocks ? max_blocks : want));
}

// out must not alias any y. max_blocks: e.g. 8 * the number of SMs (a grid-stride loop covers the rest).
template <class T>
cudaError_t launch_masked_path_sum_forward(const PathArgs<T>& args, const float* w, T* out, int64_t n,
                                           int max_blocks, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  if (paths_aligned(args, out)) {
    masked_path_sum_forward_kernel<T, true>
        <<<mps_blocks(n, Pack<T>::kN, max_blocks), kMpsThreads, 0, stream>>>(args, w, out, n);
  } else {
    masked_path_sum_forward_kernel<T, false><<<mps_blocks(n, 1, max_blocks), kMpsThreads, 0, stream>>>(args, w, out, n);
  }
  return cudaGetLastError();
}

// Returns the grid size used (the rows of `partial` written; it must hold max_blocks * num_weights).
template <class T>
int launch_masked_path_sum_backward(const PathArgs<T>& args, const T* gout, const float* w, float* partial,
                                    int64_t n, bool need_dot, int max_blocks, cudaStream_t stream,
                                    cudaError_t* err) {
  const bool vec = paths_aligned(args, gout);
  const int blocks = mps_blocks(n, vec ? Pack<T>::kN : 1, max_blocks);
  if (vec && need_dot) {
    masked_path_sum_backward_kernel<T, true, true><<<blocks, kMpsThreads, 0, stream>>>(args, gout, w, partial, n);
  } else if (vec) {
    masked_path_sum_backward_kernel<T, true, false><<<blocks, kMpsThreads, 0, stream>>>(args, gout, w, partial, n);
  } else if (need_dot) {
    masked_path_sum_backward_kernel<T, false, true><<<blocks, kMpsThreads, 0, stream>>>(args, gout, w, partial, n);
  } else {
    masked_path_sum_backward_kernel<T, false, false><<<blocks, kMpsThreads, 0, stream>>>(args, gout, w, partial, n);
  }
  *err = cudaGetLastError();
  return blocks;
}

}  // namespace stnas::cuda
