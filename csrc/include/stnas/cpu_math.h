// Torch-free scalar helpers of the C++ CPU kernels, written so that GCC vectorises the loops they sit
// in: 16-bit float conversions, and branch-free log and sin/cos for the Box-Muller transform.
//
// Why not logf/sinf/cosf: libm calls are opaque to the vectoriser. Measured on the 2-core x86_64 dev
// machine (AMD EPYC, 2026-11-22), one SGLD step over 10M fp32 params with noise took 244 ms with the
// libm calls and 60 ms with the polynomials below (Cephes' minimax coefficients), which agree with libm
// to a few float32 ulps on the inputs Box-Muller gives them (bounded by the tests against float64).
#pragma once
#include <cstdint>
#include <cstring>

namespace stnas::cpu {

struct BFloat16 {
  uint16_t bits;
};
struct Half {
  uint16_t bits;
};

// __builtin_bit_cast rather than memcpy: GCC's vectoriser treats the memcpy form as control flow.
inline float bits_to_float(uint32_t u) { return __builtin_bit_cast(float, u); }
inline uint32_t float_to_bits(float f) { return __builtin_bit_cast(uint32_t, f); }

inline float to_float(float x) { return x; }
inline float to_float(BFloat16 x) { return bits_to_float(static_cast<uint32_t>(x.bits) << 16); }
inline float to_float(Half h) {
  // IEEE binary16 -> binary32, branch-free for normals/subnormals/inf/nan via the magic-multiply trick.
  const uint32_t sign = static_cast<uint32_t>(h.bits & 0x8000u) << 16;
  const uint32_t em = h.bits & 0x7fffu;
  // Shift exponent+mantissa into float position and rescale by 2^112 (fixes the exponent bias and
  // turns half subnormals into float normals exactly).
  float f = bits_to_float(em << 13) * bits_to_float(0x77800000u);  // 2^112
  // Half inf/nan (exponent 31) overflowed above to >= 65536: map to float inf/nan keeping the payload.
  const uint32_t infnan = (em >= 0x7c00u) ? (0x7f800000u | (em & 0x3ffu) << 13) : float_to_bits(f);
  return bits_to_float(infnan | sign);
}

template <class T>
inline T from_float(float f);
template <>
inline float from_float<float>(float f) {
  return f;
}
template <>
inline BFloat16 from_float<BFloat16>(float f) {
  // Round to nearest even; NaN stays NaN (quiet bit forced).
  uint32_t u = float_to_bits(f);
  const bool is_nan = (u & 0x7fffffffu) > 0x7f800000u;
  u += 0x7fffu + ((u >> 16) & 1u);
  return BFloat16{static_cast<uint16_t>(is_nan ? ((float_to_bits(f) >> 16) | 0x40u) : (u >> 16))};
}
template <>
inline Half from_float<Half>(float f) {
  // Round to nearest even, with overflow to inf, subnormals, and NaN kept.
  const uint32_t x = float_to_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t ax = x & 0x7fffffffu;
  uint16_t out;
  if (ax > 0x7f800000u) {
    out = 0x7e00u;
  } else if (ax >= 0x477ff000u) {  // rounds to >= 65520: inf
    out = 0x7c00u;
  } else if (ax < 0x38800000u) {  // below the smallest normal half (2^-14): subnormal or zero
    // Adding 0.5 (2^-1) aligns the mantissa so that the float adder rounds to the half subnormal grid.
    const float shifted = bits_to_float(ax) + 0.5f;
    out = static_cast<uint16_t>(float_to_bits(shifted) - float_to_bits(0.5f));
  } else {
    const uint32_t mant_odd = (ax >> 13) & 1u;
    const uint32_t r = ax + (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu + mant_odd;
    out = static_cast<uint16_t>(r >> 13);
  }
  return Half{static_cast<uint16_t>(out | sign)};
}

// Natural log for x in (0, 1]: x = m * 2^e with m in [sqrt(1/2), sqrt(2)), log x = e ln2 + log m.
inline float log_unit(float x) {
  uint32_t u = float_to_bits(x);
  int32_t e = static_cast<int32_t>(u >> 23) - 126;
  u = (u & 0x007fffffu) | 0x3f000000u;  // m in [0.5, 1)
  float m = bits_to_float(u);
  // m < sqrt(1/2): use 2m and e - 1 instead, as a 0/1 float so that the loop has no branch.
  // (compared as bits: a float compare may trap, so GCC keeps it as a branch and won't vectorise)
  const int32_t small_bit = u < 0x3f3504f3u ? 1 : 0;  // 0x3f3504f3 = float(sqrt(1/2))
  const float small = static_cast<float>(small_bit);
  const float fe = static_cast<float>(e - small_bit);
  m = m + small * m - 1.0f;
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y += -2.12194440e-4f * fe;
  y += -0.5f * z;
  return m + y + 0.693359375f * fe;
}

// sin(2 pi u) and cos(2 pi u) for u in [0, 1): reduce to an octant around a multiple of pi/2.
inline void sincos_2pi(float u, float* s, float* c) {
  const float t = u * 4.0f;                          // quarter turns, [0, 4)
  const float q = static_cast<float>(static_cast<int32_t>(t + 0.5f));  // nearest quadrant 0..4
  const float x = (t - q) * 1.57079632679489662f;    // [-pi/4, pi/4]
  const float z = x * x;
  float sp = -1.9515295891e-4f;
  sp = sp * z + 8.3321608736e-3f;
  sp = sp * z - 1.6666654611e-1f;
  const float sn = x + x * z * sp;
  float cp = 2.443315711809948e-5f;
  cp = cp * z - 1.388731625493765e-3f;
  cp = cp * z + 4.166664568298827e-2f;
  const float cs = 1.0f - 0.5f * z + z * z * cp;
  // Rotate (cs, sn) by quadrant * 90 degrees with arithmetic selects, which vectorise (a chain of
  // ternaries did not): odd quadrants swap sin and cos, quadrants 2,3 negate sin, 1,2 negate cos.
  const int32_t quadrant = static_cast<int32_t>(q) & 3;
  const float odd = static_cast<float>(quadrant & 1);
  const float sin_sign = 1.0f - 2.0f * static_cast<float>((quadrant >> 1) & 1);
  const float cos_sign = 1.0f - 2.0f * static_cast<float>(((quadrant + 1) >> 1) & 1);
  const float s0 = sin_sign * (odd * cs + (1.0f - odd) * sn);
  const float c0 = cos_sign * (odd * sn + (1.0f - odd) * cs);
  *s = s0;
  *c = c0;
}

}  // namespace stnas::cpu
