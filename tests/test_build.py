"""The compiled extension is part of the product: a test run without it must fail, not skip."""
import os

import torch

from stnas.ops import available_backends, last_backend, masked_path_sum, sgld_step
from stnas.ops._backend import compiled_module


def test_compiled_extension_is_built_and_chosen_on_cpu():
    module, why = compiled_module()
    assert module is not None, why
    if os.environ.get("STNAS_BACKEND"):
        return
    assert available_backends("sgld_step", "cpu")[0] == "cpp"
    sgld_step([torch.randn(5)], [torch.randn(5)], lr=0.1)
    assert last_backend("sgld_step") == "cpp"
    masked_path_sum([torch.randn(5), torch.randn(5)], torch.ones(2))
    assert last_backend("masked_path_sum") == "cpp"


def test_cuda_kernels_are_built_when_cuda_is_present():
    if not torch.cuda.is_available():
        return  # nothing to check on a CPU-only machine; the CUDA sources are compile-checked by .ci/run
    module, why = compiled_module()
    assert module is not None and module.with_cuda, why or "stnas._C was built without CUDA"
    assert available_backends("sgld_step", "cuda")[0] == "cuda"


def test_compiled_kernels_run_on_every_thread():
    # at::parallel_for is inlined into the extension: built without torch's parallel-backend flags it
    # runs serially, which no correctness test notices.
    module, why = compiled_module()
    assert module is not None, why
    threads = torch.get_num_threads()
    if threads < 2 or "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return
    assert module.parallel_threads_used() == threads
