// Torch-free core of the C++ CPU masked path sum over the A active paths of one node.
//   forward:  out[i] = sum_a w[a] * y_a[i]                   (fp32 accumulation)
//   backward: gy_a[i] = w[a] * gout[i] ; dot[a] = sum_i gout[i] * y_a[i]   (one pass over gout)
// Work on ranges of a flat storage array; the caller parallelises over fixed-size ranges, so the
// reduction order (and the result) does not depend on the thread count.
#pragma once
#include <cstdint>

#include "stnas/cpu_math.h"

namespace stnas::cpu {

constexpr int64_t kPathBlock = 512;  // elements kept in a stack fp32 buffer between path passes

template <class T>
void masked_path_sum_forward_range(const T* const* ys, const float* w, int64_t paths, T* out,
                                   int64_t begin, int64_t end) {
  alignas(64) float acc[kPathBlock];
  for (int64_t b = begin; b < end; b += kPathBlock) {
    const int64_t len = b + kPathBlock < end ? kPathBlock : end - b;
    const T* y0 = ys[0] + b;
    const float w0 = w[0];
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) acc[i] = w0 * to_float(y0[i]);
    for (int64_t a = 1; a < paths; ++a) {
      const T* ya = ys[a] + b;
      const float wa = w[a];
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) acc[i] += wa * to_float(ya[i]);
    }
    T* o = out + b;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) o[i] = from_float<T>(acc[i]);
  }
}

// dots[a] receives sum over [begin, end) of gout * y_a (when ys != nullptr), accumulated in fp32 per
// block and in double across blocks.
template <class T>
void masked_path_sum_backward_range(const T* gout, const T* const* ys, const float* w, int64_t paths,
                                    T* const* grad_ys, double* dots, int64_t begin, int64_t end) {
  alignas(64) float g[kPathBlock];
  for (int64_t b = begin; b < end; b += kPathBlock) {
    const int64_t len = b + kPathBlock < end ? kPathBlock : end - b;
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) g[i] = to_float(gout[b + i]);
    for (int64_t a = 0; a < paths; ++a) {
      T* ga = grad_ys[a] + b;
      const float wa = w[a];
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) ga[i] = from_float<T>(wa * g[i]);
      if (ys != nullptr) {
        const T* ya = ys[a] + b;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int64_t i = 0; i < len; ++i) dot += g[i] * to_float(ya[i]);
        dots[a] += dot;
      }
    }
  }
}

}  // namespace stnas::cpu
