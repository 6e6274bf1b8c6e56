"""Which backend runs an op: CUDA > Triton > C++ > reference on GPU tensors, C++ > reference on CPU.

A caller forces one with the op's ``backend=`` argument or the ``STNAS_BACKEND`` environment variable
(``reference``, ``cpp``, ``triton``, ``cuda``); a forced backend that cannot run says why instead of
falling back. :func:`last_backend` tells which backend the latest call of an op ran.
"""
from __future__ import annotations

import functools
import os
from types import ModuleType

import torch

BACKENDS = ("cuda", "triton", "cpp", "reference")
_AUTO_ORDER = {"cuda": ("cuda", "triton", "cpp", "reference"), "cpu": ("cpp", "reference")}
_last: dict[str, str] = {}


@functools.lru_cache(maxsize=None)
def compiled_module() -> tuple[ModuleType | None, str]:
    """(stnas._C or None, why it is missing)."""
    try:
        from stnas import _C
    except ImportError as exc:  # a source checkout without a build, or a broken build
        return None, f"stnas._C could not be imported ({exc}); reinstall with `pip install --no-build-isolation -e .`"
    return _C, ""


@functools.lru_cache(maxsize=None)
def triton_module(op: str) -> tuple[ModuleType | None, str]:
    """(stnas.kernels.<op> or None, why it is missing)."""
    try:
        import importlib

        return importlib.import_module(f"stnas.kernels.{op}"), ""
    except ImportError as exc:
        return None, f"the Triton kernels could not be imported ({exc}); `pip install triton`"


def _triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def unavailable_reason(op: str, backend: str, device: torch.device) -> str:
    """Empty when ``backend`` can run ``op`` on ``device``, else the reason it cannot."""
    if backend == "reference":
        return ""
    if backend == "cpp":
        if device.type != "cpu":
            return f"the C++ backend runs on CPU tensors, these are on {device}"
        return compiled_module()[1]
    if backend == "cuda":
        if device.type != "cuda":
            return f"the CUDA backend runs on CUDA tensors, these are on {device}"
        module, why = compiled_module()
        if module is None:
            return why
        if not getattr(module, "with_cuda", False):
            return "stnas._C was built without CUDA kernels (rebuild with a CUDA torch and STNAS_CUDA=1)"
        return ""
    if backend == "triton":
        if device.type == "cpu" and not _triton_interpreting():
            return "Triton runs on CPU tensors only under TRITON_INTERPRET=1"
        if device.type not in ("cpu", "cuda"):
            return f"Triton does not run on {device}"
        return triton_module(op)[1]
    return f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}"


def choose(op: str, device: torch.device, requested: str | None) -> str:
    """The backend that runs ``op`` on ``device``: ``requested``, else $STNAS_BACKEND, else the first
    available in the automatic order."""
    if requested in (None, "", "auto"):
        requested = os.environ.get("STNAS_BACKEND") or "auto"
    if requested != "auto":
        if requested not in BACKENDS:
            raise ValueError(f"stnas.ops.{op}: backend must be 'auto' or one of {BACKENDS}, got {requested!r}")
        why = unavailable_reason(op, requested, device)
        if why:
            raise RuntimeError(f"stnas.ops.{op}: backend {requested!r} cannot run here: {why}")
        return requested
    for backend in _AUTO_ORDER.get(device.type, ("reference",)):
        if not unavailable_reason(op, backend, device):
            return backend
    return "reference"


def record(op: str, backend: str) -> None:
    _last[op] = backend


def last_backend(op: str) -> str | None:
    """The backend that ran the latest call of ``op`` (``"sgld_step"``, ``"masked_path_sum"``, or
    ``"masked_path_sum_backward"``), or None if it has not run."""
    return _last.get(op)


def available_backends(op: str, device: torch.device | str) -> list[str]:
    """Backends that can run ``op`` on ``device`` now: those of the automatic order first, in that order,
    then those that run only when forced (Triton on CPU tensors under its interpreter)."""
    device = torch.device(device)
    auto = _AUTO_ORDER.get(device.type, ("reference",))
    ordered = list(auto) + [b for b in BACKENDS if b not in auto]
    return [b for b in ordered if not unavailable_reason(op, b, device)]


def flat_storage_view(t: torch.Tensor) -> torch.Tensor:
    """A 1-D view of a dense tensor in storage order (the order every kernel walks)."""
    return t.as_strided((t.numel(),), (1,))


def in_layout(t: torch.Tensor, shape, stride, dtype: torch.dtype) -> torch.Tensor:
    """``t`` with exactly ``shape``, ``stride`` and ``dtype``: itself when it has them, else a copy. Kernels
    walk all their tensors in one layout, and a gradient can arrive in another (for C == 1 or H == W == 1
    two tensors can both be 'contiguous' with different strides)."""
    if t.shape == shape and t.stride() == tuple(stride) and t.dtype == dtype:
        return t
    return torch.empty_strided(shape, stride, dtype=dtype, device=t.device).copy_(t)


def is_dense(t: torch.Tensor) -> bool:
    """True when the tensor's elements fill a contiguous block of memory, in any dimension order."""
    if t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)):
        return True
    sizes_strides = sorted((s, n) for n, s in zip(t.shape, t.stride()) if n != 1)
    expected = 1
    for stride, size in sizes_strides:
        if stride != expected:
            return False
        expected *= size
    return True
