// Unit test of the torch-free CPU SGLD core: against a float64 evaluation of the contract (noise from
// the shared Philox layout evaluated per element), on odd sizes, every specialisation, and ranges split
// at arbitrary points (the parallel chunking must not change any element).
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "cpu/sgld_step.h"

using namespace stnas::cpu;

static int failures = 0;

static double normal_at(const SgldScalars& s, uint32_t index, int64_t j) {
  float out[4];
  stnas::philox_normal4(s.seed, s.step, index, static_cast<uint64_t>(j / 4), out);
  return out[j % 4];
}

static void run(int64_t n, bool grad, bool momentum, float sigma, int64_t split) {
  std::mt19937 rng(static_cast<uint32_t>(n * 31 + split));
  std::normal_distribution<float> d;
  std::vector<float> p(n), g(n), v(n);
  for (int64_t i = 0; i < n; ++i) p[i] = d(rng), g[i] = d(rng), v[i] = d(rng);
  const SgldScalars s{0.1f, 0.01f, 0.9f, sigma, 0x123456789abcULL, (1ULL << 33) + 3};
  const uint32_t index = 11;
  std::vector<float> p2 = p, v2 = v;
  // Two ranges split at `split`: exactly what two threads of the ATen glue would do.
  sgld_step_range_dispatch<float>(p2.data(), grad ? g.data() : nullptr, momentum ? v2.data() : nullptr, 0, split, s, index);
  sgld_step_range_dispatch<float>(p2.data(), grad ? g.data() : nullptr, momentum ? v2.data() : nullptr, split, n, s, index);
  double err = 0;
  for (int64_t j = 0; j < n; ++j) {
    double pj = p[j], vj = v[j];
    if (grad) {
      double dj = g[j] + 0.01 * pj;
      if (momentum) dj = vj = 0.9 * vj + dj;
      pj -= 0.1 * dj;
    }
    if (sigma != 0.0f) pj += sigma * normal_at(s, index, j);
    const double e = std::fabs(p2[j] - pj) / (1 + std::fabs(pj)) + (momentum ? std::fabs(v2[j] - vj) : 0.0);
    err = std::isfinite(p2[j]) ? std::fmax(err, e) : INFINITY;
  }
  const bool ok = err < 2e-6;  // fp32 rounding and the polynomial log/sincos (a few ulps)
  std::printf("sgld n=%-6lld grad=%d momentum=%d sigma=%.2f split=%-5lld max err %.2e %s\n", static_cast<long long>(n),
              grad, momentum, sigma, static_cast<long long>(split), err, ok ? "ok" : "FAIL");
  failures += ok ? 0 : 1;
}

int main() {
  for (int64_t n : {1, 7, 1023, 4097}) {
    for (int64_t split : {int64_t{0}, n / 3, n / 2 + 1, n}) {
      run(n, true, true, 0.5f, split);
      run(n, true, false, 0.5f, split);
      run(n, true, true, 0.0f, split);
      run(n, false, false, 0.5f, split);
    }
  }
  std::printf("%d passed, %d failed\n", failures ? 0 : 1, failures);
  return failures ? 1 : 0;
}
