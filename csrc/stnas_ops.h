// Entry points of stnas._C. Each backend file implements its own; bindings.cpp exposes them to Python.
// Contracts: ../README.md ("The fast ops") and csrc/README.md. Inputs arrive validated by the Python
// layer; each entry still checks device, dtype and sizes with TORCH_CHECK so a direct caller gets a
// clear message.
#pragma once
#include <torch/extension.h>

#include <tuple>
#include <vector>

namespace stnas {

using TensorList = std::vector<at::Tensor>;

void sgld_step_cpu(const TensorList& params, const TensorList& grads, const TensorList& momenta,
                   double lr, double weight_decay, double momentum, double sigma, int64_t seed,
                   int64_t step, const std::vector<int64_t>& indices);
at::Tensor masked_path_sum_forward_cpu(const TensorList& ys, const at::Tensor& weights,
                                       const std::vector<int64_t>& active);
std::tuple<TensorList, at::Tensor> masked_path_sum_backward_cpu(const at::Tensor& grad_out,
                                                                const TensorList& ys,
                                                                const at::Tensor& weights,
                                                                const std::vector<int64_t>& active,
                                                                bool need_grad_weights);
// act: 0 none, 1 relu, 2 relu6. Forward: (y, mean, invstd), running statistics updated in training mode.
// Backward: (grad_x, grad_weight, grad_bias, grad_addend), grad_addend empty without an addend.
std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_act_forward_cpu(
    const at::Tensor& x, const c10::optional<at::Tensor>& weight, const c10::optional<at::Tensor>& bias,
    const c10::optional<at::Tensor>& running_mean, const c10::optional<at::Tensor>& running_var,
    const c10::optional<at::Tensor>& addend, bool training, double momentum, double eps, int64_t act);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> batch_norm_act_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& x, const c10::optional<at::Tensor>& y,
    const c10::optional<at::Tensor>& weight, const at::Tensor& mean, const at::Tensor& invstd, bool training,
    int64_t act, bool has_addend);

// TopoNAS skip + 3x3 average pooling, out = ws * x + wp * avg_pool(x) (count_include_pad = !exact).
// Backward: (grad_x, <grad_out, x>, <P^T grad_out, x>), the last two the gradients of ws and wp.
at::Tensor skip_pool_forward_cpu(const at::Tensor& x, double w_skip, double w_pool, bool exact);
std::tuple<at::Tensor, double, double> skip_pool_backward_cpu(const at::Tensor& grad_out, const at::Tensor& x,
                                                              double w_skip, double w_pool, bool exact);

#ifdef STNAS_WITH_CUDA
void sgld_step_cuda(const TensorList& params, const TensorList& grads, const TensorList& momenta,
                    double lr, double weight_decay, double momentum, double sigma, int64_t seed,
                    int64_t step, const std::vector<int64_t>& indices);
at::Tensor masked_path_sum_forward_cuda(const TensorList& ys, const at::Tensor& weights,
                                        const std::vector<int64_t>& active);
std::tuple<TensorList, at::Tensor> masked_path_sum_backward_cuda(const at::Tensor& grad_out,
                                                                 const TensorList& ys,
                                                                 const at::Tensor& weights,
                                                                 const std::vector<int64_t>& active,
                                                                 bool need_grad_weights);
std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_act_forward_cuda(
    const at::Tensor& x, const c10::optional<at::Tensor>& weight, const c10::optional<at::Tensor>& bias,
    const c10::optional<at::Tensor>& running_mean, const c10::optional<at::Tensor>& running_var,
    const c10::optional<at::Tensor>& addend, bool training, double momentum, double eps, int64_t act);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> batch_norm_act_backward_cuda(
    const at::Tensor& grad_y, const at::Tensor& x, const c10::optional<at::Tensor>& y,
    const c10::optional<at::Tensor>& weight, const at::Tensor& mean, const at::Tensor& invstd, bool training,
    int64_t act, bool has_addend);
#endif

}  // namespace stnas
