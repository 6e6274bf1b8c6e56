// Unit test of the torch-free CPU masked path sum cores against float64 references, for float32,
// bfloat16 and float16 storage, odd sizes and 1..9 paths, serial and split into ranges.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "cpu/masked_path_sum.h"

using namespace stnas::cpu;

static int failures = 0, runs = 0;

template <class T>
static void run(int64_t n, int paths, double tol, const char* type) {
  std::mt19937 rng(static_cast<uint32_t>(n + 97 * paths));
  std::normal_distribution<float> d;
  std::vector<std::vector<T>> ys(paths, std::vector<T>(n));
  std::vector<float> w(paths);
  std::vector<T> gout(n), out(n);
  for (int a = 0; a < paths; ++a) {
    w[a] = d(rng);
    for (auto& y : ys[a]) y = from_float<T>(d(rng));
  }
  for (auto& g : gout) g = from_float<T>(d(rng));
  std::vector<const T*> yp(paths);
  for (int a = 0; a < paths; ++a) yp[a] = ys[a].data();
  masked_path_sum_forward_range<T>(yp.data(), w.data(), paths, out.data(), 0, n);
  std::vector<std::vector<T>> grads(paths, std::vector<T>(n));
  std::vector<T*> gp(paths);
  for (int a = 0; a < paths; ++a) gp[a] = grads[a].data();
  std::vector<double> dots(paths, 0.0);
  masked_path_sum_backward_range<T>(gout.data(), yp.data(), w.data(), paths, gp.data(), dots.data(), 0, n);
  double err_f = 0, err_g = 0, err_d = 0;
  for (int64_t i = 0; i < n; ++i) {
    double want = 0;
    for (int a = 0; a < paths; ++a) want += double(w[a]) * to_float(ys[a][i]);
    err_f = std::fmax(err_f, std::fabs(to_float(out[i]) - want) / (1 + std::fabs(want)));
    for (int a = 0; a < paths; ++a) {
      const double g = double(w[a]) * to_float(gout[i]);
      err_g = std::fmax(err_g, std::fabs(to_float(grads[a][i]) - g) / (1 + std::fabs(g)));
    }
  }
  for (int a = 0; a < paths; ++a) {
    double want = 0;
    for (int64_t i = 0; i < n; ++i) want += double(to_float(gout[i])) * to_float(ys[a][i]);
    err_d = std::fmax(err_d, std::fabs(dots[a] - want) / (1 + std::sqrt(double(n))));
  }
  // Ranges split at odd points (the ATen glue's work items): forward and grad_ys bit-identical, the
  // dot partials summed across ranges close to the serial ones.
  std::vector<T> out2(n);
  std::vector<std::vector<T>> grads2(paths, std::vector<T>(n));
  std::vector<T*> gp2(paths);
  for (int a = 0; a < paths; ++a) gp2[a] = grads2[a].data();
  std::vector<double> dots2(paths, 0.0);
  for (int64_t b = 0; b < n; b += 333) {
    const int64_t e = b + 333 < n ? b + 333 : n;
    masked_path_sum_forward_range<T>(yp.data(), w.data(), paths, out2.data(), b, e);
    masked_path_sum_backward_range<T>(gout.data(), yp.data(), w.data(), paths, gp2.data(), dots2.data(), b, e);
  }
  bool split_ok = std::memcmp(out.data(), out2.data(), n * sizeof(T)) == 0;
  for (int a = 0; a < paths; ++a) {
    split_ok = split_ok && std::memcmp(grads[a].data(), grads2[a].data(), n * sizeof(T)) == 0;
    split_ok = split_ok && std::fabs(dots[a] - dots2[a]) <= 1e-5 * (1 + std::sqrt(double(n)));
  }
  const bool ok = err_f < tol && err_g < tol && err_d < 1e-5 && split_ok;
  std::printf("masked_path_sum %-5s n=%-6lld paths=%d err fwd %.2e grad %.2e dot %.2e, split ranges %s: %s\n", type,
              static_cast<long long>(n), paths, err_f, err_g, err_d, split_ok ? "agree" : "DIFFER", ok ? "ok" : "FAIL");
  failures += ok ? 0 : 1;
  ++runs;
}

int main() {
  for (int64_t n : {1, 7, 1023, 4097}) {
    for (int paths : {1, 3, 9}) {
      run<float>(n, paths, 1e-6, "fp32");
      run<BFloat16>(n, paths, 8e-3, "bf16");  // one rounding of the output: 2^-8 relative
      run<Half>(n, paths, 1e-3, "fp16");      // 2^-11 relative
    }
  }
  std::printf("test_masked_path_sum: %d of %d cases passed%s\n", runs - failures, runs, failures ? " -- FAILED" : "");
  return failures ? 1 : 0;
}
