// Torch-free core of the C++ CPU skip + average pooling of a TopoNAS merged edge
// (stnas/supernet/toponas.py):
//   forward:  out = ws * x + wp * P(x),   P = 3x3 average pooling, stride 1, padding 1
//   backward: dx = ws * g + wp * P^T(g),  dws = <g, x>,  dwp = <P^T(g), x>
// P divides each window's sum by count = rows(h) * cols(w) (count_include_pad=False: 2 rows at the top
// and bottom border, 3 inside; the same for columns) or by 9 (count_include_pad=True). The divisor is
// separable, 1/count = a(h) * b(w), so P^T(g) = box(g * a * b) is one more box sum.
//
// One plane is H rows of W pixels of `inner` contiguous values: an NCHW channel (inner = 1) or an NHWC
// image (inner = C). Each output row is a vertical 3-row sum into a row buffer, then a horizontal 3-pixel
// sum of it: one read of the input (the three rows stay in cache) and one write, where the eager form
// (conv or avg_pool2d, then the weighted sum, then the gradients' dots) makes four to eight passes.
#pragma once
#include <cstdint>

namespace stnas::cpu {

// 1 / (number of valid taps of a 3-wide window at position i of n) when exact, else 1/3.
inline double pool_tap_scale(int64_t i, int64_t n, bool exact) {
  if (!exact) return 1.0 / 3.0;
  const int64_t taps = 1 + (i > 0) + (i < n - 1);
  return 1.0 / static_cast<double>(taps);
}

// Vertical sum of the valid rows around h, each row scaled by row_scale[r] (nullptr: 1), into v.
template <class T>
void vertical_sum(const T* plane, int64_t h, int64_t rows, int64_t row_len, const T* row_scale, T* v) {
  const int64_t r0 = h > 0 ? h - 1 : 0, r1 = h < rows - 1 ? h + 1 : rows - 1;
  const T s0 = row_scale ? row_scale[r0] : T(1);
  const T* x0 = plane + r0 * row_len;
#pragma omp simd
  for (int64_t j = 0; j < row_len; ++j) v[j] = s0 * x0[j];
  for (int64_t r = r0 + 1; r <= r1; ++r) {
    const T s = row_scale ? row_scale[r] : T(1);
    const T* xr = plane + r * row_len;
#pragma omp simd
    for (int64_t j = 0; j < row_len; ++j) v[j] += s * xr[j];
  }
}

// y[w, k] = a * self[w, k] + pooled[w, k], pooled = b * col_scale[w] * (v[w-1, k] + v[w, k] + v[w+1, k])
// over one row (col_scale nullptr: 1; v is zero outside the row). With Dot, returns the sum of
// pooled * other over the row (accumulated in T over one row, in double by the caller across rows).
template <class T, bool Dot>
T horizontal_sum(const T* v, int64_t width, int64_t inner, const T* col_scale, T a, const T* self, T b, T* y,
                 const T* other) {
  auto scale = [&](int64_t w) { return b * (col_scale ? col_scale[w] : T(1)); };
  T acc = 0;
  // One column run [j0, j1) with the neighbours that exist: lw / rw are 0 or 1, fixed over the run.
  auto run = [&](int64_t j0, int64_t j1, T bw, T lw, T rw) {
    const T* l = lw != T(0) ? v - inner : v;
    const T* r = rw != T(0) ? v + inner : v;
#pragma omp simd reduction(+ : acc)
    for (int64_t j = j0; j < j1; ++j) {
      const T pooled = bw * (lw * l[j] + v[j] + rw * r[j]);
      y[j] = a * self[j] + pooled;
      if constexpr (Dot) acc += pooled * other[j];
    }
  };
  if (width == 1) {
    run(0, inner, scale(0), T(0), T(0));
    return acc;
  }
  run(0, inner, scale(0), T(0), T(1));
  // The interior columns are one contiguous run (every one has 3 taps, so one scale).
  if (width > 2) run(inner, (width - 1) * inner, scale(1), T(1), T(1));
  run((width - 1) * inner, width * inner, scale(width - 1), T(1), T(0));
  return acc;
}

// out = ws * x + wp * P(x) over one plane. v: a row buffer of width * inner values.
template <class T>
void skip_pool_forward_plane(const T* x, T* out, int64_t height, int64_t width, int64_t inner, T ws, T wp,
                             const T* row_scale, const T* col_scale, T* v) {
  const int64_t row_len = width * inner;
  for (int64_t h = 0; h < height; ++h) {
    vertical_sum(x, h, height, row_len, static_cast<const T*>(nullptr), v);
    horizontal_sum<T, false>(v, width, inner, col_scale, ws, x + h * row_len, static_cast<T>(wp * row_scale[h]),
                             out + h * row_len, nullptr);
  }
}

// dx = ws * g + wp * P^T(g) over one plane; dot_gx += <g, x>, dot_px += <P^T(g), x>. col_row: the
// column factors b(w), each repeated inner times (one row's width * inner values); gs: a plane-sized
// buffer, v: a row buffer.
template <class T>
void skip_pool_backward_plane(const T* g, const T* x, T* dx, int64_t height, int64_t width, int64_t inner,
                              T ws, T wp, const T* row_scale, const T* col_row, T* gs, T* v,
                              double* dot_gx, double* dot_px) {
  const int64_t row_len = width * inner;
  double gx = 0.0;
  for (int64_t h = 0; h < height; ++h) {
    const T* gr = g + h * row_len;
    const T* xr = x + h * row_len;
    T* sr = gs + h * row_len;
    T row = 0;  // in T over one row, in double across rows
#pragma omp simd reduction(+ : row)
    for (int64_t j = 0; j < row_len; ++j) {
      sr[j] = col_row[j] * gr[j];
      row += gr[j] * xr[j];
    }
    gx += row;
  }
  *dot_gx += gx;
  // P^T(g) = box(g * a * b): rows scaled by a in the vertical sum, columns by b already in gs; the dot
  // with x is taken on P^T(g) itself, before ws and wp mix it with g.
  double px = 0.0;
  for (int64_t h = 0; h < height; ++h) {
    vertical_sum(gs, h, height, row_len, row_scale, v);
    T* d = dx + h * row_len;
    const T* gr = g + h * row_len;
    px += horizontal_sum<T, true>(v, width, inner, nullptr, T(0), gr, T(1), d, x + h * row_len);
#pragma omp simd
    for (int64_t j = 0; j < row_len; ++j) d[j] = ws * gr[j] + wp * d[j];
  }
  *dot_px += px;
}

}  // namespace stnas::cpu
