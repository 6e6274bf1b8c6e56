// Torch-free core of the C++ CPU fused BatchNorm + addend + activation (contract:
// stnas/ops/batch_norm_act.py). Four passes, each over a range of the input:
//   stats:        s1[c] += x - shift[c] ; s2[c] += (x - shift[c])^2     (shifted sums: no cancellation
//                                                                         when |mean| >> std)
//   apply:        y = act(x * scale[c] + bias[c] (+ addend))
//   bwd reduce:   dz = act'(y) * g ; sdz[c] += dz ; sdzx[c] += dz * (x - mean[c])
//   bwd apply:    dz as above ; dx = k1[c] * dz + k2[c] * (x - mean[c]) + k3[c] ; daddend = dz
// Two layouts: rows (channels_last: M = N*H*W rows of C channels, vectorised over channels) and planes
// (contiguous NCHW: one plane of S = H*W elements per (n, c), vectorised along the plane). The caller
// splits the work into ranges that depend on the shape only, so reductions (and results) do not depend
// on the thread count. Within a range sums are float; across ranges the caller adds in double.
#pragma once
#include <cstdint>

#include "stnas/cpu_math.h"

namespace stnas::cpu {

enum BnAct : int { kActNone = 0, kActRelu = 1, kActRelu6 = 2 };

template <int ACT>
inline float bn_activate(float z) {
  if (ACT == kActRelu) return z > 0.f ? z : 0.f;
  if (ACT == kActRelu6) return z > 0.f ? (z < 6.f ? z : 6.f) : 0.f;
  return z;
}

// The activation's gradient mask from its output, as PyTorch's backward takes it (relu: y > 0;
// relu6 = hardtanh(0, 6): 0 < y < 6). Written as a product of two compares, which GCC 12 vectorises:
// with `?:` (or a single compare) it kept a branch per element, and the backward's reduction over a
// channels_last (32, 64, 28, 28) fp32 batch took 12-30 ms instead of 0.6 ms on one core (EPYC, 2026-12-03;
// the whole relu6 backward 150 ms before, 1.3-1.9 ms after). `y == y` changes nothing (NaN > 0 is false).
template <int ACT>
inline float bn_act_mask(float y) {
  if (ACT == kActRelu) return static_cast<float>(y > 0.f) * static_cast<float>(y == y);
  if (ACT == kActRelu6) return static_cast<float>(y > 0.f) * static_cast<float>(y < 6.f);
  return 1.f;
}

// ---- rows layout (channels_last): x[r * C + c] -----------------------------------------------------

template <class T>
void bn_stats_rows(const T* x, int64_t C, int64_t r0, int64_t r1, const float* shift, float* s1, float* s2) {
  for (int64_t c = 0; c < C; ++c) s1[c] = s2[c] = 0.f;
  for (int64_t r = r0; r < r1; ++r) {
    const T* xr = x + r * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const float d = to_float(xr[c]) - shift[c];
      s1[c] += d;
      s2[c] += d * d;
    }
  }
}

template <class T, int ACT>
void bn_apply_rows(const T* x, const T* add, const float* scale, const float* bias, T* y, int64_t C, int64_t r0,
                   int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* xr = x + r * C;
    T* yr = y + r * C;
    if (add != nullptr) {
      const T* ar = add + r * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = from_float<T>(bn_activate<ACT>(to_float(xr[c]) * scale[c] + bias[c] + to_float(ar[c])));
    } else {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) yr[c] = from_float<T>(bn_activate<ACT>(to_float(xr[c]) * scale[c] + bias[c]));
    }
  }
}

template <class T, int ACT>
void bn_backward_reduce_rows(const T* g, const T* y, const T* x, const float* mean, int64_t C, int64_t r0, int64_t r1,
                             float* sdz, float* sdzx) {
  for (int64_t c = 0; c < C; ++c) sdz[c] = sdzx[c] = 0.f;
  for (int64_t r = r0; r < r1; ++r) {
    const T* gr = g + r * C;
    const T* xr = x + r * C;
    const T* yr = ACT == kActNone ? gr : y + r * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const float dz = to_float(gr[c]) * bn_act_mask<ACT>(to_float(yr[c]));
      sdz[c] += dz;
      sdzx[c] += dz * (to_float(xr[c]) - mean[c]);
    }
  }
}

template <class T, int ACT>
void bn_backward_apply_rows(const T* g, const T* y, const T* x, const float* mean, const float* k1, const float* k2,
                            const float* k3, T* dx, T* dadd, int64_t C, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* gr = g + r * C;
    const T* xr = x + r * C;
    const T* yr = ACT == kActNone ? gr : y + r * C;
    T* dxr = dx + r * C;
    T* dar = dadd == nullptr ? nullptr : dadd + r * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const float dz = to_float(gr[c]) * bn_act_mask<ACT>(to_float(yr[c]));
      dxr[c] = from_float<T>(k1[c] * dz + k2[c] * (to_float(xr[c]) - mean[c]) + k3[c]);
    }
    if (dar != nullptr) {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) dar[c] = from_float<T>(to_float(gr[c]) * bn_act_mask<ACT>(to_float(yr[c])));
    }
  }
}

// ---- planes layout (contiguous NCHW): one plane p of S elements, all of one channel ----------------

constexpr int64_t kBnBlock = 512;  // elements summed in float before the running double sum

template <class T>
void bn_stats_plane(const T* x, int64_t S, float shift, double* s1, double* s2) {
  double a1 = 0, a2 = 0;
  for (int64_t b = 0; b < S; b += kBnBlock) {
    const int64_t len = b + kBnBlock < S ? kBnBlock : S - b;
    float f1 = 0.f, f2 = 0.f;
#pragma omp simd reduction(+ : f1, f2)
    for (int64_t i = 0; i < len; ++i) {
      const float d = to_float(x[b + i]) - shift;
      f1 += d;
      f2 += d * d;
    }
    a1 += f1;
    a2 += f2;
  }
  *s1 = a1;
  *s2 = a2;
}

template <class T, int ACT>
void bn_apply_plane(const T* x, const T* add, float scale, float bias, T* y, int64_t S) {
  if (add != nullptr) {
#pragma omp simd
    for (int64_t i = 0; i < S; ++i) y[i] = from_float<T>(bn_activate<ACT>(to_float(x[i]) * scale + bias + to_float(add[i])));
  } else {
#pragma omp simd
    for (int64_t i = 0; i < S; ++i) y[i] = from_float<T>(bn_activate<ACT>(to_float(x[i]) * scale + bias));
  }
}

template <class T, int ACT>
void bn_backward_reduce_plane(const T* g, const T* y, const T* x, float mean, int64_t S, double* sdz, double* sdzx) {
  const T* yy = ACT == kActNone ? g : y;
  double a1 = 0, a2 = 0;
  for (int64_t b = 0; b < S; b += kBnBlock) {
    const int64_t len = b + kBnBlock < S ? kBnBlock : S - b;
    float f1 = 0.f, f2 = 0.f;
#pragma omp simd reduction(+ : f1, f2)
    for (int64_t i = 0; i < len; ++i) {
      const float dz = to_float(g[b + i]) * bn_act_mask<ACT>(to_float(yy[b + i]));
      f1 += dz;
      f2 += dz * (to_float(x[b + i]) - mean);
    }
    a1 += f1;
    a2 += f2;
  }
  *sdz = a1;
  *sdzx = a2;
}

template <class T, int ACT>
void bn_backward_apply_plane(const T* g, const T* y, const T* x, float mean, float k1, float k2, float k3, T* dx,
                             T* dadd, int64_t S) {
  const T* yy = ACT == kActNone ? g : y;
#pragma omp simd
  for (int64_t i = 0; i < S; ++i) {
    const float dz = to_float(g[i]) * bn_act_mask<ACT>(to_float(yy[i]));
    dx[i] = from_float<T>(k1 * dz + k2 * (to_float(x[i]) - mean) + k3);
  }
  if (dadd != nullptr) {
#pragma omp simd
    for (int64_t i = 0; i < S; ++i) dadd[i] = from_float<T>(to_float(g[i]) * bn_act_mask<ACT>(to_float(yy[i])));
  }
}

}  // namespace stnas::cpu
