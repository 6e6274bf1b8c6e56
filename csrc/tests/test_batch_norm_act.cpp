// Unit test of the torch-free CPU cores of the fused BatchNorm + addend + activation against float64
// references, for float32, bfloat16 and float16 storage, both layouts (rows: channels_last; planes:
// contiguous NCHW), odd sizes, every activation, the work split into ranges of odd lengths.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "cpu/batch_norm_act.h"

using namespace stnas::cpu;

static int failures = 0, runs = 0;

template <int ACT>
static double activate(double z) {
  if (ACT == kActRelu) return z > 0 ? z : 0;
  if (ACT == kActRelu6) return z > 0 ? (z < 6 ? z : 6) : 0;
  return z;
}

// One training step's forward and backward over an (n, c, hw) input, with an addend. tol: per element,
// relative to 1 + |value| (the storage type's rounding of the inputs is in the reference too).
template <class T, int ACT>
static void run(int64_t n, int64_t c, int64_t hw, bool rows, double tol, const char* type) {
  std::mt19937 rng(static_cast<uint32_t>(n * 131 + c * 7 + hw + ACT));
  std::normal_distribution<float> d;
  const int64_t m = n * hw, total = m * c;
  std::vector<T> x(total), add(total), g(total), y(total), dx(total), da(total);
  for (auto& v : x) v = from_float<T>(2.0f + 1.5f * d(rng));
  for (auto& v : add) v = from_float<T>(d(rng));
  for (auto& v : g) v = from_float<T>(d(rng));
  auto at = [&](int64_t mm, int64_t cc) { return rows ? mm * c + cc : ((mm / hw) * c + cc) * hw + mm % hw; };

  // Statistics through the cores, as the ATen glue sums them (ranges in float, across ranges in double).
  std::vector<float> shift(c), mean(c), scale(c), bias(c);
  for (int64_t cc = 0; cc < c; ++cc) shift[cc] = to_float(x[at(0, cc)]);
  std::vector<double> s1(c, 0.0), s2(c, 0.0);
  if (rows) {
    std::vector<float> a(c), b(c);
    for (int64_t r0 = 0; r0 < m; r0 += 13) {  // ranges of 13 rows, the last one short
      const int64_t r1 = r0 + 13 < m ? r0 + 13 : m;
      bn_stats_rows<T>(x.data(), c, r0, r1, shift.data(), a.data(), b.data());
      for (int64_t cc = 0; cc < c; ++cc) {
        s1[cc] += a[cc];
        s2[cc] += b[cc];
      }
    }
  } else {
    for (int64_t p = 0; p < n * c; ++p) {
      double a, b;
      bn_stats_plane<T>(x.data() + p * hw, hw, shift[p % c], &a, &b);
      s1[p % c] += a;
      s2[p % c] += b;
    }
  }
  std::vector<double> var(c), invstd(c);
  for (int64_t cc = 0; cc < c; ++cc) {
    const double dm = s1[cc] / m;
    var[cc] = s2[cc] / m - dm * dm;
    mean[cc] = static_cast<float>(shift[cc] + dm);
    invstd[cc] = 1.0 / std::sqrt(var[cc] + 1e-5);
    const double w = 0.5 + 0.1 * cc, b = 0.05 * cc - 0.3;
    scale[cc] = static_cast<float>(invstd[cc] * w);
    bias[cc] = static_cast<float>(b - double(mean[cc]) * scale[cc]);
  }
  if (rows) {
    bn_apply_rows<T, ACT>(x.data(), add.data(), scale.data(), bias.data(), y.data(), c, 0, m);
  } else {
    for (int64_t p = 0; p < n * c; ++p)
      bn_apply_plane<T, ACT>(x.data() + p * hw, add.data() + p * hw, scale[p % c], bias[p % c], y.data() + p * hw, hw);
  }

  // Backward reductions and gradient through the cores.
  std::vector<double> sdz(c, 0.0), sdzx(c, 0.0);
  if (rows) {
    std::vector<float> a(c), b(c);
    bn_backward_reduce_rows<T, ACT>(g.data(), y.data(), x.data(), mean.data(), c, 0, m, a.data(), b.data());
    for (int64_t cc = 0; cc < c; ++cc) {
      sdz[cc] = a[cc];
      sdzx[cc] = b[cc];
    }
  } else {
    for (int64_t p = 0; p < n * c; ++p) {
      double a, b;
      const int64_t o = p * hw;
      bn_backward_reduce_plane<T, ACT>(g.data() + o, y.data() + o, x.data() + o, mean[p % c], hw, &a, &b);
      sdz[p % c] += a;
      sdzx[p % c] += b;
    }
  }
  std::vector<float> k1(c), k2(c), k3(c);
  for (int64_t cc = 0; cc < c; ++cc) {
    const double k = invstd[cc] * (0.5 + 0.1 * cc);
    k1[cc] = static_cast<float>(k);
    k2[cc] = static_cast<float>(-k * invstd[cc] * invstd[cc] * sdzx[cc] / m);
    k3[cc] = static_cast<float>(-k * sdz[cc] / m);
  }
  if (rows) {
    bn_backward_apply_rows<T, ACT>(g.data(), y.data(), x.data(), mean.data(), k1.data(), k2.data(), k3.data(), dx.data(),
                                   da.data(), c, 0, m);
  } else {
    for (int64_t p = 0; p < n * c; ++p) {
      const int64_t o = p * hw, cc = p % c;
      bn_backward_apply_plane<T, ACT>(g.data() + o, y.data() + o, x.data() + o, mean[cc], k1[cc], k2[cc], k3[cc],
                                      dx.data() + o, da.data() + o, hw);
    }
  }

  // float64 reference of the same step from the (rounded) stored inputs.
  double err_stat = 0, err_y = 0, err_dx = 0;
  for (int64_t cc = 0; cc < c; ++cc) {
    double mu = 0, v = 0;
    for (int64_t mm = 0; mm < m; ++mm) mu += to_float(x[at(mm, cc)]);
    mu /= m;
    for (int64_t mm = 0; mm < m; ++mm) v += (to_float(x[at(mm, cc)]) - mu) * (to_float(x[at(mm, cc)]) - mu);
    v /= m;
    err_stat = std::fmax(err_stat, std::fabs(mean[cc] - mu) + std::fabs(var[cc] - v) / v);
    const double is = 1.0 / std::sqrt(v + 1e-5), w = 0.5 + 0.1 * cc, b = 0.05 * cc - 0.3;
    std::vector<double> dz(m);
    double rdz = 0, rdzx = 0;
    for (int64_t mm = 0; mm < m; ++mm) {
      const int64_t o = at(mm, cc);
      const double z = (to_float(x[o]) - mu) * is * w + b + to_float(add[o]);
      const double want = activate<ACT>(z);
      err_y = std::fmax(err_y, std::fabs(to_float(y[o]) - want) / (1 + std::fabs(want)));
      // The mask from the kernel's own (rounded) output, as PyTorch's backward takes it.
      dz[mm] = to_float(g[o]) * bn_act_mask<ACT>(to_float(y[o]));
      rdz += dz[mm];
      rdzx += dz[mm] * (to_float(x[o]) - mu);
    }
    for (int64_t mm = 0; mm < m; ++mm) {
      const int64_t o = at(mm, cc);
      const double want = w * is * (dz[mm] - rdz / m - (to_float(x[o]) - mu) * is * is * rdzx / m);
      const double e = std::fabs(to_float(dx[o]) - want) / (1 + std::fabs(want)) + std::fabs(to_float(da[o]) - dz[mm]) /
                                                                                      (1 + std::fabs(dz[mm]));
      err_dx = std::isnan(e) ? INFINITY : std::fmax(err_dx, e);
    }
  }
  ++runs;
  const bool ok = err_stat < 1e-5 && err_y < tol && err_dx < tol;
  if (!ok) {
    ++failures;
    std::printf("FAIL %s act=%d %s n=%lld c=%lld hw=%lld: stats %.3g y %.3g dx %.3g\n", type, ACT,
                rows ? "rows" : "planes", static_cast<long long>(n), static_cast<long long>(c),
                static_cast<long long>(hw), err_stat, err_y, err_dx);
  }
}

template <class T>
static void run_all(double tol, const char* type) {
  const int64_t shapes[][3] = {{2, 1, 1}, {3, 5, 1}, {1, 1, 37}, {2, 7, 15}, {5, 19, 9}, {3, 64, 49}};
  for (const auto& s : shapes) {
    for (bool rows : {false, true}) {
      run<T, kActNone>(s[0], s[1], s[2], rows, tol, type);
      run<T, kActRelu>(s[0], s[1], s[2], rows, tol, type);
      run<T, kActRelu6>(s[0], s[1], s[2], rows, tol, type);
    }
  }
}

int main() {
  run_all<float>(1e-5, "float32");
  run_all<BFloat16>(1e-2, "bfloat16");  // output rounding: 2^-8 relative
  run_all<Half>(2e-3, "float16");       // 2^-11 relative
  std::printf("%s: %d of %d runs failed\n", failures ? "FAILED" : "PASSED", failures, runs);
  return failures ? 1 : 0;
}
