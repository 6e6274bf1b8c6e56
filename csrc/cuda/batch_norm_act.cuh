// Torch-free CUDA kernels of the fused BatchNorm + addend + activation (contract:
// stnas/ops/batch_norm_act.py), over raw pointers and a stream. Four passes as in every backend:
//   stats:       per (row chunk, channel) shifted sums  s1 += x - shift[c], s2 += (x - shift[c])^2
//   finish:      one thread per channel adds the chunks in a fixed order (double), computes mean, invstd,
//                the folded scale/shift, and updates the running statistics as nn.BatchNorm2d does --
//                on the device, so nothing waits for the host
//   apply:       y = act(x * scale[c] + shift[c] (+ addend))
//   backward:    the same shape of passes for sum(dz), sum(dz * (x - mean)) and dx = k1 dz + k2 (x - mean) + k3
// The input is a matrix of M = N*H*W rows by C channels in one of two layouts: rows (channels_last:
// element (m, c) at m*C + c) or planes (contiguous NCHW: at (n*C + c)*S + s, m = n*S + s). A block owns
// a chunk of rows and, in the rows layout, a tile of 32 channels (a warp reads 32 consecutive channels of
// a row), in the planes layout one channel (a warp reads 32 consecutive pixels of a plane). The chunking
// depends on the shape and the SM count only: the statistics of a run are reproducible.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace stnas::cuda {

enum BnaAct : int { kBnaActNone = 0, kBnaActRelu = 1, kBnaActRelu6 = 2 };

constexpr int kBnaTile = 32;   // threadIdx.x: channels (rows layout) or pixels (planes layout)
constexpr int kBnaLanes = 8;   // threadIdx.y
constexpr int kBnaThreads = kBnaTile * kBnaLanes;

__device__ __forceinline__ float bna_to_f32(float x) { return x; }
__device__ __forceinline__ float bna_to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float bna_to_f32(__half x) { return __half2float(x); }
template <class T>
__device__ __forceinline__ T bna_from_f32(float x);
template <>
__device__ __forceinline__ float bna_from_f32<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 bna_from_f32<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
template <>
__device__ __forceinline__ __half bna_from_f32<__half>(float x) { return __float2half(x); }

template <int ACT>
__device__ __forceinline__ float bna_activate(float z) {
  if (ACT == kBnaActRelu) return z > 0.f ? z : 0.f;
  if (ACT == kBnaActRelu6) return z > 0.f ? (z < 6.f ? z : 6.f) : 0.f;
  return z;
}

// The activation's gradient mask from its output, as PyTorch's backward takes it (relu: y > 0;
// relu6 = hardtanh(0, 6): 0 < y < 6).
template <int ACT>
__device__ __forceinline__ float bna_act_mask(float y) {
  if (ACT == kBnaActRelu) return y > 0.f ? 1.f : 0.f;
  if (ACT == kBnaActRelu6) return (y > 0.f && y < 6.f) ? 1.f : 0.f;
  return 1.f;
}

struct BnaShape {
  int64_t m;  // N*H*W
  int64_t c;  // channels
  int64_t s;  // H*W
  bool rows;  // channels_last (else contiguous NCHW)
};

// The grid every pass of one call uses: chunks of rows (blockIdx.x) by channel tiles (blockIdx.y).
struct BnaGrid {
  int64_t chunks;
  int64_t rows_per_chunk;
  int64_t tiles;
};

inline BnaGrid bna_grid(const BnaShape& sh, int sm_count) {
  BnaGrid g;
  g.tiles = sh.rows ? (sh.c + kBnaTile - 1) / kBnaTile : sh.c;
  // About 8 blocks per SM in all, each chunk at least 64 rows (the reductions' partials stay small).
  const int64_t want = (8 * static_cast<int64_t>(sm_count) + g.tiles - 1) / g.tiles;
  const int64_t most = (sh.m + 63) / 64;
  g.chunks = want < 1 ? 1 : (want > most ? most : want);
  if (g.chunks < 1) g.chunks = 1;
  g.rows_per_chunk = (sh.m + g.chunks - 1) / g.chunks;
  g.chunks = (sh.m + g.rows_per_chunk - 1) / g.rows_per_chunk;
  return g;
}

template <bool kRows>
__device__ __forceinline__ int64_t bna_channel() {
  return kRows ? static_cast<int64_t>(blockIdx.y) * kBnaTile + threadIdx.x : static_cast<int64_t>(blockIdx.y);
}

// f(offset) for every element of channel c that this thread owns in this block's chunk of rows.
template <bool kRows, class F>
__device__ __forceinline__ void bna_for_each(const BnaShape& sh, int64_t rows_per_chunk, int64_t c, F&& f) {
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * rows_per_chunk;
  const int64_t m1 = m0 + rows_per_chunk < sh.m ? m0 + rows_per_chunk : sh.m;
  if (kRows) {
    for (int64_t m = m0 + threadIdx.y; m < m1; m += kBnaLanes) f(m * sh.c + c);
  } else {
    int64_t m = m0 + threadIdx.y * kBnaTile + threadIdx.x;
    if (m >= m1) return;
    // Walk (n, s) by a constant step of kBnaThreads rows: one division per thread, not per element.
    int64_t n = m / sh.s, s = m - n * sh.s;
    const int64_t q = kBnaThreads / sh.s, r = kBnaThreads % sh.s;
    for (; m < m1; m += kBnaThreads) {
      f((n * sh.c + c) * sh.s + s);
      s += r;
      n += q;
      if (s >= sh.s) {
        s -= sh.s;
        ++n;
      }
    }
  }
}

// Sums a and b over the block's threads that share channel c, in a fixed order, into
// pa/pb[blockIdx.x * C + c].
template <bool kRows>
__device__ __forceinline__ void bna_block_partials(const BnaShape& sh, float a, float b, float* __restrict__ pa,
                                                   float* __restrict__ pb) {
  __shared__ float sa[kBnaLanes][kBnaTile + 1];
  __shared__ float sb[kBnaLanes][kBnaTile + 1];
  sa[threadIdx.y][threadIdx.x] = a;
  sb[threadIdx.y][threadIdx.x] = b;
  __syncthreads();
  if (threadIdx.y != 0) return;
  float ta = 0.f, tb = 0.f;
#pragma unroll
  for (int l = 0; l < kBnaLanes; ++l) {
    ta += sa[l][threadIdx.x];
    tb += sb[l][threadIdx.x];
  }
  if (kRows) {
    const int64_t c = bna_channel<true>();
    if (c < sh.c) {
      pa[static_cast<int64_t>(blockIdx.x) * sh.c + c] = ta;
      pb[static_cast<int64_t>(blockIdx.x) * sh.c + c] = tb;
    }
  } else {
#pragma unroll
    for (int off = kBnaTile / 2; off > 0; off /= 2) {
      ta += __shfl_down_sync(0xffffffffu, ta, off);
      tb += __shfl_down_sync(0xffffffffu, tb, off);
    }
    if (threadIdx.x == 0) {
      pa[static_cast<int64_t>(blockIdx.x) * sh.c + blockIdx.y] = ta;
      pb[static_cast<int64_t>(blockIdx.x) * sh.c + blockIdx.y] = tb;
    }
  }
}

// The first element of each channel: the statistics sum x - shift, so |mean| >> std loses nothing.
template <class T>
__device__ __forceinline__ float bna_shift(const T* x, const BnaShape& sh, int64_t c) {
  return bna_to_f32(x[sh.rows ? c : c * sh.s]);
}

template <class T, bool kRows>
__global__ void __launch_bounds__(kBnaThreads)
    batch_norm_act_stats_kernel(const T* __restrict__ x, BnaShape sh, int64_t rows_per_chunk, float* __restrict__ pa,
                                float* __restrict__ pb) {
  const int64_t c = bna_channel<kRows>();
  float a = 0.f, b = 0.f;
  if (c < sh.c) {
    const float shift = bna_shift(x, sh, c);
    bna_for_each<kRows>(sh, rows_per_chunk, c, [&](int64_t o) {
      const float d = bna_to_f32(x[o]) - shift;
      a += d;
      b += d * d;
    });
  }
  bna_block_partials<kRows>(sh, a, b, pa, pb);
}

// One thread per channel: mean, invstd, the folded scale/shift, and the running statistics' update
// (running = (1 - momentum) * running + momentum * stat, unbiased variance). In eval mode the running
// statistics are the ones used. weight/bias/running may be null.
template <class T>
__global__ void batch_norm_act_finish_stats_kernel(const T* __restrict__ x, BnaShape sh, int64_t chunks,
                                                   const float* __restrict__ pa, const float* __restrict__ pb,
                                                   const float* __restrict__ weight, const float* __restrict__ bias,
                                                   float* running_mean, float* running_var, bool training,
                                                   float momentum, float eps, float* __restrict__ mean_out,
                                                   float* __restrict__ invstd_out, float* __restrict__ scale_out,
                                                   float* __restrict__ shift_out) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= sh.c) return;
  double mean, var;
  if (training) {
    double s1 = 0, s2 = 0;
    for (int64_t k = 0; k < chunks; ++k) {
      s1 += pa[k * sh.c + c];
      s2 += pb[k * sh.c + c];
    }
    const double d = s1 / static_cast<double>(sh.m);
    var = s2 / static_cast<double>(sh.m) - d * d;
    var = var > 0.0 ? var : 0.0;
    mean = static_cast<double>(bna_shift(x, sh, c)) + d;
  } else {
    mean = running_mean[c];
    var = running_var[c];
  }
  const float meanf = static_cast<float>(mean);
  const double is = 1.0 / sqrt(var + static_cast<double>(eps));
  const float scale = static_cast<float>(is * (weight ? weight[c] : 1.0f));
  mean_out[c] = meanf;
  invstd_out[c] = static_cast<float>(is);
  scale_out[c] = scale;
  shift_out[c] = static_cast<float>((bias ? bias[c] : 0.0f) - static_cast<double>(meanf) * scale);
  if (training && running_mean != nullptr) {
    const double unbias = static_cast<double>(sh.m) / static_cast<double>(sh.m - 1);
    running_mean[c] = static_cast<float>((1.0 - momentum) * running_mean[c] + momentum * static_cast<double>(meanf));
    running_var[c] = static_cast<float>((1.0 - momentum) * running_var[c] + momentum * var * unbias);
  }
}

template <class T, bool kRows, int ACT, bool kAdd>
__global__ void __launch_bounds__(kBnaThreads)
    batch_norm_act_apply_kernel(const T* __restrict__ x, const T* __restrict__ add, const float* __restrict__ scale,
                                const float* __restrict__ shift, T* __restrict__ y, BnaShape sh,
                                int64_t rows_per_chunk) {
  const int64_t c = bna_channel<kRows>();
  if (c >= sh.c) return;
  const float a = scale[c], b = shift[c];
  bna_for_each<kRows>(sh, rows_per_chunk, c, [&](int64_t o) {
    float z = bna_to_f32(x[o]) * a + b;
    if (kAdd) z += bna_to_f32(add[o]);
    y[o] = bna_from_f32<T>(bna_activate<ACT>(z));
  });
}

// y is read only when ACT != none (the gradient mask); it may be null otherwise.
template <class T, bool kRows, int ACT>
__global__ void __launch_bounds__(kBnaThreads)
    batch_norm_act_backward_reduce_kernel(const T* __restrict__ g, const T* __restrict__ y, const T* __restrict__ x,
                                          const float* __restrict__ mean, BnaShape sh, int64_t rows_per_chunk,
                                          float* __restrict__ pa, float* __restrict__ pb) {
  const int64_t c = bna_channel<kRows>();
  float a = 0.f, b = 0.f;
  if (c < sh.c) {
    const float mu = mean[c];
    bna_for_each<kRows>(sh, rows_per_chunk, c, [&](int64_t o) {
      float dz = bna_to_f32(g[o]);
      if (ACT != kBnaActNone) dz *= bna_act_mask<ACT>(bna_to_f32(y[o]));
      a += dz;
      b += dz * (bna_to_f32(x[o]) - mu);
    });
  }
  bna_block_partials<kRows>(sh, a, b, pa, pb);
}

// One thread per channel: grad_weight = sum(dz (x - mean)) invstd, grad_bias = sum(dz), and the
// coefficients of dx = k1 dz + k2 (x - mean) + k3 (k2 = k3 = 0 in eval mode). A template (on the input
// type, unused) so that the header can be included by several translation units of one library.
template <class T>
__global__ void batch_norm_act_finish_backward_kernel(BnaShape sh, int64_t chunks, const float* __restrict__ pa,
                                                      const float* __restrict__ pb, const float* __restrict__ weight,
                                                      const float* __restrict__ invstd, bool training,
                                                      float* __restrict__ grad_weight, float* __restrict__ grad_bias,
                                                      float* __restrict__ k1, float* __restrict__ k2,
                                                      float* __restrict__ k3) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= sh.c) return;
  double sdz = 0, sdzx = 0;
  for (int64_t k = 0; k < chunks; ++k) {
    sdz += pa[k * sh.c + c];
    sdzx += pb[k * sh.c + c];
  }
  const double is = invstd[c], k = is * (weight ? weight[c] : 1.0f), m = static_cast<double>(sh.m);
  grad_weight[c] = static_cast<float>(sdzx * is);
  grad_bias[c] = static_cast<float>(sdz);
  k1[c] = static_cast<float>(k);
  k2[c] = training ? static_cast<float>(-k * is * is * sdzx / m) : 0.f;
  k3[c] = training ? static_cast<float>(-k * sdz / m) : 0.f;
}

template <class T, bool kRows, int ACT, bool kAdd>
__global__ void __launch_bounds__(kBnaThreads)
    batch_norm_act_backward_apply_kernel(const T* __restrict__ g, const T* __restrict__ y, const T* __restrict__ x,
                                         const float* __restrict__ mean, const float* __restrict__ k1,
                                         const float* __restrict__ k2, const float* __restrict__ k3,
                                         T* __restrict__ dx, T* __restrict__ dadd, BnaShape sh,
                                         int64_t rows_per_chunk) {
  const int64_t c = bna_channel<kRows>();
  if (c >= sh.c) return;
  const float mu = mean[c], a = k1[c], b = k2[c], d = k3[c];
  bna_for_each<kRows>(sh, rows_per_chunk, c, [&](int64_t o) {
    float dz = bna_to_f32(g[o]);
    if (ACT != kBnaActNone) dz *= bna_act_mask<ACT>(bna_to_f32(y[o]));
    dx[o] = bna_from_f32<T>(a * dz + b * (bna_to_f32(x[o]) - mu) + d);
    if (kAdd) dadd[o] = bna_from_f32<T>(dz);
  });
}

// ---- host launchers ------------------------------------------------------------------------------

template <class T>
struct BnaForwardArgs {
  const T* x;
  const T* add;           // null: no addend
  T* y;
  const float* weight;    // null: no affine weight
  const float* bias;      // null: no affine bias
  float* running_mean;    // null: no running statistics (training only)
  float* running_var;
  float* mean;            // out, C
  float* invstd;          // out, C
  float* scale;           // workspace, C
  float* shift;           // workspace, C
  float* partial_a;       // workspace, chunks * C
  float* partial_b;       // workspace, chunks * C
  bool training;
  float momentum;
  float eps;
  int act;
};

template <class T>
struct BnaBackwardArgs {
  const T* grad_y;
  const T* x;
  const T* y;             // null without an activation
  const float* weight;    // null: no affine weight
  const float* mean;
  const float* invstd;
  T* grad_x;
  T* grad_add;            // null: no addend
  float* grad_weight;     // out, C
  float* grad_bias;       // out, C
  float* k;               // workspace, 3 * C
  float* partial_a;       // workspace, chunks * C
  float* partial_b;
  bool training;
  int act;
};

template <class F>
inline void bna_with_act(int act, F&& f) {
  switch (act) {
    case kBnaActRelu:
      f(std::integral_constant<int, kBnaActRelu>{});
      break;
    case kBnaActRelu6:
      f(std::integral_constant<int, kBnaActRelu6>{});
      break;
    default:
      f(std::integral_constant<int, kBnaActNone>{});
  }
}

template <class T, bool kRows>
cudaError_t bna_forward_layout(const BnaShape& sh, const BnaGrid& g, const BnaForwardArgs<T>& a, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(g.chunks), static_cast<unsigned>(g.tiles)), block(kBnaTile, kBnaLanes);
  const int64_t finish_blocks = (sh.c + 255) / 256;
  if (a.training) {
    batch_norm_act_stats_kernel<T, kRows><<<grid, block, 0, stream>>>(a.x, sh, g.rows_per_chunk, a.partial_a,
                                                                       a.partial_b);
  }
  batch_norm_act_finish_stats_kernel<T><<<static_cast<unsigned>(finish_blocks), 256, 0, stream>>>(
      a.x, sh, g.chunks, a.partial_a, a.partial_b, a.weight, a.bias, a.running_mean, a.running_var, a.training,
      a.momentum, a.eps, a.mean, a.invstd, a.scale, a.shift);
  bna_with_act(a.act, [&](auto act_tag) {
    constexpr int ACT = decltype(act_tag)::value;
    if (a.add != nullptr) {
      batch_norm_act_apply_kernel<T, kRows, ACT, true>
          <<<grid, block, 0, stream>>>(a.x, a.add, a.scale, a.shift, a.y, sh, g.rows_per_chunk);
    } else {
      batch_norm_act_apply_kernel<T, kRows, ACT, false>
          <<<grid, block, 0, stream>>>(a.x, a.add, a.scale, a.shift, a.y, sh, g.rows_per_chunk);
    }
  });
  return cudaGetLastError();
}

// The partial buffers hold g.chunks * C floats each (g = bna_grid(sh, sm_count)); M >= 1 (M >= 2 in
// training), C >= 1, C <= 65535 in the planes layout.
template <class T>
cudaError_t launch_batch_norm_act_forward(const BnaShape& sh, const BnaGrid& g, const BnaForwardArgs<T>& a,
                                          cudaStream_t stream) {
  if (sh.m == 0 || sh.c == 0) return cudaSuccess;
  return sh.rows ? bna_forward_layout<T, true>(sh, g, a, stream) : bna_forward_layout<T, false>(sh, g, a, stream);
}

template <class T, bool kRows>
cudaError_t bna_backward_layout(const BnaShape& sh, const BnaGrid& g, const BnaBackwardArgs<T>& a,
                                cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(g.chunks), static_cast<unsigned>(g.tiles)), block(kBnaTile, kBnaLanes);
  const int64_t finish_blocks = (sh.c + 255) / 256;
  float* k1 = a.k;
  float* k2 = a.k + sh.c;
  float* k3 = a.k + 2 * sh.c;
  bna_with_act(a.act, [&](auto act_tag) {
    constexpr int ACT = decltype(act_tag)::value;
    batch_norm_act_backward_reduce_kernel<T, kRows, ACT>
        <<<grid, block, 0, stream>>>(a.grad_y, a.y, a.x, a.mean, sh, g.rows_per_chunk, a.partial_a, a.partial_b);
    batch_norm_act_finish_backward_kernel<T><<<static_cast<unsigned>(finish_blocks), 256, 0, stream>>>(
        sh, g.chunks, a.partial_a, a.partial_b, a.weight, a.invstd, a.training, a.grad_weight, a.grad_bias, k1, k2,
        k3);
    if (a.grad_add != nullptr) {
      batch_norm_act_backward_apply_kernel<T, kRows, ACT, true><<<grid, block, 0, stream>>>(
          a.grad_y, a.y, a.x, a.mean, k1, k2, k3, a.grad_x, a.grad_add, sh, g.rows_per_chunk);
    } else {
      batch_norm_act_backward_apply_kernel<T, kRows, ACT, false><<<grid, block, 0, stream>>>(
          a.grad_y, a.y, a.x, a.mean, k1, k2, k3, a.grad_x, a.grad_add, sh, g.rows_per_chunk);
    }
  });
  return cudaGetLastError();
}

template <class T>
cudaError_t launch_batch_norm_act_backward(const BnaShape& sh, const BnaGrid& g, const BnaBackwardArgs<T>& a,
                                           cudaStream_t stream) {
  if (sh.m == 0 || sh.c == 0) return cudaSuccess;
  return sh.rows ? bna_backward_layout<T, true>(sh, g, a, stream) : bna_backward_layout<T, false>(sh, g, a, stream);
}

}  // namespace stnas::cuda
