"""Builds stnas._C: the C++ CPU kernels always, the CUDA kernels when a CUDA toolkit and a CUDA build of
torch are present.

Environment switches:
  STNAS_CUDA=0      never build the CUDA kernels
  STNAS_CUDA=1      build them or fail with the reason (default: build them when possible)
  TORCH_CUDA_ARCH_LIST  GPU targets (default "8.0;9.0")
  MAX_JOBS          parallel compile jobs for ninja
"""
import glob
import os
import sys

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _cuda_build_possible():
    """(possible, reason) for building the CUDA sources with the installed torch."""
    import torch
    from torch.utils import cpp_extension

    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} is a CPU build"
    if cpp_extension.CUDA_HOME is None:
        return False, "no CUDA toolkit found (set CUDA_HOME)"
    return True, f"torch {torch.__version__} (CUDA {torch.version.cuda}), toolkit at {cpp_extension.CUDA_HOME}"


def _extensions():
    from torch.utils import cpp_extension

    switch = os.environ.get("STNAS_CUDA", "auto").strip().lower()
    if switch not in ("auto", "0", "1"):
        sys.exit(f"stnas setup: STNAS_CUDA must be 0, 1 or unset, got {switch!r}")
    possible, reason = _cuda_build_possible()
    with_cuda = possible and switch != "0"
    if switch == "1" and not possible:
        sys.exit(f"stnas setup: STNAS_CUDA=1 but the CUDA kernels cannot be built: {reason}")
    print(f"stnas setup: CUDA kernels {'ON' if with_cuda else 'OFF'} ({reason}; STNAS_CUDA={switch})")

    include_dirs = [os.path.join(HERE, "csrc", "include"), os.path.join(HERE, "csrc")]
    sources = ["csrc/bindings.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp", root_dir=HERE))
    # No -std flag: torch's BuildExtension picks the standard its headers need (C++20 from torch 2.14).
    # -fopenmp: at::parallel_for is a header template that compiles to `#pragma omp parallel` when torch's
    # parallel backend is OpenMP; without the flag it silently runs on one thread (measured: the 10M-param
    # SGLD step took 50 ms on 1 and on 2 threads). The GOMP symbols resolve to the libgomp torch loads.
    cxx = ["-O3", "-fopenmp", "-fno-math-errno"]
    define_macros = []
    if not with_cuda:
        return [cpp_extension.CppExtension("stnas._C", sources, include_dirs=include_dirs,
                                           extra_compile_args={"cxx": cxx})]
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    # pip's CUDA 13 wheels put the toolkit headers (cuda_runtime_api.h, ...) here, not under CUDA_HOME.
    for site in sys.path:
        cu13 = os.path.join(site, "nvidia", "cu13", "include")
        if os.path.isdir(cu13):
            include_dirs.append(cu13)
    sources += sorted(glob.glob("csrc/cuda/*.cu", root_dir=HERE))
    define_macros.append(("STNAS_WITH_CUDA", "1"))
    nvcc = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
    return [cpp_extension.CUDAExtension("stnas._C", sources, include_dirs=include_dirs,
                                        define_macros=define_macros,
                                        extra_compile_args={"cxx": cxx + ["-DSTNAS_WITH_CUDA=1"], "nvcc": nvcc})]


def main():
    from torch.utils.cpp_extension import BuildExtension

    packages = find_packages(include=["stnas", "stnas.*"]) + ["stnas.kernels"]
    setup(
        packages=packages,
        package_dir={"stnas.kernels": "kernels"},
        package_data={"stnas.spaces": ["builtin/*.yaml"]},
        ext_modules=_extensions(),
        cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
        zip_safe=False,
    )


if __name__ == "__main__":
    main()
