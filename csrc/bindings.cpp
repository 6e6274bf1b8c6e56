// Python bindings of stnas._C. Python calls these through stnas.ops, never directly.
#include <ATen/Parallel.h>

#include <atomic>

#include "stnas_ops.h"

namespace {
// Threads that one at::parallel_for of this extension actually runs on. A build without the flags that
// ATen's parallel backend needs (-fopenmp for OpenMP) compiles the loop serially and reports 1.
int64_t parallel_threads_used() {
  std::atomic<int64_t> most{0};
  at::parallel_for(0, 1024, 1, [&](int64_t, int64_t) {
    const int64_t t = static_cast<int64_t>(at::get_thread_num()) + 1;
    int64_t seen = most.load();
    while (t > seen && !most.compare_exchange_weak(seen, t)) {
    }
  });
  return most.load();
}
}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "stnas compiled kernels (C++ CPU always; CUDA when built with it)";
#ifdef STNAS_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  m.def("parallel_threads_used", &parallel_threads_used,
        "threads one at::parallel_for of this extension runs on (the build's parallel backend check)");
  m.def("sgld_step_cpu", &stnas::sgld_step_cpu, "fused multi-tensor SGLD step (C++ CPU)");
  m.def("masked_path_sum_forward_cpu", &stnas::masked_path_sum_forward_cpu,
        "sum_a w[active[a]] * ys[a] (C++ CPU)");
  m.def("masked_path_sum_backward_cpu", &stnas::masked_path_sum_backward_cpu,
        "gradients of masked_path_sum (C++ CPU)");
  m.def("batch_norm_act_forward_cpu", &stnas::batch_norm_act_forward_cpu,
        "training/eval BatchNorm + addend + activation, running statistics updated (C++ CPU)");
  m.def("batch_norm_act_backward_cpu", &stnas::batch_norm_act_backward_cpu,
        "gradients of batch_norm_act (C++ CPU)");
  m.def("skip_pool_forward_cpu", &stnas::skip_pool_forward_cpu,
        "ws * x + wp * avg_pool2d(x, 3, 1, 1) in one pass (C++ CPU, TopoNAS merged edges)");
  m.def("skip_pool_backward_cpu", &stnas::skip_pool_backward_cpu,
        "gradients of skip_pool: (dx, d ws, d wp) in one pass (C++ CPU)");
#ifdef STNAS_WITH_CUDA
  m.def("sgld_step_cuda", &stnas::sgld_step_cuda, "fused multi-tensor SGLD step (CUDA)");
  m.def("masked_path_sum_forward_cuda", &stnas::masked_path_sum_forward_cuda,
        "sum_a w[active[a]] * ys[a] (CUDA)");
  m.def("masked_path_sum_backward_cuda", &stnas::masked_path_sum_backward_cuda,
        "gradients of masked_path_sum (CUDA)");
  m.def("batch_norm_act_forward_cuda", &stnas::batch_norm_act_forward_cuda,
        "training/eval BatchNorm + addend + activation, running statistics updated (CUDA)");
  m.def("batch_norm_act_backward_cuda", &stnas::batch_norm_act_backward_cuda,
        "gradients of batch_norm_act (CUDA)");
#endif
}
