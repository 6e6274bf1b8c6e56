// Counter-based normal noise shared by every stnas backend (C++ CPU, CUDA; the Triton kernel and the
// PyTorch reference implement the same layout), so that one seed gives the same noise everywhere up to
// the rounding of logf/cosf/sinf.
//
// Generator: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011).
// Layout (our choice): element j of the tensor with parameter index i at step t takes its normal from
//   counter = (j / 4, i, t & 0xffffffff, t >> 32), key = (seed & 0xffffffff, seed >> 32)
// The four 32-bit words x0..x3 of that block become uniforms u = ((x >> 9) + 0.5) * 2^-23 in (0, 1),
// exact in fp32, and Box-Muller turns them into four normals:
//   n[4q+0] = r01 * cos(2 pi u1), n[4q+1] = r01 * sin(2 pi u1), r01 = sqrt(-2 ln u0)
//   n[4q+2] = r23 * cos(2 pi u3), n[4q+3] = r23 * sin(2 pi u3), r23 = sqrt(-2 ln u2)
// One Philox call feeds four elements: at one call per element the integer work of the SGLD step would
// exceed its memory time on an H100 (~100 integer ops/element against ~150 G elements/s of bandwidth).
#pragma once
#include <cstdint>
#include <cmath>

#if defined(__CUDACC__)
#define STNAS_HD __host__ __device__ __forceinline__
#else
#define STNAS_HD inline
#endif

namespace stnas {

struct Philox4 {
  uint32_t x[4];
};

STNAS_HD uint32_t mulhilo32(uint32_t a, uint32_t b, uint32_t* hi) {
#if defined(__CUDA_ARCH__)
  *hi = __umulhi(a, b);
  return a * b;
#else
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
#endif
}

STNAS_HD Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                               uint32_t k1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, hi1;
    const uint32_t lo0 = mulhilo32(kM0, c0, &hi0);
    const uint32_t lo1 = mulhilo32(kM1, c2, &hi1);
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += kW0;
    k1 += kW1;
  }
  return Philox4{{c0, c1, c2, c3}};
}

STNAS_HD float philox_uniform(uint32_t x) {
  // (x >> 9) < 2^23, so (x >> 9) + 0.5 and its product with 2^-23 are exact in fp32; never 0 or 1.
  // Converting through int32 (exact: the value is < 2^23) lets vector units use the signed convert.
  return (static_cast<float>(static_cast<int32_t>(x >> 9)) + 0.5f) * 1.1920928955078125e-07f;
}

// The four normals of group q = j / 4 for parameter `index` at `step` under `seed`.
STNAS_HD void philox_normal4(uint64_t seed, uint64_t step, uint32_t index, uint64_t group,
                             float out[4]) {
  const Philox4 r = philox4x32_10(static_cast<uint32_t>(group), index,
                                  static_cast<uint32_t>(step), static_cast<uint32_t>(step >> 32),
                                  static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  const float r01 = sqrtf(-2.0f * logf(philox_uniform(r.x[0])));
  const float r23 = sqrtf(-2.0f * logf(philox_uniform(r.x[2])));
#if defined(__CUDA_ARCH__)
  // sincospif(2u) = (sin, cos)(2 pi u) with an exact argument reduction: sinf/cosf would carry their
  // huge-argument slow path (a local-memory stack frame) for arguments that never exceed 2 pi.
  float s1, c1, s3, c3;
  sincospif(2.0f * philox_uniform(r.x[1]), &s1, &c1);
  sincospif(2.0f * philox_uniform(r.x[3]), &s3, &c3);
  out[0] = r01 * c1;
  out[1] = r01 * s1;
  out[2] = r23 * c3;
  out[3] = r23 * s3;
#else
  constexpr float kTwoPi = 6.283185307179586f;
  const float t1 = kTwoPi * philox_uniform(r.x[1]);
  const float t3 = kTwoPi * philox_uniform(r.x[3]);
  out[0] = r01 * cosf(t1);
  out[1] = r01 * sinf(t1);
  out[2] = r23 * cosf(t3);
  out[3] = r23 * sinf(t3);
#endif
}

}  // namespace stnas
