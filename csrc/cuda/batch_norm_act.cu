// ATen glue of the CUDA fused BatchNorm + addend + activation: checks (the messages of the C++ CPU
// backend), the workspace, and the launches on the current stream. The statistics, the running-statistics
// update and the backward's coefficients stay on the device: no call waits for the host.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "cuda/batch_norm_act.cuh"
#include "stnas_ops.h"

namespace stnas {
namespace {

cuda::BnaShape shape_of(const char* fn, const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 4, fn, ": x must be 4-D (N, C, H, W), got ", x.dim(), " dimensions");
  TORCH_CHECK(x.is_cuda(), fn, ": x must be a CUDA tensor, got one on ", x.device());
  const at::ScalarType t = x.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kBFloat16 || t == at::kHalf, fn,
              ": x must be float32, bfloat16 or float16, got ", t);
  const bool contiguous = x.is_contiguous();
  TORCH_CHECK(contiguous || x.is_contiguous(at::MemoryFormat::ChannelsLast), fn,
              ": x must be contiguous or channels_last");
  cuda::BnaShape sh;
  sh.rows = !contiguous;  // both (C == 1 or H*W == 1): the two orders are the same, planes are walked
  sh.c = x.size(1);
  sh.s = x.size(2) * x.size(3);
  sh.m = x.size(0) * sh.s;
  TORCH_CHECK(sh.rows || sh.c <= 65535, fn, ": contiguous NCHW input supports at most 65535 channels, got ", sh.c);
  return sh;
}

void check_like(const char* fn, const char* name, const at::Tensor& t, const at::Tensor& x) {
  TORCH_CHECK(t.device() == x.device() && t.scalar_type() == x.scalar_type() && t.sizes() == x.sizes() &&
                  t.strides() == x.strides(),
              fn, ": ", name, " must be a ", x.scalar_type(), " tensor on ", x.device(),
              " with x's shape and strides");
}

at::Tensor channel_vector(const char* fn, const char* name, const c10::optional<at::Tensor>& v,
                          const at::Tensor& x) {
  if (!v.has_value() || !v->defined()) return at::Tensor();
  TORCH_CHECK(v->device() == x.device() && v->dim() == 1 && v->numel() == x.size(1) && v->is_floating_point(), fn,
              ": ", name, " must be a 1-D floating-point tensor of ", x.size(1), " channels on ", x.device());
  return v->to(at::kFloat).contiguous();  // a no-op for float32 parameters
}

template <class F>
void dispatch_type(at::ScalarType t, F&& f) {
  switch (t) {
    case at::kBFloat16:
      f(__nv_bfloat16{});
      break;
    case at::kHalf:
      f(__half{});
      break;
    default:
      f(float{});
  }
}

template <class T>
const T* cptr(const at::Tensor& t) {
  return t.defined() ? static_cast<const T*>(t.const_data_ptr()) : nullptr;
}
template <class T>
T* mptr(const at::Tensor& t) {
  return t.defined() ? static_cast<T*>(t.data_ptr()) : nullptr;
}
const float* fptr(const at::Tensor& t) { return t.defined() ? t.const_data_ptr<float>() : nullptr; }

int sm_count(const at::Tensor& t) { return at::cuda::getDeviceProperties(t.device().index())->multiProcessorCount; }

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_act_forward_cuda(
    const at::Tensor& x, const c10::optional<at::Tensor>& weight, const c10::optional<at::Tensor>& bias,
    const c10::optional<at::Tensor>& running_mean, const c10::optional<at::Tensor>& running_var,
    const c10::optional<at::Tensor>& addend, bool training, double momentum, double eps, int64_t act) {
  const char* fn = "batch_norm_act_forward_cuda";
  const cuda::BnaShape sh = shape_of(fn, x);
  TORCH_CHECK(act >= 0 && act <= 2, fn, ": act must be 0 (none), 1 (relu) or 2 (relu6), got ", act);
  const bool has_add = addend.has_value() && addend->defined();
  if (has_add) check_like(fn, "addend", *addend, x);
  const at::Tensor w = channel_vector(fn, "weight", weight, x), b = channel_vector(fn, "bias", bias, x);
  const bool track = running_mean.has_value() && running_mean->defined();
  if (track) {
    TORCH_CHECK(running_var.has_value() && running_var->defined(), fn,
                ": running_mean is given but running_var is not");
    for (const at::Tensor* r : {&*running_mean, &*running_var}) {
      TORCH_CHECK(r->device() == x.device() && r->scalar_type() == at::kFloat && r->dim() == 1 &&
                      r->numel() == sh.c && r->is_contiguous(),
                  fn, ": running_mean and running_var must be contiguous float32 tensors of ", sh.c, " channels on ",
                  x.device());
    }
  }
  TORCH_CHECK(training || track, fn, ": eval mode needs running_mean and running_var");
  TORCH_CHECK(!training || sh.m > 1, fn, ": training needs more than one value per channel");

  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const cuda::BnaGrid g = cuda::bna_grid(sh, sm_count(x));
  const at::TensorOptions f32 = x.options().dtype(at::kFloat);
  at::Tensor mean = at::empty({sh.c}, f32), invstd = at::empty({sh.c}, f32);
  at::Tensor work = at::empty({2 * sh.c + (training ? 2 * g.chunks * sh.c : 0)}, f32);
  at::Tensor y = at::empty_like(x);
  float* wp = work.data_ptr<float>();
  dispatch_type(x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    cuda::BnaForwardArgs<T> a{};
    a.x = cptr<T>(x);
    a.add = has_add ? cptr<T>(*addend) : nullptr;
    a.y = mptr<T>(y);
    a.weight = fptr(w);
    a.bias = fptr(b);
    a.running_mean = track ? running_mean->data_ptr<float>() : nullptr;
    a.running_var = track ? running_var->data_ptr<float>() : nullptr;
    a.mean = mean.data_ptr<float>();
    a.invstd = invstd.data_ptr<float>();
    a.scale = wp;
    a.shift = wp + sh.c;
    a.partial_a = training ? wp + 2 * sh.c : nullptr;
    a.partial_b = training ? wp + 2 * sh.c + g.chunks * sh.c : nullptr;
    a.training = training;
    a.momentum = static_cast<float>(momentum);
    a.eps = static_cast<float>(eps);
    a.act = static_cast<int>(act);
    const cudaError_t err = cuda::launch_batch_norm_act_forward<T>(sh, g, a, stream);
    TORCH_CHECK(err == cudaSuccess, fn, ": kernel launch failed: ", cudaGetErrorString(err));
  });
  return {y, mean, invstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> batch_norm_act_backward_cuda(
    const at::Tensor& grad_y, const at::Tensor& x, const c10::optional<at::Tensor>& y,
    const c10::optional<at::Tensor>& weight, const at::Tensor& mean, const at::Tensor& invstd, bool training,
    int64_t act, bool has_addend) {
  const char* fn = "batch_norm_act_backward_cuda";
  const cuda::BnaShape sh = shape_of(fn, x);
  TORCH_CHECK(act >= 0 && act <= 2, fn, ": act must be 0 (none), 1 (relu) or 2 (relu6), got ", act);
  check_like(fn, "grad_y", grad_y, x);
  const bool has_y = y.has_value() && y->defined();
  TORCH_CHECK(act == cuda::kBnaActNone || has_y, fn, ": an activation's backward needs its output y");
  if (has_y) check_like(fn, "y", *y, x);
  for (const at::Tensor* v : {&mean, &invstd}) {
    TORCH_CHECK(v->device() == x.device() && v->scalar_type() == at::kFloat && v->dim() == 1 && v->numel() == sh.c &&
                    v->is_contiguous(),
                fn, ": mean and invstd must be contiguous float32 tensors of ", sh.c, " channels on ", x.device());
  }
  const at::Tensor w = channel_vector(fn, "weight", weight, x);

  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const cuda::BnaGrid g = cuda::bna_grid(sh, sm_count(x));
  const at::TensorOptions f32 = x.options().dtype(at::kFloat);
  at::Tensor dx = at::empty_like(x);
  at::Tensor dadd = has_addend ? at::empty_like(x) : at::empty({0}, x.options());
  at::Tensor dweight = at::empty({sh.c}, f32), dbias = at::empty({sh.c}, f32);
  at::Tensor work = at::empty({3 * sh.c + 2 * g.chunks * sh.c}, f32);
  float* wp = work.data_ptr<float>();
  dispatch_type(x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    cuda::BnaBackwardArgs<T> a{};
    a.grad_y = cptr<T>(grad_y);
    a.x = cptr<T>(x);
    a.y = has_y ? cptr<T>(*y) : nullptr;
    a.weight = fptr(w);
    a.mean = mean.const_data_ptr<float>();
    a.invstd = invstd.const_data_ptr<float>();
    a.grad_x = mptr<T>(dx);
    a.grad_add = has_addend ? mptr<T>(dadd) : nullptr;
    a.grad_weight = dweight.data_ptr<float>();
    a.grad_bias = dbias.data_ptr<float>();
    a.k = wp;
    a.partial_a = wp + 3 * sh.c;
    a.partial_b = wp + 3 * sh.c + g.chunks * sh.c;
    a.training = training;
    a.act = static_cast<int>(act);
    const cudaError_t err = cuda::launch_batch_norm_act_backward<T>(sh, g, a, stream);
    TORCH_CHECK(err == cudaSuccess, fn, ": kernel launch failed: ", cudaGetErrorString(err));
  });
  return {dx, dweight, dbias, dadd};
}

}  // namespace stnas
