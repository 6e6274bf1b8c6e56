// ATen glue of the C++ CPU skip + average pooling (cpu/skip_pool.h): checks, the layout's planes, then
// at::parallel_for over planes with one partial dot per plane, summed in plane order afterwards (the
// same gradients for any thread count).
#include <ATen/Parallel.h>

#include "cpu/skip_pool.h"
#include "stnas_ops.h"

namespace stnas {
namespace {

struct Planes {
  int64_t count, height, width, inner, size;
};

// NCHW: one plane per channel (inner 1); channels_last: one plane per image (inner C).
Planes planes_of(const char* fn, const at::Tensor& x) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 4, fn, ": x must be a 4-D CPU tensor");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, fn,
              ": x must be float32 or float64, got ", x.scalar_type());
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  if (x.is_contiguous()) return {n * c, h, w, 1, h * w};
  TORCH_CHECK(x.is_contiguous(at::MemoryFormat::ChannelsLast), fn, ": x must be contiguous or channels_last");
  return {n, h, w, c, h * w * c};
}

template <class T>
std::vector<T> tap_scales(int64_t n, bool exact) {
  std::vector<T> s(n);
  for (int64_t i = 0; i < n; ++i) s[i] = static_cast<T>(cpu::pool_tap_scale(i, n, exact));
  return s;
}

template <class F>
void dispatch_float(at::ScalarType t, F&& f) {
  if (t == at::kDouble) {
    f(double{});
  } else {
    f(float{});
  }
}

}  // namespace

at::Tensor skip_pool_forward_cpu(const at::Tensor& x, double w_skip, double w_pool, bool exact) {
  const Planes p = planes_of("skip_pool_forward_cpu", x);
  at::Tensor out = at::empty_like(x);
  dispatch_float(x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    const std::vector<T> rows = tap_scales<T>(p.height, exact), cols = tap_scales<T>(p.width, exact);
    const T* xp = static_cast<const T*>(x.const_data_ptr());
    T* op = static_cast<T*>(out.data_ptr());
    at::parallel_for(0, p.count, 1, [&](int64_t first, int64_t last) {
      std::vector<T> v(p.width * p.inner);
      for (int64_t i = first; i < last; ++i) {
        cpu::skip_pool_forward_plane<T>(xp + i * p.size, op + i * p.size, p.height, p.width, p.inner,
                                        static_cast<T>(w_skip), static_cast<T>(w_pool), rows.data(),
                                        cols.data(), v.data());
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, double, double> skip_pool_backward_cpu(const at::Tensor& grad_out, const at::Tensor& x,
                                                              double w_skip, double w_pool, bool exact) {
  const Planes p = planes_of("skip_pool_backward_cpu", x);
  TORCH_CHECK(grad_out.scalar_type() == x.scalar_type() && grad_out.sizes() == x.sizes() &&
                  grad_out.strides() == x.strides(),
              "skip_pool_backward_cpu: grad_out must have x's dtype, shape and strides");
  at::Tensor dx = at::empty_like(x);
  std::vector<double> dots(2 * p.count, 0.0);
  dispatch_float(x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    const std::vector<T> rows = tap_scales<T>(p.height, exact), cols = tap_scales<T>(p.width, exact);
    std::vector<T> col_row(p.width * p.inner);
    for (int64_t w = 0; w < p.width; ++w)
      for (int64_t k = 0; k < p.inner; ++k) col_row[w * p.inner + k] = cols[w];
    const T* gp = static_cast<const T*>(grad_out.const_data_ptr());
    const T* xp = static_cast<const T*>(x.const_data_ptr());
    T* dp = static_cast<T*>(dx.data_ptr());
    at::parallel_for(0, p.count, 1, [&](int64_t first, int64_t last) {
      std::vector<T> gs(p.size), v(p.width * p.inner);
      for (int64_t i = first; i < last; ++i) {
        cpu::skip_pool_backward_plane<T>(gp + i * p.size, xp + i * p.size, dp + i * p.size, p.height, p.width,
                                         p.inner, static_cast<T>(w_skip), static_cast<T>(w_pool), rows.data(),
                                         col_row.data(), gs.data(), v.data(), &dots[2 * i], &dots[2 * i + 1]);
      }
    });
  });
  double gx = 0.0, px = 0.0;
  for (int64_t i = 0; i < p.count; ++i) {  // plane order: the same sums for any thread count
    gx += dots[2 * i];
    px += dots[2 * i + 1];
  }
  return {dx, gx, px};
}

}  // namespace stnas
