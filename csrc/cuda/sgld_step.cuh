// Torch-free CUDA SGLD step over a tensor list (multi_tensor_apply.cuh).
//   d = g + wd*p ; v = mu*v + d (with momentum) ; p = p - lr*v + sigma*xi
// Byte floor per element: read p, g, v + write p, v (4 + sizeof(G) + 4 + 4 + 4 bytes with momentum).
// Each thread owns groups of 4 consecutive elements: one Philox call gives exactly their 4 normals, and
// fp32 p and v move as one 16-byte access each.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda/multi_tensor_apply.cuh"
#include "stnas/philox.h"

namespace stnas::cuda {

struct SgldScalars {
  float lr, weight_decay, momentum, sigma;
  uint64_t seed, step;
};

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }

template <class G>
struct alignas(4 * sizeof(G)) Vec4 {
  G v[4];
};

// Depth 3: params, grads (unused when !kGrad), momenta (unused when !kMomentum).
template <class G, bool kGrad, bool kMomentum, bool kNoise>
struct SgldFunctor {
  __device__ __forceinline__ void operator()(int64_t begin, int64_t end, int t, TensorListMeta<3>& meta,
                                             SgldScalars s) {
    float* __restrict__ p = static_cast<float*>(meta.addresses[0][t]);
    const G* __restrict__ g = static_cast<const G*>(meta.addresses[1][t]);
    float* __restrict__ v = static_cast<float*>(meta.addresses[2][t]);
    const uint32_t index = meta.noise_index[t];
    const bool aligned = (reinterpret_cast<uintptr_t>(p) % 16 == 0) &&
                         (!kMomentum || reinterpret_cast<uintptr_t>(v) % 16 == 0) &&
                         (!kGrad || reinterpret_cast<uintptr_t>(g) % (4 * sizeof(G)) == 0);
    // begin is a multiple of 4 (chunk and unit sizes are), so every group starts at a multiple of 4 of the tensor.
    for (int64_t j = begin + 4 * static_cast<int64_t>(threadIdx.x); j < end; j += 4 * static_cast<int64_t>(blockDim.x)) {
      float noise[4] = {0.f, 0.f, 0.f, 0.f};
      if (kNoise) philox_normal4(s.seed, s.step, index, static_cast<uint64_t>(j / 4), noise);
      float pv[4], gv[4] = {0.f, 0.f, 0.f, 0.f}, vv[4] = {0.f, 0.f, 0.f, 0.f};
      const bool full = aligned && j + 4 <= end;
      if (full) {
        const float4 p4 = *reinterpret_cast<const float4*>(p + j);
        pv[0] = p4.x; pv[1] = p4.y; pv[2] = p4.z; pv[3] = p4.w;
        if (kGrad) {
          const Vec4<G> g4 = *reinterpret_cast<const Vec4<G>*>(g + j);
#pragma unroll
          for (int k = 0; k < 4; ++k) gv[k] = to_f32(g4.v[k]);
        }
        if (kMomentum) {
          const float4 v4 = *reinterpret_cast<const float4*>(v + j);
          vv[0] = v4.x; vv[1] = v4.y; vv[2] = v4.z; vv[3] = v4.w;
        }
      } else {
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          if (j + k < end) {
            pv[k] = p[j + k];
            if (kGrad) gv[k] = to_f32(g[j + k]);
            if (kMomentum) vv[k] = v[j + k];
          }
        }
      }
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (kGrad) {
          float d = gv[k] + s.weight_decay * pv[k];
          if (kMomentum) {
            d = s.momentum * vv[k] + d;
            vv[k] = d;
          }
          pv[k] = pv[k] - s.lr * d;
        }
        if (kNoise) pv[k] = pv[k] + s.sigma * noise[k];
      }
      if (full) {
        *reinterpret_cast<float4*>(p + j) = make_float4(pv[0], pv[1], pv[2], pv[3]);
        if (kMomentum) *reinterpret_cast<float4*>(v + j) = make_float4(vv[0], vv[1], vv[2], vv[3]);
      } else {
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          if (j + k < end) {
            p[j + k] = pv[k];
            if (kMomentum) v[j + k] = vv[k];
          }
        }
      }
    }
  }
};

constexpr int64_t kSgldChunk = 65536;  // elements per chunk of the argument table
constexpr int kSgldThreads = 512;
constexpr int64_t kSgldUnit = 4 * kSgldThreads;  // elements per block and unit of work: one group of 4 per thread

// chunk_size (a multiple of kSgldUnit) only sets how much of the list one argument table holds; the unit
// test passes a small one so that a short list still spans several launches.
template <class G>
cudaError_t launch_sgld_step(const std::vector<TensorRef>& tensors, bool has_grad, bool has_momentum,
                             const SgldScalars& s, cudaStream_t stream, int64_t chunk_size = kSgldChunk) {
  const bool noise = s.sigma != 0.0f;
#define STNAS_SGLD_LAUNCH(GRAD, MOM, NOISE) \
  return multi_tensor_apply<3>(tensors, chunk_size, kSgldUnit, kSgldThreads, stream, SgldFunctor<G, GRAD, MOM, NOISE>(), s)
  if (!has_grad) {
    if (!noise) return cudaSuccess;
    STNAS_SGLD_LAUNCH(false, false, true);
  }
  if (has_momentum) {
    if (noise) STNAS_SGLD_LAUNCH(true, true, true);
    STNAS_SGLD_LAUNCH(true, true, false);
  }
  if (noise) STNAS_SGLD_LAUNCH(true, false, true);
  STNAS_SGLD_LAUNCH(true, false, false);
#undef STNAS_SGLD_LAUNCH
}

}  // namespace stnas::cuda
