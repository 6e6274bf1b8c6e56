// Torch-free core of the C++ CPU SGLD step: one range of one flat tensor.
//   d = g + wd*p ; v = mu*v + d (with momentum) ; p = p - lr*v + sigma*xi
// Noise: Philox4x32-10 in the shared layout (stnas/philox.h), generated kNoiseBlock elements at a time
// into a stack buffer (never into memory the size of the tensor). Element j uses normal j % 4 of group
// j / 4, exactly as stnas::philox_normal4; the tests compare every element with a float64 evaluation.
//
// Why not call stnas::philox_normal4 per group: its logf/sinf/cosf are opaque libm calls that keep the
// loop scalar. The noise is the whole cost of this op (the update alone runs at memory speed), so it is
// split into two vector loops: Philox words (SSE2, two groups per register) and Box-Muller with the
// branch-free log and sin/cos of stnas/cpu_math.h (auto-vectorised).
//
// Measured 2026-11-22 on the 2-core x86_64 dev machine (AMD EPYC: AVX2+FMA, no AVX-512), 10M fp32
// params, fp32 grads, momentum 0.9, sigma 1e-3, median of 9 (one range, one thread, g++ -O3):
//   this kernel, AVX2+FMA clone                                   47 ms  (no noise: 10 ms)
//   same source, baseline x86-64 (SSE2)                           62 ms
// Through stnas.ops.sgld_step on 2 threads: 27 ms; SGD(foreach=True) + randn_like noise: 106 ms.
#pragma once
#include <cmath>
#include <cstdint>

#include "stnas/cpu_math.h"
#include "stnas/philox.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

// The AVX2+FMA clone is chosen at run time, so a portable build (setup.py passes no -march) still gets
// the wide units; fp-contract=fast because GCC's -std=c++NN mode turns contraction off, and the fused
// polynomials are a large part of the gain (measured: ~3.1 -> ~2.5 ns per normal on one core).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define STNAS_CPU_AVX2_CLONE 1
#if defined(__clang__)
#define STNAS_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define STNAS_TARGET_AVX2 __attribute__((target("avx2,fma"), optimize("fp-contract=fast")))
#endif
#endif

#define STNAS_ALWAYS_INLINE inline __attribute__((always_inline))

namespace stnas::cpu {

struct SgldScalars {
  float lr, weight_decay, momentum, sigma;
  uint64_t seed, step;
};

constexpr int kNoiseBlock = 256;             // normals per stack buffer
constexpr int kNoiseGroups = kNoiseBlock / 4;  // Philox calls per buffer (a multiple of 4)

// Philox4x32-10 words of groups q0 .. q0 + groups - 1 (rounded up to a multiple of 4 on SSE2: the
// buffers hold kNoiseGroups). Bit-identical to stnas::philox4x32_10 (checked by the unit test).
STNAS_ALWAYS_INLINE void philox_words(uint64_t q0, int groups, uint32_t index, uint64_t step, uint64_t seed,
                                      uint32_t* x0, uint32_t* x1, uint32_t* x2, uint32_t* x3) {
#if defined(__SSE2__)
  // Each 32-bit word lives in the low half of a 64-bit lane: _mm_mul_epu32 then gives the full 64-bit
  // product (hi = >> 32, lo = the product itself, its high half is ignored by the next multiply and
  // dropped at the end), so no repacking per round. Two registers (4 groups) per iteration for ILP.
  const __m128i m0 = _mm_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m128i m1 = _mm_set1_epi32(static_cast<int>(0xCD9E8D57u));
  const __m128i c1_init = _mm_set1_epi32(static_cast<int>(index));
  const __m128i c2_init = _mm_set1_epi32(static_cast<int>(static_cast<uint32_t>(step)));
  const __m128i c3_init = _mm_set1_epi32(static_cast<int>(static_cast<uint32_t>(step >> 32)));
  for (int i = 0; i < groups; i += 4) {
    const uint32_t q = static_cast<uint32_t>(q0 + static_cast<uint64_t>(i));
    __m128i a0 = _mm_set_epi32(0, static_cast<int>(q + 1), 0, static_cast<int>(q));
    __m128i b0 = _mm_set_epi32(0, static_cast<int>(q + 3), 0, static_cast<int>(q + 2));
    __m128i a1 = c1_init, b1 = c1_init, a2 = c2_init, b2 = c2_init, a3 = c3_init, b3 = c3_init;
    uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
    for (int r = 0; r < 10; ++r) {
      const __m128i key0 = _mm_set1_epi32(static_cast<int>(k0)), key1 = _mm_set1_epi32(static_cast<int>(k1));
      const __m128i pa0 = _mm_mul_epu32(a0, m0), pa2 = _mm_mul_epu32(a2, m1);
      const __m128i pb0 = _mm_mul_epu32(b0, m0), pb2 = _mm_mul_epu32(b2, m1);
      a0 = _mm_xor_si128(_mm_xor_si128(_mm_srli_epi64(pa2, 32), a1), key0);
      b0 = _mm_xor_si128(_mm_xor_si128(_mm_srli_epi64(pb2, 32), b1), key0);
      a2 = _mm_xor_si128(_mm_xor_si128(_mm_srli_epi64(pa0, 32), a3), key1);
      b2 = _mm_xor_si128(_mm_xor_si128(_mm_srli_epi64(pb0, 32), b3), key1);
      a1 = pa2;
      b1 = pb2;
      a3 = pa0;
      b3 = pb0;
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    // Low halves of lanes 0 and 2 of a and b: groups q, q+1, q+2, q+3.
    const auto pack = [](__m128i a, __m128i b) {
      return _mm_castps_si128(_mm_shuffle_ps(_mm_castsi128_ps(a), _mm_castsi128_ps(b), _MM_SHUFFLE(2, 0, 2, 0)));
    };
    _mm_storeu_si128(reinterpret_cast<__m128i*>(x0 + i), pack(a0, b0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(x1 + i), pack(a1, b1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(x2 + i), pack(a2, b2));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(x3 + i), pack(a3, b3));
  }
#else
  for (int i = 0; i < groups; ++i) {
    const Philox4 r = philox4x32_10(static_cast<uint32_t>(q0 + static_cast<uint64_t>(i)), index,
                                    static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32),
                                    static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
    x0[i] = r.x[0];
    x1[i] = r.x[1];
    x2[i] = r.x[2];
    x3[i] = r.x[3];
  }
#endif
}

// 4 * groups (groups <= kNoiseGroups) normals starting at element `first` (a multiple of 4).
STNAS_ALWAYS_INLINE void philox_normal_block(uint64_t seed, uint64_t step, uint32_t index, uint64_t first,
                                             int groups, float* out) {
  alignas(64) uint32_t x0[kNoiseGroups], x1[kNoiseGroups], x2[kNoiseGroups], x3[kNoiseGroups];
  philox_words(first / 4, groups, index, step, seed, x0, x1, x2, x3);
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
// begin and end may fall inside a group of 4: the group is generated whole and only its elements in
// range are used, so any split of a tensor into ranges gives the same result as one serial pass.
template <class G, bool kGrad, bool kMomentum, bool kNoise>
STNAS_ALWAYS_INLINE void sgld_step_range_body(float* __restrict p, const G* __restrict g, float* __restrict v,
                                              int64_t begin, int64_t end, const SgldScalars& s, uint32_t index) {
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

template <class G, bool kGrad, bool kMomentum, bool kNoise>
void sgld_step_range_baseline(float* p, const G* g, float* v, int64_t begin, int64_t end, const SgldScalars& s,
                              uint32_t index) {
  sgld_step_range_body<G, kGrad, kMomentum, kNoise>(p, g, v, begin, end, s, index);
}

#if defined(STNAS_CPU_AVX2_CLONE)
template <class G, bool kGrad, bool kMomentum, bool kNoise>
STNAS_TARGET_AVX2 void sgld_step_range_avx2(float* p, const G* g, float* v, int64_t begin, int64_t end,
                                            const SgldScalars& s, uint32_t index) {
  sgld_step_range_body<G, kGrad, kMomentum, kNoise>(p, g, v, begin, end, s, index);
}

inline bool cpu_has_avx2_fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}
#endif

// The instruction set the kernels run with in this process (for tests and benchmarks to report).
inline const char* sgld_step_isa() {
#if defined(STNAS_CPU_AVX2_CLONE)
  if (cpu_has_avx2_fma()) return "avx2+fma";
#endif
  return "baseline";
}

template <class G, bool kGrad, bool kMomentum, bool kNoise>
void sgld_step_range(float* p, const G* g, float* v, int64_t begin, int64_t end, const SgldScalars& s,
                     uint32_t index, bool allow_avx2 = true) {
#if defined(STNAS_CPU_AVX2_CLONE)
  if (allow_avx2 && cpu_has_avx2_fma()) {
    sgld_step_range_avx2<G, kGrad, kMomentum, kNoise>(p, g, v, begin, end, s, index);
    return;
  }
#endif
  (void)allow_avx2;
  sgld_step_range_baseline<G, kGrad, kMomentum, kNoise>(p, g, v, begin, end, s, index);
}

// Dispatch on the run-time flags to the specialised loops. g == nullptr: noise only (v untouched);
// v == nullptr: no momentum buffer. allow_avx2 = false forces the baseline build (tests, benchmarks).
template <class G>
void sgld_step_range_dispatch(float* p, const G* g, float* v, int64_t begin, int64_t end,
                              const SgldScalars& s, uint32_t index, bool allow_avx2 = true) {
  const bool noise = s.sigma != 0.0f;
  if (g == nullptr) {
    if (noise) sgld_step_range<G, false, false, true>(p, g, v, begin, end, s, index, allow_avx2);
    return;
  }
  if (v != nullptr) {
    if (noise) sgld_step_range<G, true, true, true>(p, g, v, begin, end, s, index, allow_avx2);
    else sgld_step_range<G, true, true, false>(p, g, v, begin, end, s, index, allow_avx2);
  } else {
    if (noise) sgld_step_range<G, true, false, true>(p, g, v, begin, end, s, index, allow_avx2);
    else sgld_step_range<G, true, false, false>(p, g, v, begin, end, s, index, allow_avx2);
  }
}

}  // namespace stnas::cpu
