// Unit test of the torch-free CPU SGLD core against a float64 evaluation of the contract: the noise is
// Box-Muller evaluated in float64 on the shared Philox words (so the polynomial log/sin/cos are checked,
// not trusted), on odd sizes, fp32/bf16/fp16 grads, every specialisation, both instruction-set builds,
// and ranges split at arbitrary points (the parallel chunking must not change a single bit).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "cpu/sgld_step.h"

using namespace stnas::cpu;

static int failures = 0, checks = 0;

static void expect(bool ok, const char* what) {
  ++checks;
  if (!ok) {
    ++failures;
    std::printf("FAIL: %s\n", what);
  }
}

// Element j of the noise, in float64 from the Philox words of its group.
static double normal_f64(const SgldScalars& s, uint32_t index, int64_t j) {
  const stnas::Philox4 r = stnas::philox4x32_10(
      static_cast<uint32_t>(j / 4), index, static_cast<uint32_t>(s.step), static_cast<uint32_t>(s.step >> 32),
      static_cast<uint32_t>(s.seed), static_cast<uint32_t>(s.seed >> 32));
  const auto u = [](uint32_t x) { return (static_cast<double>(x >> 9) + 0.5) * 0x1p-23; };
  const double two_pi = 6.283185307179586476925;
  switch (j % 4) {
    case 0: return std::sqrt(-2 * std::log(u(r.x[0]))) * std::cos(two_pi * u(r.x[1]));
    case 1: return std::sqrt(-2 * std::log(u(r.x[0]))) * std::sin(two_pi * u(r.x[1]));
    case 2: return std::sqrt(-2 * std::log(u(r.x[2]))) * std::cos(two_pi * u(r.x[3]));
    default: return std::sqrt(-2 * std::log(u(r.x[2]))) * std::sin(two_pi * u(r.x[3]));
  }
}

template <class G>
static void run(const char* gname, int64_t n, bool grad, bool momentum, float sigma, bool allow_avx2) {
  std::mt19937 rng(static_cast<uint32_t>(n * 31 + grad * 7 + momentum * 3));
  std::normal_distribution<float> dist;
  std::vector<float> p(n), v(n);
  std::vector<G> g(n);
  for (int64_t i = 0; i < n; ++i) p[i] = dist(rng), g[i] = from_float<G>(dist(rng)), v[i] = dist(rng);
  const SgldScalars s{0.1f, 0.01f, 0.9f, sigma, 0x123456789abcULL, (1ULL << 33) + 3};
  const uint32_t index = 11;
  const G* gp = grad ? g.data() : nullptr;
  // Serial pass.
  std::vector<float> p1 = p, v1 = v;
  sgld_step_range_dispatch<G>(p1.data(), gp, momentum ? v1.data() : nullptr, 0, n, s, index, allow_avx2);
  double err = 0;
  for (int64_t j = 0; j < n; ++j) {
    double pj = p[j], vj = v[j];
    if (grad) {
      double dj = to_float(g[j]) + 0.01 * pj;
      if (momentum) dj = vj = 0.9 * vj + dj;
      pj -= 0.1 * dj;
    }
    if (sigma != 0.0f) pj += sigma * normal_f64(s, index, j);
    double e = std::fabs(p1[j] - pj) / (1 + std::fabs(pj));
    if (momentum) e = std::fmax(e, std::fabs(v1[j] - vj) / (1 + std::fabs(vj)));
    if (!momentum && v1[j] != v[j]) e = INFINITY;  // the buffer must be untouched
    err = std::isfinite(p1[j]) ? std::fmax(err, e) : INFINITY;
  }
  // fp32 rounding of the update and a few ulps of the polynomial log/sin/cos (times sigma <= 1).
  char what[200];
  std::snprintf(what, sizeof what, "sgld %s n=%lld grad=%d momentum=%d sigma=%.2f isa=%s: max err %.2e vs float64",
                gname, static_cast<long long>(n), grad, momentum, sigma, allow_avx2 ? sgld_step_isa() : "baseline", err);
  expect(err < 2e-6, what);
  // Chunked passes: splits at every offset mod 4 and uneven lengths, as the ATen glue's threads do.
  for (int64_t chunk : {int64_t{1}, int64_t{3}, int64_t{5}, int64_t{257}, int64_t{1022}}) {
    std::vector<float> p2 = p, v2 = v;
    for (int64_t b = 0; b < n; b += chunk) {
      const int64_t e = b + chunk < n ? b + chunk : n;
      sgld_step_range_dispatch<G>(p2.data(), gp, momentum ? v2.data() : nullptr, b, e, s, index, allow_avx2);
    }
    const bool same = std::memcmp(p1.data(), p2.data(), n * sizeof(float)) == 0 &&
                      std::memcmp(v1.data(), v2.data(), n * sizeof(float)) == 0;
    std::snprintf(what, sizeof what, "sgld %s n=%lld grad=%d momentum=%d sigma=%.2f: chunks of %lld differ from the serial pass",
                  gname, static_cast<long long>(n), grad, momentum, sigma, static_cast<long long>(chunk));
    expect(same, what);
  }
  std::printf("sgld %-4s n=%-5lld grad=%d momentum=%d sigma=%.2f isa=%-8s max err %.2e, chunked == serial\n", gname,
              static_cast<long long>(n), grad, momentum, sigma, allow_avx2 ? sgld_step_isa() : "baseline", err);
}

int main() {
  // The vectorised Philox words must be bit-identical to the shared scalar definition.
  {
    alignas(64) uint32_t x[4][kNoiseGroups];
    const uint64_t q0 = 0xfffffff0ULL;  // crosses the 32-bit wrap of the counter
    philox_words(q0, kNoiseGroups, 7, (1ULL << 33) + 5, 0x1234567890ULL, x[0], x[1], x[2], x[3]);
    bool same = true;
    for (int i = 0; i < kNoiseGroups; ++i) {
      const stnas::Philox4 r = stnas::philox4x32_10(static_cast<uint32_t>(q0 + i), 7, 5, 2, 0x34567890u, 0x12u);
      for (int k = 0; k < 4; ++k) same = same && r.x[k] == x[k][i];
    }
    expect(same, "philox_words differs from stnas::philox4x32_10");
  }
  // And the block of normals must match stnas::philox_normal4 (libm) to fp32 rounding.
  {
    alignas(64) float out[kNoiseBlock];
    philox_normal_block(99, 5, 3, 4 * 1000, kNoiseGroups, out);
    double err = 0;
    for (int i = 0; i < kNoiseGroups; ++i) {
      float ref[4];
      stnas::philox_normal4(99, 5, 3, 1000 + i, ref);
      for (int k = 0; k < 4; ++k) err = std::fmax(err, std::fabs(out[4 * i + k] - ref[k]));
    }
    std::printf("noise block vs stnas::philox_normal4: max abs err %.2e\n", err);
    expect(err < 2e-6, "philox_normal_block differs from stnas::philox_normal4");
  }
  for (bool avx2 : {false, true}) {
    for (int64_t n : {1, 7, 1023, 4097}) {
      run<float>("fp32", n, true, true, 0.5f, avx2);
      run<float>("fp32", n, true, false, 0.5f, avx2);
      run<float>("fp32", n, true, true, 0.0f, avx2);
      run<float>("fp32", n, true, false, 0.0f, avx2);
      run<float>("fp32", n, false, false, 1.0f, avx2);
      run<BFloat16>("bf16", n, true, true, 0.5f, avx2);
      run<Half>("fp16", n, true, false, 0.5f, avx2);
    }
  }
  std::printf("test_sgld_step: %d of %d checks passed%s\n", checks - failures, checks, failures ? " -- FAILED" : "");
  return failures ? 1 : 0;
}
