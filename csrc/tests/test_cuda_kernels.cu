// Torch-free test of the CUDA kernels (needs a GPU): fp32 SGLD step (noise off and on), the masked
// path sum forward/backward and the fused BatchNorm + addend + activation, against float64 host
// references, on odd sizes and misaligned pointers, with outputs poisoned (NaN) before each run. Exit code 0 only if every check passes.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "cuda/tensor_list_table.h"
#include "stnas/philox.h"

extern "C" {
cudaError_t stnas_sgld_step_f32(float* const*, const float* const*, float* const*, const int64_t*, const uint32_t*,
                                int, float, float, float, float, uint64_t, uint64_t, int64_t, cudaStream_t);
cudaError_t stnas_masked_path_sum_forward_f32(const float* const*, const int32_t*, int, const float*, float*, int64_t,
                                              cudaStream_t);
int stnas_masked_path_sum_backward_f32(const float*, const float* const*, float* const*, const int32_t*, int, int,
                                       const float*, float*, int64_t, cudaStream_t);
int64_t stnas_batch_norm_act_workspace_floats(int64_t, int64_t, int64_t, int, int);
cudaError_t stnas_batch_norm_act_forward_f32(const float*, const float*, float*, const float*, const float*, float*,
                                             float*, float*, float*, float*, int64_t, int64_t, int64_t, int, float,
                                             float, int, int, cudaStream_t);
cudaError_t stnas_batch_norm_act_backward_f32(const float*, const float*, const float*, const float*, const float*,
                                              const float*, float*, float*, float*, float*, float*, int64_t, int64_t,
                                              int64_t, int, int, int, cudaStream_t);
}

static int failures = 0;
#define CHECK_CUDA(x)                                                                  \
  do {                                                                                 \
    cudaError_t e_ = (x);                                                              \
    if (e_ != cudaSuccess) {                                                           \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); \
      std::exit(2);                                                                    \
    }                                                                                  \
  } while (0)

static void expect(bool ok, const char* what, int64_t n, double err) {
  std::printf("%-48s n=%-7lld max err %.3g  %s\n", what, static_cast<long long>(n), err, ok ? "ok" : "FAIL");
  if (!ok) ++failures;
}

static std::vector<float> random_vector(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Largest error of one tensor's SGLD update (p2, v2) against the float64 reference of (p, g, v); a NaN
// in either output is an infinite error.
static double sgld_error(const std::vector<float>& p, const std::vector<float>& g, const std::vector<float>& v,
                         const std::vector<float>& p2, const std::vector<float>& v2, float lr, float wd, float mu,
                         float sigma, uint64_t seed, uint64_t step, uint32_t index) {
  double err = 0;
  for (size_t j = 0; j < p.size(); ++j) {
    const double vv = mu * double(v[j]) + double(g[j]) + wd * double(p[j]);
    float noise[4] = {0, 0, 0, 0};
    stnas::philox_normal4(seed, step, index, j / 4, noise);
    const double want = double(p[j]) - lr * vv + double(sigma) * noise[j % 4];
    const double e = std::fabs(p2[j] - want) / (1.0 + std::fabs(want)) + std::fabs(v2[j] - vv) / (1.0 + std::fabs(vv));
    err = std::isnan(p2[j]) || std::isnan(v2[j]) ? INFINITY : std::fmax(err, e);
  }
  return err;
}

// offset: elements to shift each device pointer by, to exercise the unaligned paths.
static void test_sgld(int64_t n, int offset, float sigma, std::mt19937& rng) {
  const float lr = 0.1f, wd = 0.01f, mu = 0.9f;
  const uint64_t seed = 123456789, step = 7;
  const uint32_t index = 5;
  std::vector<float> p = random_vector(n, rng), g = random_vector(n, rng), v = random_vector(n, rng);
  float *dp, *dg, *dv;
  CHECK_CUDA(cudaMalloc(&dp, (n + offset) * 4));
  CHECK_CUDA(cudaMalloc(&dg, (n + offset) * 4));
  CHECK_CUDA(cudaMalloc(&dv, (n + offset) * 4));
  CHECK_CUDA(cudaMemcpy(dp + offset, p.data(), n * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(dg + offset, g.data(), n * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(dv + offset, v.data(), n * 4, cudaMemcpyHostToDevice));
  float* params[1] = {dp + offset};
  const float* grads[1] = {dg + offset};
  float* momenta[1] = {dv + offset};
  CHECK_CUDA(stnas_sgld_step_f32(params, grads, momenta, &n, &index, 1, lr, wd, mu, sigma, seed, step, 0, 0));
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<float> p2(n), v2(n);
  CHECK_CUDA(cudaMemcpy(p2.data(), dp + offset, n * 4, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(v2.data(), dv + offset, n * 4, cudaMemcpyDeviceToHost));
  const double err = sgld_error(p, g, v, p2, v2, lr, wd, mu, sigma, seed, step, index);
  char name[96];
  std::snprintf(name, sizeof name, "sgld_step sigma=%g offset=%d", sigma, offset);
  expect(err < 1e-5, name, n, err);
  cudaFree(dp);
  cudaFree(dg);
  cudaFree(dv);
}

static void test_masked_path_sum(int64_t n, int paths, int offset, std::mt19937& rng) {
  const int k = paths + 2;  // two inactive weights in between
  std::vector<float> w(k);
  for (int i = 0; i < k; ++i) w[i] = 0.25f * (i + 1);
  std::vector<int32_t> idx(paths);
  for (int a = 0; a < paths; ++a) idx[a] = a < 1 ? 0 : a + 2;  // skips weights 1 and 2
  std::vector<std::vector<float>> ys(paths);
  std::vector<float*> dys(paths), dgy(paths);
  for (int a = 0; a < paths; ++a) {
    ys[a] = random_vector(n, rng);
    CHECK_CUDA(cudaMalloc(&dys[a], (n + offset) * 4));
    CHECK_CUDA(cudaMalloc(&dgy[a], (n + offset) * 4));
    CHECK_CUDA(cudaMemcpy(dys[a] + offset, ys[a].data(), n * 4, cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemset(dgy[a], 0xff, (n + offset) * 4));  // NaN poison
    dys[a] += offset;
    dgy[a] += offset;
  }
  std::vector<float> gout = random_vector(n, rng);
  float *dw, *dout, *dg, *dpartial;
  CHECK_CUDA(cudaMalloc(&dw, k * 4));
  CHECK_CUDA(cudaMalloc(&dout, (n + offset) * 4));
  CHECK_CUDA(cudaMalloc(&dg, (n + offset) * 4));
  CHECK_CUDA(cudaMalloc(&dpartial, 1024 * k * 4));
  CHECK_CUDA(cudaMemcpy(dw, w.data(), k * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemset(dout, 0xff, (n + offset) * 4));
  CHECK_CUDA(cudaMemset(dpartial, 0, 1024 * k * 4));
  CHECK_CUDA(cudaMemcpy(dg + offset, gout.data(), n * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(stnas_masked_path_sum_forward_f32(dys.data(), idx.data(), paths, dw, dout + offset, n, 0));
  const int blocks = stnas_masked_path_sum_backward_f32(dg + offset, dys.data(), dgy.data(), idx.data(), paths, k, dw,
                                                        dpartial, n, 0);
  CHECK_CUDA(cudaDeviceSynchronize());
  if (blocks < 0) {
    expect(false, "masked_path_sum_backward launch", n, INFINITY);
    return;
  }
  std::vector<float> out(n), partial(size_t(blocks) * k);
  CHECK_CUDA(cudaMemcpy(out.data(), dout + offset, n * 4, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(partial.data(), dpartial, partial.size() * 4, cudaMemcpyDeviceToHost));
  double err_f = 0, err_g = 0, err_w = 0;
  for (int64_t i = 0; i < n; ++i) {
    // fp32 accumulation of `paths` terms: error up to ~paths ulps of the sum of their magnitudes.
    double want = 0, magnitude = 0;
    for (int a = 0; a < paths; ++a) {
      want += double(w[idx[a]]) * ys[a][i];
      magnitude += std::fabs(double(w[idx[a]]) * ys[a][i]);
    }
    const double e = std::fabs(out[i] - want) / (paths * (1e-30 + magnitude));
    err_f = std::isnan(out[i]) ? INFINITY : std::fmax(err_f, e);
  }
  for (int a = 0; a < paths; ++a) {
    std::vector<float> gy(n);
    CHECK_CUDA(cudaMemcpy(gy.data(), dgy[a], n * 4, cudaMemcpyDeviceToHost));
    double dot = 0, got = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double want = double(w[idx[a]]) * gout[i];
      err_g = std::isnan(gy[i]) ? INFINITY : std::fmax(err_g, std::fabs(gy[i] - want));
      dot += double(gout[i]) * ys[a][i];
    }
    for (int b = 0; b < blocks; ++b) got += partial[size_t(b) * k + idx[a]];
    err_w = std::fmax(err_w, std::fabs(got - dot) / (1 + std::fabs(dot)) / std::sqrt(double(n)));
  }
  for (int b = 0; b < blocks; ++b)  // inactive columns stay zero
    err_w = std::fmax(err_w, std::fabs(partial[size_t(b) * k + 1]) + std::fabs(partial[size_t(b) * k + 2]));
  char name[96];
  std::snprintf(name, sizeof name, "masked_path_sum fwd A=%d offset=%d", paths, offset);
  expect(err_f < 1.2e-7, name, n, err_f);  // per term, relative to the magnitudes: 2 ulps of fp32
  std::snprintf(name, sizeof name, "masked_path_sum bwd grads A=%d offset=%d", paths, offset);
  expect(err_g < 1e-6, name, n, err_g);
  std::snprintf(name, sizeof name, "masked_path_sum bwd dots A=%d offset=%d", paths, offset);
  expect(err_w < 1e-6, name, n, err_w);
}

// A list of tensors that fills several launches. With small chunks (4,096 elements) one tensor has more
// chunks than a table holds, so it continues from one launch into the next, and later more single-chunk
// tensors follow than a table has entries for. The cutting itself is checked on the CPU
// (test_tensor_list_table.cpp); this checks that the kernel reads the tables it is given.
static void test_sgld_list(std::mt19937& rng) {
  using Table = stnas::cuda::TensorListMeta<3>;
  const int64_t chunk = 4096;
  const float lr = 0.05f, wd = 0.001f, mu = 0.9f, sigma = 0.25f;
  const uint64_t seed = 99, step = 3;
  std::vector<int64_t> sizes;
  for (int i = 0; i < 300; ++i) sizes.push_back(1 + (i * 7919) % 9001);  // odd sizes, some over one chunk
  sizes.push_back((Table::kMaxChunks + 300) * chunk + 3);                 // more chunks than a table holds
  for (int i = 0; i < Table::kMaxTensors + 20; ++i) sizes.push_back(1 + (i * 104729) % 4093);  // one chunk each
  sizes.push_back(5);
  const int count = static_cast<int>(sizes.size());
  std::vector<std::vector<float>> p(count), g(count), v(count);
  std::vector<float*> dp(count), dv(count);
  std::vector<const float*> dg(count);
  std::vector<uint32_t> index(count);
  for (int i = 0; i < count; ++i) {
    p[i] = random_vector(sizes[i], rng);
    g[i] = random_vector(sizes[i], rng);
    v[i] = random_vector(sizes[i], rng);
    float *a, *b, *c;
    CHECK_CUDA(cudaMalloc(&a, sizes[i] * 4));
    CHECK_CUDA(cudaMalloc(&b, sizes[i] * 4));
    CHECK_CUDA(cudaMalloc(&c, sizes[i] * 4));
    CHECK_CUDA(cudaMemcpy(a, p[i].data(), sizes[i] * 4, cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(b, g[i].data(), sizes[i] * 4, cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(c, v[i].data(), sizes[i] * 4, cudaMemcpyHostToDevice));
    dp[i] = a, dg[i] = b, dv[i] = c;
    index[i] = 1000 + 3 * i;
  }
  CHECK_CUDA(stnas_sgld_step_f32(dp.data(), dg.data(), dv.data(), sizes.data(), index.data(), count, lr, wd, mu, sigma,
                                 seed, step, chunk, 0));
  CHECK_CUDA(cudaDeviceSynchronize());
  double err = 0;
  int64_t total = 0;
  for (int i = 0; i < count; ++i) {
    const int64_t n = sizes[i];
    std::vector<float> p2(n), v2(n);
    CHECK_CUDA(cudaMemcpy(p2.data(), dp[i], n * 4, cudaMemcpyDeviceToHost));
    CHECK_CUDA(cudaMemcpy(v2.data(), dv[i], n * 4, cudaMemcpyDeviceToHost));
    err = std::fmax(err, sgld_error(p[i], g[i], v[i], p2, v2, lr, wd, mu, sigma, seed, step, index[i]));
    total += n;
    cudaFree(dp[i]);
    cudaFree(const_cast<float*>(dg[i]));
    cudaFree(dv[i]);
  }
  char name[96];
  std::snprintf(name, sizeof name, "sgld_step list of %d tensors, several launches", count);
  expect(err < 1e-5, name, total, err);
}

// Training-mode BatchNorm + addend + ReLU6 (and none) in both layouts against a float64 host reference of
// the forward, the running statistics and the backward; outputs poisoned (NaN) before the run.
static float* to_device(const std::vector<float>& v) {
  float* d;
  CHECK_CUDA(cudaMalloc(&d, v.size() * 4 + 4));
  CHECK_CUDA(cudaMemcpy(d, v.data(), v.size() * 4, cudaMemcpyHostToDevice));
  return d;
}
static float* poisoned(int64_t n) {
  float* d;
  CHECK_CUDA(cudaMalloc(&d, n * 4 + 4));
  CHECK_CUDA(cudaMemset(d, 0xff, n * 4 + 4));
  return d;
}
static std::vector<float> to_host(const float* d, int64_t n) {
  std::vector<float> v(n);
  CHECK_CUDA(cudaMemcpy(v.data(), d, n * 4, cudaMemcpyDeviceToHost));
  return v;
}

static void test_batch_norm_act(int64_t n, int64_t c, int64_t hw, int rows, int act, std::mt19937& rng) {
  const int64_t m = n * hw, total = m * c;
  std::vector<float> x = random_vector(total, rng), add = random_vector(total, rng), g = random_vector(total, rng);
  for (auto& v : x) v = 3.0f + 2.0f * v;  // |mean| > std: the shifted sums matter
  std::vector<float> w = random_vector(c, rng), b = random_vector(c, rng), rm(c, 0.5f), rv(c, 2.0f);
  auto at = [&](int64_t mm, int64_t cc) { return rows ? mm * c + cc : ((mm / hw) * c + cc) * hw + mm % hw; };
  int sms = 0;
  CHECK_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const int64_t ws = stnas_batch_norm_act_workspace_floats(n, c, hw, rows, sms);
  float *dx = to_device(x), *dadd = to_device(add), *dg = to_device(g), *dw = to_device(w), *db = to_device(b);
  float *drm = to_device(rm), *drv = to_device(rv), *dy = poisoned(total), *dmean = poisoned(c), *dinv = poisoned(c);
  float *dwork = poisoned(ws), *dgx = poisoned(total), *dga = poisoned(total), *dgw = poisoned(c), *dgb = poisoned(c);
  const float momentum = 0.1f, eps = 1e-5f;
  CHECK_CUDA(stnas_batch_norm_act_forward_f32(dx, dadd, dy, dw, db, drm, drv, dmean, dinv, dwork, n, c, hw, rows,
                                              momentum, eps, act, sms, 0));
  CHECK_CUDA(stnas_batch_norm_act_backward_f32(dg, dx, act ? dy : nullptr, dw, dmean, dinv, dgx, dga, dgw, dgb, dwork,
                                               n, c, hw, rows, act, sms, 0));
  CHECK_CUDA(cudaDeviceSynchronize());
  const std::vector<float> y = to_host(dy, total), gx = to_host(dgx, total), ga = to_host(dga, total);
  const std::vector<float> rm2 = to_host(drm, c), rv2 = to_host(drv, c), gw = to_host(dgw, c), gb = to_host(dgb, c);
  double err_y = 0, err_r = 0, err_gx = 0, err_gp = 0;
  for (int64_t cc = 0; cc < c; ++cc) {
    double mean = 0, var = 0;
    for (int64_t mm = 0; mm < m; ++mm) mean += x[at(mm, cc)];
    mean /= m;
    for (int64_t mm = 0; mm < m; ++mm) var += (x[at(mm, cc)] - mean) * (x[at(mm, cc)] - mean);
    var /= m;
    const double is = 1.0 / std::sqrt(var + eps);
    std::vector<double> dz(m);
    double sdz = 0, sdzx = 0;
    for (int64_t mm = 0; mm < m; ++mm) {
      const int64_t o = at(mm, cc);
      double z = (x[o] - mean) * is * w[cc] + b[cc] + add[o];
      const bool pass = act == 0 || (z > 0 && z < 6);
      const double want = act == 0 ? z : std::fmin(std::fmax(z, 0.0), 6.0);
      err_y = std::isnan(y[o]) ? INFINITY : std::fmax(err_y, std::fabs(y[o] - want) / (1 + std::fabs(want)));
      dz[mm] = pass ? g[o] : 0.0;
      sdz += dz[mm];
      sdzx += dz[mm] * (x[o] - mean);
    }
    for (int64_t mm = 0; mm < m; ++mm) {
      const int64_t o = at(mm, cc);
      const double want = w[cc] * is * (dz[mm] - sdz / m - (x[o] - mean) * is * is * sdzx / m);
      const double e = std::fabs(gx[o] - want) / (1 + std::fabs(want)) + std::fabs(ga[o] - dz[mm]);
      err_gx = std::isnan(gx[o]) || std::isnan(ga[o]) ? INFINITY : std::fmax(err_gx, e);
    }
    const double want_rm = 0.9 * 0.5 + 0.1 * mean, want_rv = 0.9 * 2.0 + 0.1 * var * m / (m - 1);
    err_r = std::fmax(err_r, std::fabs(rm2[cc] - want_rm) + std::fabs(rv2[cc] - want_rv) / want_rv);
    err_gp = std::fmax(err_gp, (std::fabs(gw[cc] - sdzx * is) + std::fabs(gb[cc] - sdz)) / std::sqrt(double(m)));
  }
  char name[96];
  std::snprintf(name, sizeof name, "batch_norm_act %s act=%d C=%lld fwd", rows ? "NHWC" : "NCHW", act,
                static_cast<long long>(c));
  expect(err_y < 2e-5, name, total, err_y);
  std::snprintf(name, sizeof name, "batch_norm_act %s act=%d C=%lld running stats", rows ? "NHWC" : "NCHW", act,
                static_cast<long long>(c));
  expect(err_r < 1e-5, name, total, err_r);
  std::snprintf(name, sizeof name, "batch_norm_act %s act=%d C=%lld bwd", rows ? "NHWC" : "NCHW", act,
                static_cast<long long>(c));
  expect(err_gx < 2e-5 && err_gp < 1e-5, name, total, std::fmax(err_gx, err_gp));
  for (float* p : {dx, dadd, dg, dw, db, drm, drv, dy, dmean, dinv, dwork, dgx, dga, dgw, dgb}) CHECK_CUDA(cudaFree(p));
}

int main() {
  std::mt19937 rng(2026);
  for (int64_t n : {1, 7, 1023, 4097, 1000003}) {
    for (int offset : {0, 1}) {
      test_sgld(n, offset, 0.0f, rng);
      test_sgld(n, offset, 0.5f, rng);
      for (int paths : {1, 3, 16}) test_masked_path_sum(n, paths, offset, rng);
    }
  }
  test_sgld_list(rng);
  for (int rows : {0, 1}) {
    for (int act : {0, 2}) {
      test_batch_norm_act(3, 1, 1, rows, act, rng);      // C = 1, H = W = 1
      test_batch_norm_act(2, 37, 7 * 5, rows, act, rng);  // N*H*W = 70, C not a multiple of 32
      test_batch_norm_act(5, 96, 13 * 11, rows, act, rng);
    }
  }
  std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
  return failures ? 1 : 0;
}
