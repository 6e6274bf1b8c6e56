// Torch-free core of the C++ CPU SGLD step: one range of one flat tensor.
//   d = g + wd*p ; v = mu*v + d (with momentum) ; p = p - lr*v + sigma*xi
// Noise: Philox4x32-10 in the shared layout (stnas/philox.h), generated a block of kBlock elements at a
// time into a stack buffer (never into memory the size of the tensor), with the branch-free log and
// sin/cos of stnas/cpu_math.h so that both loops vectorise.
#pragma once
#include <cmath>
#include <cstdint>

#include "stnas/cpu_math.h"
#include "stnas/philox.h"

namespace stnas::cpu {

struct SgldScalars {
  float lr, weight_decay, momentum, sigma;
  uint64_t seed, step;
};

// 4 * groups (<= kNoiseBlock) normals starting at element `first` (a multiple of 4) of parameter `index`.
constexpr int kNoiseBlock = 256;

inline void philox_normal_block(uint64_t seed, uint64_t step, uint32_t index, uint64_t first, int groups,
                                float* out) {
  constexpr int kGroups = kNoiseBlock / 4;
  uint32_t x0[kGroups], x1[kGroups], x2[kGroups], x3[kGroups];
  const uint64_t q0 = first / 4;
  for (int i = 0; i < groups; ++i) {
    const Philox4 r = philox4x32_10(static_cast<uint32_t>(q0 + i), index, static_cast<uint32_t>(step),
                                    static_cast<uint32_t>(step >> 32), static_cast<uint32_t>(seed),
                                    static_cast<uint32_t>(seed >> 32));
    x0[i] = r.x[0];
    x1[i] = r.x[1];
    x2[i] = r.x[2];
    x3[i] = r.x[3];
  }
#pragma omp simd
  for (int i = 0; i < groups; ++i) {
    const float r01 = std::sqrt(-2.0f * log_unit(philox_uniform(x0[i])));
    const float r23 = std::sqrt(-2.0f * log_unit(philox_uniform(x2[i])));
    float s1, c1, s3, c3;
    sincos_2pi(philox_uniform(x1[i]), &s1, &c1);
    sincos_2pi(philox_uniform(x3[i]), &s3, &c3);
    out[4 * i + 0] = r01 * c1;
    out[4 * i + 1] = r01 * s1;
    out[4 * i + 2] = r23 * c3;
    out[4 * i + 3] = r23 * s3;
  }
}

// Elements [begin, end) of one parameter. G is float, BFloat16 or Half; kGrad false = noise only.
template <class G, bool kGrad, bool kMomentum, bool kNoise>
void sgld_step_range(float* __restrict p, const G* __restrict g, float* __restrict v, int64_t begin,
                     int64_t end, const SgldScalars& s, uint32_t index) {
  alignas(64) float noise[kNoiseBlock];
  const float lr = s.lr, wd = s.weight_decay, mu = s.momentum, sigma = s.sigma;
  // Blocks start on multiples of 4 so that a Philox group never straddles two blocks.
  for (int64_t block = begin & ~int64_t{3}; block < end; block += kNoiseBlock) {
    const int64_t lo = block > begin ? block : begin;
    const int64_t hi = block + kNoiseBlock < end ? block + kNoiseBlock : end;
    // Only the groups this range touches: a small tensor must not pay for a whole block of normals.
    if (kNoise) philox_normal_block(s.seed, s.step, index, static_cast<uint64_t>(block),
                                    static_cast<int>((hi - block + 3) / 4), noise);
    const float* nz = noise - block;
#pragma omp simd
    for (int64_t j = lo; j < hi; ++j) {
      float pj = p[j];
      if (kGrad) {
        float d = to_float(g[j]) + wd * pj;
        if (kMomentum) {
          d = mu * v[j] + d;
          v[j] = d;
        }
        pj = pj - lr * d;
      }
      if (kNoise) pj = pj + sigma * nz[j];
      p[j] = pj;
    }
  }
}

// Dispatch on the run-time flags to the specialised loops.
template <class G>
void sgld_step_range_dispatch(float* p, const G* g, float* v, int64_t begin, int64_t end,
                              const SgldScalars& s, uint32_t index) {
  const bool noise = s.sigma != 0.0f;
  if (g == nullptr) {
    if (noise) sgld_step_range<G, false, false, true>(p, g, v, begin, end, s, index);
    return;
  }
  if (v != nullptr) {
    if (noise) sgld_step_range<G, true, true, true>(p, g, v, begin, end, s, index);
    else sgld_step_range<G, true, true, false>(p, g, v, begin, end, s, index);
  } else {
    if (noise) sgld_step_range<G, true, false, true>(p, g, v, begin, end, s, index);
    else sgld_step_range<G, true, false, false>(p, g, v, begin, end, s, index);
  }
}

}  // namespace stnas::cpu
