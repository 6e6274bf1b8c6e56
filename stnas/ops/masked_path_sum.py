"""Masked multi-path sum: a node's aggregation of K incoming paths, ``out = sum_k mask_k * w_k * y_k``.

The mask lives on the host (a list of 0/1 or a CPU tensor): it decides which inputs are touched at all,
so masked-off paths are never read (they may be None, or hold NaN), in the forward and the backward.
The weights live on the device and are differentiable (DrNAS Dirichlet samples, GOLD-NAS gates).

Byte floor (A active paths, N elements of s bytes): forward reads A*N*s and writes N*s; backward reads
grad_out (and the A inputs when the weights need a gradient) and writes A gradients.

This file holds the PyTorch reference, the input checks, the ``torch.library`` ops
``stnas::masked_path_sum`` / ``stnas::masked_path_sum_backward`` with fake implementations, the autograd
formula and the dispatch to the C++, Triton and CUDA kernels.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from stnas.ops import _backend

_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
# float64 is for gradcheck and references: the reference runs it, the kernels take the three below.
_KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _choose(device: torch.device, dtype: torch.dtype, backend: str) -> str:
    if dtype not in _KERNEL_DTYPES and backend in (None, "", "auto"):
        return "reference"
    chosen = _backend.choose("masked_path_sum", device, backend)
    if dtype not in _KERNEL_DTYPES and chosen != "reference":
        raise TypeError(f"stnas.ops.masked_path_sum: the {chosen} backend takes float32, bfloat16 or float16 "
                        f"paths, got {dtype}; use backend='reference'")
    return chosen


def masked_path_sum_forward_reference(ys, weights, active):
    """sum_a w[active[a]] * ys[a], accumulated in float32 (float64 for float64 paths), returned in the
    inputs' dtype and layout."""
    acc_dtype = torch.promote_types(ys[0].dtype, torch.float32)
    w = weights.to(acc_dtype)
    acc = ys[0].to(acc_dtype) * w[active[0]]
    for a in range(1, len(ys)):
        acc = acc + ys[a].to(acc_dtype) * w[active[a]]
    return acc.to(ys[0].dtype)


def masked_path_sum_backward_reference(grad_out, ys, weights, active, need_grad_weights):
    acc_dtype = torch.promote_types(grad_out.dtype, torch.float32)
    w = weights.to(acc_dtype)
    g = grad_out.to(acc_dtype)
    grad_ys = [(g * w[k]).to(grad_out.dtype) for k in active]  # like grad_out: same strides
    grad_w = torch.zeros(weights.shape, dtype=acc_dtype, device=weights.device)
    if need_grad_weights:
        for a, k in enumerate(active):
            grad_w[k] = (g * ys[a].to(acc_dtype)).sum()
    return grad_ys, grad_w.to(weights.dtype)


def _run_forward(backend, ys, weights, active):
    if backend == "reference":
        return masked_path_sum_forward_reference(ys, weights, active)
    if backend == "cpp":
        return _backend.compiled_module()[0].masked_path_sum_forward_cpu(ys, weights, active)
    if backend == "cuda":
        return _backend.compiled_module()[0].masked_path_sum_forward_cuda(ys, weights, active)
    return _backend.triton_module("masked_path_sum")[0].masked_path_sum_forward(ys, weights, active)


def _run_backward(backend, grad_out, ys, weights, active, need_grad_weights):
    if backend == "reference":
        return masked_path_sum_backward_reference(grad_out, ys, weights, active, need_grad_weights)
    if backend == "cpp":
        fn = _backend.compiled_module()[0].masked_path_sum_backward_cpu
    elif backend == "cuda":
        fn = _backend.compiled_module()[0].masked_path_sum_backward_cuda
    else:
        fn = _backend.triton_module("masked_path_sum")[0].masked_path_sum_backward
    grad_ys, grad_w = fn(grad_out, ys, weights, active, need_grad_weights)
    return list(grad_ys), grad_w


@torch.library.custom_op("stnas::masked_path_sum", mutates_args=())
def _masked_path_sum_op(ys: list[torch.Tensor], weights: torch.Tensor, active: list[int], backend: str) -> torch.Tensor:
    chosen = _choose(ys[0].device, ys[0].dtype, backend)
    out = _run_forward(chosen, ys, weights, active)
    _backend.record("masked_path_sum", chosen)
    return out


@_masked_path_sum_op.register_fake
def _(ys, weights, active, backend):
    return torch.empty_like(ys[0])


@torch.library.custom_op("stnas::masked_path_sum_backward", mutates_args=())
def _masked_path_sum_backward_op(
    grad_out: torch.Tensor, ys: list[torch.Tensor], weights: torch.Tensor, active: list[int],
    need_grad_weights: bool, backend: str,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    chosen = _choose(grad_out.device, grad_out.dtype, backend)
    grad_ys, grad_w = _run_backward(chosen, grad_out, ys, weights, active, need_grad_weights)
    _backend.record("masked_path_sum_backward", chosen)
    return grad_ys, grad_w


@_masked_path_sum_backward_op.register_fake
def _(grad_out, ys, weights, active, need_grad_weights, backend):
    return [torch.empty_like(grad_out) for _ in active], torch.empty_like(weights)


def _save_for_backward(ctx, ys, weights, active, backend) -> None:
    """What both autograd paths (the op's and MaskedPathSumFunction's) keep for the backward."""
    ctx.active = list(active)
    ctx.backend = backend
    ctx.need_grad_weights = bool(weights.requires_grad)
    # Without a weight gradient the inputs are not needed: saving them would keep every path alive.
    ctx.save_for_backward(*(ys if ctx.need_grad_weights else ()), weights)
    ctx.layout = (ys[0].shape, ys[0].stride(), ys[0].dtype)


def _saved_and_grad_out(ctx, grad_out):
    """(ys, weights, grad_out), grad_out in the inputs' layout and dtype, as the kernels expect."""
    *ys, weights = ctx.saved_tensors
    shape, stride, dtype = ctx.layout
    return ys, weights, _backend.in_layout(grad_out, shape, stride, dtype)


def _setup_context(ctx, inputs, output):
    ys, weights, active, backend = inputs
    _save_for_backward(ctx, ys, weights, active, backend)


def _backward(ctx, grad_out):
    ys, weights, grad_out = _saved_and_grad_out(ctx, grad_out)
    grad_ys, grad_w = _masked_path_sum_backward_op(
        grad_out, ys, weights, ctx.active, ctx.need_grad_weights, ctx.backend)
    return grad_ys, (grad_w if ctx.need_grad_weights else None), None, None


_masked_path_sum_op.register_autograd(_backward, setup_context=_setup_context)


class MaskedPathSumFunction(torch.autograd.Function):
    """The eager path: the same kernels and the same autograd formula as the ``torch.library`` op, without
    its dispatch. The op's Python dispatch and autograd wrappers cost ~0.25 ms per forward + backward on
    the CPU, 4-6x the whole sum of two or three (32, 24, 16, 16) fp32 paths (2 cores, 2026-11-23); a
    supernet calls the sum at every node of every step. Compiled graphs record the op instead."""

    @staticmethod
    def forward(ctx, weights, unit, active, backend, *ys):
        chosen = _choose(ys[0].device, ys[0].dtype, backend)
        out = _run_forward(chosen, list(ys), weights, active)
        _backend.record("masked_path_sum", chosen)
        ctx.unit = unit
        _save_for_backward(ctx, ys, weights, active, backend)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.unit:
            # Weights known on the host to be ones (none were given): every path's gradient is grad_out
            # itself, as for PyTorch's own sum, and the backward moves no bytes at all.
            return None, None, None, None, *([grad_out] * len(ctx.active))
        ys, weights, grad_out = _saved_and_grad_out(ctx, grad_out)
        chosen = _choose(grad_out.device, grad_out.dtype, ctx.backend)
        grad_ys, grad_w = _run_backward(chosen, grad_out, ys, weights, ctx.active, ctx.need_grad_weights)
        _backend.record("masked_path_sum_backward", chosen)
        return (grad_w if ctx.need_grad_weights else None), None, None, None, *grad_ys


_ONES: dict[tuple[int, torch.device], torch.Tensor] = {}


def _unit_weights(k: int, device: torch.device) -> torch.Tensor:
    """All-ones weights, made once per (K, device): the kernels read them, nothing writes them."""
    key = (k, device)
    if key not in _ONES:
        _ONES[key] = torch.ones(k, dtype=torch.float32, device=device)
    return _ONES[key]


def _memory_format(t: torch.Tensor) -> torch.memory_format:
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _host_mask(mask, k: int) -> list[bool]:
    if mask is None:
        return [True] * k
    if isinstance(mask, torch.Tensor):
        if mask.device.type != "cpu":
            raise ValueError("stnas.ops.masked_path_sum: mask must be on the host (a list or a CPU tensor): it "
                             f"decides which inputs are read, and a mask on {mask.device} would force a sync")
        if mask.dim() != 1:
            raise ValueError(f"stnas.ops.masked_path_sum: mask must be 1-D, got shape {tuple(mask.shape)}")
        mask = mask.tolist()
    mask = list(mask)
    if len(mask) != k:
        raise ValueError(f"stnas.ops.masked_path_sum: mask has {len(mask)} entries but there are {k} paths")
    for i, m in enumerate(mask):
        if m not in (0, 1, True, False):
            raise ValueError(f"stnas.ops.masked_path_sum: mask[{i}] must be 0 or 1, got {m!r}")
    return [bool(m) for m in mask]


def masked_path_sum(
    ys: Sequence[torch.Tensor | None],
    weights: torch.Tensor | None = None,
    mask: Sequence[int] | torch.Tensor | None = None,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    """``sum_k mask[k] * weights[k] * ys[k]``, differentiable in every active ``ys[k]`` and in ``weights``.

    Args:
        ys: K paths of one shape, dtype (float32/bfloat16/float16) and device; a masked-off path may be
            None and is never read.
        weights: 1-D tensor of K floats on the paths' device (default: all ones).
        mask: K host-side 0/1 values (list or CPU tensor); default: every path that is not None.
        backend: ``"auto"`` (default), ``"cuda"``, ``"triton"``, ``"cpp"`` or ``"reference"``.
    Returns:
        A new tensor with the paths' shape, dtype and memory format.
    """
    ys = list(ys)
    k = len(ys)
    if k == 0:
        raise ValueError("stnas.ops.masked_path_sum: ys is empty; give at least one path")
    mask = _host_mask(mask if mask is not None else [y is not None for y in ys], k)
    active = [i for i in range(k) if mask[i]]
    for i in active:
        if not isinstance(ys[i], torch.Tensor):
            raise TypeError(f"stnas.ops.masked_path_sum: ys[{i}] is active (mask 1) but is "
                            f"{type(ys[i]).__name__}, not a tensor")
    given = [y for y in ys if isinstance(y, torch.Tensor)]
    if not given:
        raise ValueError("stnas.ops.masked_path_sum: every path is None; nothing gives the output's shape")
    ref = ys[active[0]] if active else given[0]
    for i in active:
        y = ys[i]
        if y.dtype not in _DTYPES:
            raise TypeError(f"stnas.ops.masked_path_sum: ys[{i}] must be float32, bfloat16, float16 or float64, "
                            f"got {y.dtype}")
        if y.shape != ref.shape or y.dtype != ref.dtype or y.device != ref.device:
            raise ValueError(f"stnas.ops.masked_path_sum: ys[{i}] is {y.dtype} {tuple(y.shape)} on {y.device} but "
                             f"ys[{active[0]}] is {ref.dtype} {tuple(ref.shape)} on {ref.device}; all active "
                             "paths must match")
    unit = weights is None
    if unit:
        weights = _unit_weights(k, ref.device)
    if not isinstance(weights, torch.Tensor) or not weights.is_floating_point():
        raise TypeError("stnas.ops.masked_path_sum: weights must be a floating-point tensor, got "
                        f"{weights.dtype if isinstance(weights, torch.Tensor) else type(weights).__name__}")
    if weights.shape != (k,):
        raise ValueError(f"stnas.ops.masked_path_sum: weights must have shape ({k},), got {tuple(weights.shape)}")
    if weights.device != ref.device:
        raise ValueError(f"stnas.ops.masked_path_sum: weights are on {weights.device} but the paths on {ref.device}")
    if not active:
        return torch.zeros_like(ref)
    fmt = _memory_format(ref)
    paths = [ys[i] if ys[i].is_contiguous(memory_format=fmt) else ys[i].contiguous(memory_format=fmt)
             for i in active]
    # Dense in one format, strides can still differ in size-1 dims (a one-channel map is contiguous and
    # channels_last at once); the kernels compare strides, so such a path is viewed with the first's.
    paths = [p if p.stride() == paths[0].stride() else p.as_strided(p.shape, paths[0].stride(), p.storage_offset())
             for p in paths]
    if torch.compiler.is_compiling():
        return _masked_path_sum_op(paths, weights, active, backend or "auto")
    return MaskedPathSumFunction.apply(weights, unit, active, backend or "auto", *paths)
