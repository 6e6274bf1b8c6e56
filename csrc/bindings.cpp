// Python bindings of stnas._C. Python calls these through stnas.ops, never directly.
#include "stnas_ops.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "stnas compiled kernels (C++ CPU always; CUDA when built with it)";
#ifdef STNAS_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  m.def("sgld_step_cpu", &stnas::sgld_step_cpu, "fused multi-tensor SGLD step (C++ CPU)");
  m.def("masked_path_sum_forward_cpu", &stnas::masked_path_sum_forward_cpu,
        "sum_a w[active[a]] * ys[a] (C++ CPU)");
  m.def("masked_path_sum_backward_cpu", &stnas::masked_path_sum_backward_cpu,
        "gradients of masked_path_sum (C++ CPU)");
#ifdef STNAS_WITH_CUDA
  m.def("sgld_step_cuda", &stnas::sgld_step_cuda, "fused multi-tensor SGLD step (CUDA)");
  m.def("masked_path_sum_forward_cuda", &stnas::masked_path_sum_forward_cuda,
        "sum_a w[active[a]] * ys[a] (CUDA)");
  m.def("masked_path_sum_backward_cuda", &stnas::masked_path_sum_backward_cuda,
        "gradients of masked_path_sum (CUDA)");
#endif
}
