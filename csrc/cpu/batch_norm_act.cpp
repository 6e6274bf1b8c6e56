// ATen glue of the C++ CPU fused BatchNorm + addend + activation: checks, the work split into ranges
// that depend on the shape only (so the statistics do not depend on the thread count), the per-channel
// finishing math in double, and the running-statistics update as nn.BatchNorm2d does it.
#include <ATen/Parallel.h>

#include <cmath>

#include "cpu/batch_norm_act.h"
#include "stnas_ops.h"

namespace stnas {
namespace {

constexpr int64_t kRangeElements = 8192;  // elements of one rows-layout work item (fixed: reproducible sums)

struct Layout {
  bool rows;      // channels_last (M rows of C) or contiguous NCHW (N*C planes of S)
  int64_t n, c, s, m;  // batch, channels, H*W, N*H*W
};

Layout layout_of(const char* fn, const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 4, fn, ": x must be 4-D (N, C, H, W), got ", x.dim(), " dimensions");
  const bool contiguous = x.is_contiguous();
  const bool channels_last = x.is_contiguous(at::MemoryFormat::ChannelsLast);
  TORCH_CHECK(contiguous || channels_last, fn, ": x must be contiguous or channels_last");
  Layout l;
  l.rows = !contiguous;  // both (C == 1 or H*W == 1): the two orders are the same, the planes walk is used
  l.n = x.size(0);
  l.c = x.size(1);
  l.s = x.size(2) * x.size(3);
  l.m = l.n * l.s;
  return l;
}

void check_like(const char* fn, const char* name, const at::Tensor& t, const at::Tensor& x) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == x.scalar_type() && t.sizes() == x.sizes() &&
                  t.strides() == x.strides(),
              fn, ": ", name, " must be a CPU ", x.scalar_type(), " tensor with x's shape and strides");
}

at::Tensor channel_vector(const char* fn, const char* name, const c10::optional<at::Tensor>& v, int64_t c) {
  if (!v.has_value() || !v->defined()) return at::Tensor();
  TORCH_CHECK(v->device().is_cpu() && v->dim() == 1 && v->numel() == c && v->is_floating_point(), fn, ": ", name,
              " must be a 1-D floating-point CPU tensor of ", c, " channels");
  return v->to(at::kFloat).contiguous();
}

int64_t rows_per_range(int64_t c) { return std::max<int64_t>(1, kRangeElements / std::max<int64_t>(c, 1)); }

template <class F>
void dispatch(at::ScalarType t, int64_t act, F&& f) {
  auto with_act = [&](auto tag) {
    switch (act) {
      case cpu::kActRelu:
        f(tag, std::integral_constant<int, cpu::kActRelu>{});
        break;
      case cpu::kActRelu6:
        f(tag, std::integral_constant<int, cpu::kActRelu6>{});
        break;
      default:
        f(tag, std::integral_constant<int, cpu::kActNone>{});
    }
  };
  switch (t) {
    case at::kBFloat16:
      with_act(cpu::BFloat16{});
      break;
    case at::kHalf:
      with_act(cpu::Half{});
      break;
    default:
      with_act(float{});
  }
}

template <class T>
const T* cptr(const at::Tensor& t) {
  return t.defined() ? static_cast<const T*>(t.const_data_ptr()) : nullptr;
}
template <class T>
T* mptr(at::Tensor& t) {
  return t.defined() ? static_cast<T*>(t.data_ptr()) : nullptr;
}

// Per-channel sums over the whole tensor of two per-element quantities (the statistics or the backward's
// reductions), in double, in an order fixed by the shape. `rows(T*, r0, r1, float* a, float* b)` and
// `plane(p, double* a, double* b)` compute one range's partial sums.
template <class Rows, class Plane>
void channel_sums(const Layout& l, std::vector<double>& a, std::vector<double>& b, Rows&& rows, Plane&& plane) {
  a.assign(l.c, 0.0);
  b.assign(l.c, 0.0);
  if (l.rows) {
    const int64_t per = rows_per_range(l.c), ranges = (l.m + per - 1) / per;
    std::vector<float> pa(ranges * l.c), pb(ranges * l.c);
    at::parallel_for(0, ranges, 1, [&](int64_t first, int64_t last) {
      for (int64_t r = first; r < last; ++r)
        rows(r * per, std::min(l.m, (r + 1) * per), &pa[r * l.c], &pb[r * l.c]);
    });
    for (int64_t r = 0; r < ranges; ++r)
      for (int64_t c = 0; c < l.c; ++c) {
        a[c] += pa[r * l.c + c];
        b[c] += pb[r * l.c + c];
      }
  } else {
    const int64_t planes = l.n * l.c;
    std::vector<double> pa(planes), pb(planes);
    at::parallel_for(0, planes, 1, [&](int64_t first, int64_t last) {
      for (int64_t p = first; p < last; ++p) plane(p, &pa[p], &pb[p]);
    });
    for (int64_t p = 0; p < planes; ++p) {
      a[p % l.c] += pa[p];
      b[p % l.c] += pb[p];
    }
  }
}

// An elementwise pass over every element: `rows(r0, r1)` or `plane(p)`.
template <class Rows, class Plane>
void each_element(const Layout& l, Rows&& rows, Plane&& plane) {
  if (l.rows) {
    const int64_t per = rows_per_range(l.c);
    at::parallel_for(0, (l.m + per - 1) / per, 1, [&](int64_t first, int64_t last) {
      for (int64_t r = first; r < last; ++r) rows(r * per, std::min(l.m, (r + 1) * per));
    });
  } else {
    at::parallel_for(0, l.n * l.c, 1, [&](int64_t first, int64_t last) {
      for (int64_t p = first; p < last; ++p) plane(p);
    });
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_act_forward_cpu(
    const at::Tensor& x, const c10::optional<at::Tensor>& weight, const c10::optional<at::Tensor>& bias,
    const c10::optional<at::Tensor>& running_mean, const c10::optional<at::Tensor>& running_var,
    const c10::optional<at::Tensor>& addend, bool training, double momentum, double eps, int64_t act) {
  const char* fn = "batch_norm_act_forward_cpu";
  const Layout l = layout_of(fn, x);
  const at::ScalarType t = x.scalar_type();
  TORCH_CHECK(x.device().is_cpu(), fn, ": x must be a CPU tensor");
  TORCH_CHECK(t == at::kFloat || t == at::kBFloat16 || t == at::kHalf, fn,
              ": x must be float32, bfloat16 or float16, got ", t);
  TORCH_CHECK(act >= 0 && act <= 2, fn, ": act must be 0 (none), 1 (relu) or 2 (relu6), got ", act);
  const bool has_add = addend.has_value() && addend->defined();
  if (has_add) check_like(fn, "addend", *addend, x);
  const at::Tensor w = channel_vector(fn, "weight", weight, l.c), b = channel_vector(fn, "bias", bias, l.c);
  const bool track = running_mean.has_value() && running_mean->defined();
  if (track) {
    for (const at::Tensor* r : {&*running_mean, &*running_var}) {
      TORCH_CHECK(r->defined() && r->device().is_cpu() && r->scalar_type() == at::kFloat && r->dim() == 1 &&
                      r->numel() == l.c && r->is_contiguous(),
                  fn, ": running_mean and running_var must be contiguous float32 CPU tensors of ", l.c, " channels");
    }
  }
  TORCH_CHECK(training || track, fn, ": eval mode needs running_mean and running_var");
  TORCH_CHECK(!training || l.m > 1, fn, ": training needs more than one value per channel");

  at::Tensor mean = at::empty({l.c}, x.options().dtype(at::kFloat));
  at::Tensor invstd = at::empty({l.c}, x.options().dtype(at::kFloat));
  float* mp = mean.data_ptr<float>();
  float* ip = invstd.data_ptr<float>();
  std::vector<double> var(l.c);
  if (training) {
    std::vector<float> shift(l.c);
    dispatch(t, 0, [&](auto tag, auto) {
      using T = decltype(tag);
      const T* xp = cptr<T>(x);
      // The first value of each channel: the sums are of x - shift, so |mean| >> std loses nothing.
      for (int64_t c = 0; c < l.c; ++c) shift[c] = cpu::to_float(xp[l.rows ? c : c * l.s]);
      std::vector<double> s1, s2;
      channel_sums(
          l, s1, s2,
          [&](int64_t r0, int64_t r1, float* a, float* bb) { cpu::bn_stats_rows<T>(xp, l.c, r0, r1, shift.data(), a, bb); },
          [&](int64_t p, double* a, double* bb) { cpu::bn_stats_plane<T>(xp + p * l.s, l.s, shift[p % l.c], a, bb); });
      for (int64_t c = 0; c < l.c; ++c) {
        const double d = s1[c] / l.m;
        var[c] = std::max(0.0, s2[c] / l.m - d * d);
        mp[c] = static_cast<float>(shift[c] + d);
      }
    });
  } else {
    const float* rm = running_mean->const_data_ptr<float>();
    const float* rv = running_var->const_data_ptr<float>();
    for (int64_t c = 0; c < l.c; ++c) {
      mp[c] = rm[c];
      var[c] = rv[c];
    }
  }
  std::vector<float> scale(l.c), shift(l.c);
  const float* wp = w.defined() ? w.const_data_ptr<float>() : nullptr;
  const float* bp = b.defined() ? b.const_data_ptr<float>() : nullptr;
  for (int64_t c = 0; c < l.c; ++c) {
    const double is = 1.0 / std::sqrt(var[c] + eps);
    ip[c] = static_cast<float>(is);
    scale[c] = static_cast<float>(is * (wp ? wp[c] : 1.0f));
    shift[c] = static_cast<float>((bp ? bp[c] : 0.0f) - double(mp[c]) * scale[c]);
  }
  at::Tensor y = at::empty_like(x);
  dispatch(t, act, [&](auto tag, auto act_tag) {
    using T = decltype(tag);
    constexpr int A = decltype(act_tag)::value;
    const T* xp = cptr<T>(x);
    const T* ap = has_add ? cptr<T>(*addend) : nullptr;
    T* yp = mptr<T>(y);
    each_element(
        l,
        [&](int64_t r0, int64_t r1) { cpu::bn_apply_rows<T, A>(xp, ap, scale.data(), shift.data(), yp, l.c, r0, r1); },
        [&](int64_t p) {
          const int64_t c = p % l.c, o = p * l.s;
          cpu::bn_apply_plane<T, A>(xp + o, ap ? ap + o : nullptr, scale[c], shift[c], yp + o, l.s);
        });
  });
  if (training && track) {
    // nn.BatchNorm2d: running = (1 - momentum) * running + momentum * stat, unbiased variance.
    float* rm = running_mean->data_ptr<float>();
    float* rv = running_var->data_ptr<float>();
    const double unbias = static_cast<double>(l.m) / static_cast<double>(l.m - 1);
    for (int64_t c = 0; c < l.c; ++c) {
      rm[c] = static_cast<float>((1.0 - momentum) * rm[c] + momentum * mp[c]);
      rv[c] = static_cast<float>((1.0 - momentum) * rv[c] + momentum * var[c] * unbias);
    }
  }
  return {y, mean, invstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> batch_norm_act_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& x, const c10::optional<at::Tensor>& y,
    const c10::optional<at::Tensor>& weight, const at::Tensor& mean, const at::Tensor& invstd, bool training,
    int64_t act, bool has_addend) {
  const char* fn = "batch_norm_act_backward_cpu";
  const Layout l = layout_of(fn, x);
  const at::ScalarType t = x.scalar_type();
  TORCH_CHECK(x.device().is_cpu() && (t == at::kFloat || t == at::kBFloat16 || t == at::kHalf), fn,
              ": x must be a float32, bfloat16 or float16 CPU tensor, got ", t, " on ", x.device());
  TORCH_CHECK(act >= 0 && act <= 2, fn, ": act must be 0 (none), 1 (relu) or 2 (relu6), got ", act);
  check_like(fn, "grad_y", grad_y, x);
  const bool has_y = y.has_value() && y->defined();
  TORCH_CHECK(act == cpu::kActNone || has_y, fn, ": an activation's backward needs its output y");
  if (has_y) check_like(fn, "y", *y, x);
  for (const at::Tensor* v : {&mean, &invstd}) {
    TORCH_CHECK(v->device().is_cpu() && v->scalar_type() == at::kFloat && v->dim() == 1 && v->numel() == l.c &&
                    v->is_contiguous(),
                fn, ": mean and invstd must be contiguous float32 CPU tensors of ", l.c, " channels");
  }
  const at::Tensor w = channel_vector(fn, "weight", weight, l.c);
  const float* mp = mean.const_data_ptr<float>();
  const float* ip = invstd.const_data_ptr<float>();
  const float* wp = w.defined() ? w.const_data_ptr<float>() : nullptr;
  at::Tensor dx = at::empty_like(x);
  at::Tensor dadd = has_addend ? at::empty_like(x) : at::empty({0}, x.options());
  at::Tensor dweight = at::empty({l.c}, x.options().dtype(at::kFloat));
  at::Tensor dbias = at::empty({l.c}, x.options().dtype(at::kFloat));
  dispatch(t, act, [&](auto tag, auto act_tag) {
    using T = decltype(tag);
    constexpr int A = decltype(act_tag)::value;
    const T* gp = cptr<T>(grad_y);
    const T* xp = cptr<T>(x);
    const T* yp = has_y ? cptr<T>(*y) : nullptr;
    std::vector<double> sdz, sdzx;
    channel_sums(
        l, sdz, sdzx,
        [&](int64_t r0, int64_t r1, float* a, float* b) {
          cpu::bn_backward_reduce_rows<T, A>(gp, yp, xp, mp, l.c, r0, r1, a, b);
        },
        [&](int64_t p, double* a, double* b) {
          const int64_t o = p * l.s;
          cpu::bn_backward_reduce_plane<T, A>(gp + o, yp ? yp + o : nullptr, xp + o, mp[p % l.c], l.s, a, b);
        });
    std::vector<float> k1(l.c), k2(l.c), k3(l.c);
    float* dw = dweight.data_ptr<float>();
    float* db = dbias.data_ptr<float>();
    for (int64_t c = 0; c < l.c; ++c) {
      const double is = ip[c], k = is * (wp ? wp[c] : 1.0f);
      dw[c] = static_cast<float>(sdzx[c] * is);
      db[c] = static_cast<float>(sdz[c]);
      k1[c] = static_cast<float>(k);
      k2[c] = training ? static_cast<float>(-k * is * is * sdzx[c] / l.m) : 0.f;
      k3[c] = training ? static_cast<float>(-k * sdz[c] / l.m) : 0.f;
    }
    T* dxp = mptr<T>(dx);
    T* dap = has_addend ? mptr<T>(dadd) : nullptr;
    each_element(
        l,
        [&](int64_t r0, int64_t r1) {
          cpu::bn_backward_apply_rows<T, A>(gp, yp, xp, mp, k1.data(), k2.data(), k3.data(), dxp, dap, l.c, r0, r1);
        },
        [&](int64_t p) {
          const int64_t c = p % l.c, o = p * l.s;
          cpu::bn_backward_apply_plane<T, A>(gp + o, yp ? yp + o : nullptr, xp + o, mp[c], k1[c], k2[c], k3[c],
                                             dxp + o, dap ? dap + o : nullptr, l.s);
        });
  });
  return {dx, dweight, dbias, dadd};
}

}  // namespace stnas
