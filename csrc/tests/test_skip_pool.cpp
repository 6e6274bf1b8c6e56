// Unit test of the torch-free CPU skip + average pooling cores against a float64 reference written from
// the definition (every 3x3 window summed tap by tap, divided by its valid count or by 9), for float32
// and float64, planes of 1..6 rows and columns and 1 or 5 values per pixel (NCHW / NHWC planes).
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "cpu/skip_pool.h"

using namespace stnas::cpu;

static int failures = 0, runs = 0;

// P(x) at (h, w, k) from the definition.
static double pooled_ref(const std::vector<double>& x, int64_t H, int64_t W, int64_t C, int64_t h, int64_t w,
                         int64_t k, bool exact) {
  double sum = 0;
  int count = 0;
  for (int64_t dh = -1; dh <= 1; ++dh)
    for (int64_t dw = -1; dw <= 1; ++dw) {
      const int64_t r = h + dh, c = w + dw;
      if (r < 0 || r >= H || c < 0 || c >= W) continue;
      sum += x[(r * W + c) * C + k];
      ++count;
    }
  return sum / (exact ? count : 9);
}

template <class T>
static void run(int64_t H, int64_t W, int64_t C, bool exact, double tol, const char* type) {
  std::mt19937 rng(static_cast<uint32_t>(H * 131 + W * 17 + C + exact));
  std::normal_distribution<double> d;
  const int64_t n = H * W * C;
  std::vector<double> x(n), g(n);
  for (auto& v : x) v = d(rng);
  for (auto& v : g) v = d(rng);
  const double ws = 0.3, wp = -0.7;
  std::vector<T> xt(x.begin(), x.end()), gt(g.begin(), g.end()), out(n), dx(n), gs(n), v(W * C);
  std::vector<T> rows(H), cols(W), col_row(W * C);
  for (int64_t i = 0; i < H; ++i) rows[i] = static_cast<T>(pool_tap_scale(i, H, exact));
  for (int64_t i = 0; i < W; ++i) cols[i] = static_cast<T>(pool_tap_scale(i, W, exact));
  for (int64_t w = 0; w < W; ++w)
    for (int64_t k = 0; k < C; ++k) col_row[w * C + k] = cols[w];
  skip_pool_forward_plane<T>(xt.data(), out.data(), H, W, C, T(ws), T(wp), rows.data(), cols.data(), v.data());
  double dot_gx = 0, dot_px = 0;
  skip_pool_backward_plane<T>(gt.data(), xt.data(), dx.data(), H, W, C, T(ws), T(wp), rows.data(), col_row.data(),
                              gs.data(), v.data(), &dot_gx, &dot_px);
  // The reference: out = ws x + wp P(x); dx = ws g + wp P^T g with P^T g = sum over windows containing
  // the pixel of g / count(window); the dots from their definitions.
  double err_f = 0, err_b = 0, want_gx = 0, want_px = 0;
  std::vector<double> pt(n, 0.0);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t w = 0; w < W; ++w)
      for (int64_t k = 0; k < C; ++k) {
        const int64_t i = (h * W + w) * C + k;
        const double p = pooled_ref(x, H, W, C, h, w, k, exact);
        err_f = std::fmax(err_f, std::fabs(double(out[i]) - (ws * x[i] + wp * p)));
        want_gx += g[i] * x[i];
        want_px += g[i] * p;
        int count = 0;
        for (int64_t dh = -1; dh <= 1; ++dh)
          for (int64_t dw = -1; dw <= 1; ++dw) {
            const int64_t r = h + dh, c = w + dw;
            count += (r >= 0 && r < H && c >= 0 && c < W);
          }
        for (int64_t dh = -1; dh <= 1; ++dh)
          for (int64_t dw = -1; dw <= 1; ++dw) {
            const int64_t r = h + dh, c = w + dw;
            if (r < 0 || r >= H || c < 0 || c >= W) continue;
            pt[(r * W + c) * C + k] += g[i] / (exact ? count : 9);
          }
      }
  for (int64_t i = 0; i < n; ++i) err_b = std::fmax(err_b, std::fabs(double(dx[i]) - (ws * g[i] + wp * pt[i])));
  const double err_d = std::fmax(std::fabs(dot_gx - want_gx), std::fabs(dot_px - want_px)) / (1 + std::sqrt(double(n)));
  const bool ok = err_f < tol && err_b < tol && err_d < tol;
  std::printf("skip_pool %-4s H=%lld W=%lld C=%lld %-7s err fwd %.1e bwd %.1e dots %.1e: %s\n", type,
              static_cast<long long>(H), static_cast<long long>(W), static_cast<long long>(C),
              exact ? "exact" : "include", err_f, err_b, err_d, ok ? "ok" : "FAIL");
  failures += ok ? 0 : 1;
  ++runs;
}

int main() {
  for (int64_t H : {1, 2, 3, 6})
    for (int64_t W : {1, 2, 3, 5})
      for (int64_t C : {1, 5})
        for (bool exact : {true, false}) {
          run<float>(H, W, C, exact, 1e-5, "fp32");
          run<double>(H, W, C, exact, 1e-12, "fp64");
        }
  std::printf("%d of %d skip_pool checks passed\n", runs - failures, runs);
  return failures ? 1 : 0;
}
