"""Fused multi-tensor SGLD step: one launch updates a whole list of parameters.

Per element, in fp32 (the contract in DESIGN.md):
    d = g + wd * p
    v = mu * v + d   (when mu > 0; else no buffer and v = d)
    p = p - lr * v + sigma * xi,   xi ~ N(0, 1) from Philox keyed by (seed, step, index, element)

The noise is never materialised by the fast backends: each element's normal is computed in registers
from its counter (layout in csrc/include/stnas/philox.h, definition in stnas/ops/philox.py), so the
bytes moved are the floor: read p, g, v and write p, v.

This file holds the PyTorch reference (the definition), the input checks, the ``torch.library`` op
``stnas::sgld_step`` with its fake implementation, and the dispatch to the C++, Triton and CUDA kernels.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from stnas.ops import _backend
from stnas.ops.philox import philox_normal

_GRAD_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_MAX_SEED = 2**63


def sgld_step_reference(params, grads, momenta, lr, weight_decay, momentum, sigma, seed, step, indices):
    """The definition, in PyTorch ops; same argument conventions as the fused backends (grads empty =
    noise only, momenta empty = no momentum buffer)."""
    for i, p in enumerate(params):
        pf = _backend.flat_storage_view(p)
        if grads:
            d = _backend.flat_storage_view(grads[i]).float()
            if weight_decay != 0.0:
                d = d + weight_decay * pf
            if momenta:
                v = _backend.flat_storage_view(momenta[i])
                v.mul_(momentum).add_(d)
                d = v
            pf.add_(d, alpha=-lr)
        if sigma != 0.0:
            pf.add_(philox_normal(p.numel(), seed, step, indices[i], device=p.device), alpha=sigma)


def _run_backend(backend, *args):
    if backend == "reference":
        sgld_step_reference(*args)
    elif backend == "cpp":
        _backend.compiled_module()[0].sgld_step_cpu(*args)
    elif backend == "cuda":
        _backend.compiled_module()[0].sgld_step_cuda(*args)
    else:
        _backend.triton_module("sgld_step")[0].sgld_step(*args)


def _sgld_step_impl(params, grads, momenta, lr, weight_decay, momentum, sigma, seed, step, indices, backend):
    if not params:
        return
    chosen = _backend.choose("sgld_step", params[0].device, backend)
    _run_backend(chosen, params, grads, momenta, lr, weight_decay, momentum, sigma, seed, step, indices)
    _backend.record("sgld_step", chosen)


@torch.library.custom_op("stnas::sgld_step", mutates_args=("params", "momenta"))
def _sgld_step_op(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    momenta: list[torch.Tensor],
    lr: float,
    weight_decay: float,
    momentum: float,
    sigma: float,
    seed: int,
    step: int,
    indices: list[int],
    backend: str,
) -> None:
    _sgld_step_impl(params, grads, momenta, lr, weight_decay, momentum, sigma, seed, step, indices, backend)


@_sgld_step_op.register_fake
def _(params, grads, momenta, lr, weight_decay, momentum, sigma, seed, step, indices, backend):
    return None


def _check_scalar(name, value, low, high=math.inf, high_open=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"stnas.ops.sgld_step: {name} must be a finite number, got {value!r}")
    if value < low or value > high or (high_open and value == high):
        bound = f"[{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"stnas.ops.sgld_step: {name} must lie in {bound}, got {value!r}")


def _check_tensor_list(params, grads, momenta, indices):
    n = len(params)
    for name, seq in (("grads", grads), ("indices", indices)):
        if len(seq) != n:
            raise ValueError(f"stnas.ops.sgld_step: {name} has {len(seq)} entries but params has {n}")
    if momenta is not None and len(momenta) != n:
        raise ValueError(f"stnas.ops.sgld_step: momenta has {len(momenta)} entries but params has {n}")
    for i, p in enumerate(params):
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"stnas.ops.sgld_step: params[{i}] is a {type(p).__name__}, not a tensor")
    device = params[0].device if n else None
    for i, p in enumerate(params):
        if p.dtype != torch.float32:
            raise TypeError(f"stnas.ops.sgld_step: params[{i}] must be float32 (master weights), got {p.dtype}")
        if p.device != device:
            raise ValueError(f"stnas.ops.sgld_step: params[{i}] is on {p.device} but params[0] is on {device}")
        if p.is_sparse or not _backend.is_dense(p):
            raise ValueError(f"stnas.ops.sgld_step: params[{i}] must be dense (contiguous or channels_last), "
                             f"got shape {tuple(p.shape)} strides {p.stride()}")
        g = grads[i]
        if g is not None:
            if not isinstance(g, torch.Tensor):
                raise TypeError(f"stnas.ops.sgld_step: grads[{i}] is a {type(g).__name__}, not a tensor or None")
            if g.is_sparse:
                raise TypeError(f"stnas.ops.sgld_step: grads[{i}] is sparse; only dense gradients are supported")
            if g.dtype not in _GRAD_DTYPES:
                raise TypeError(f"stnas.ops.sgld_step: grads[{i}] must be float32, bfloat16 or float16, got {g.dtype}")
            if g.shape != p.shape:
                raise ValueError(f"stnas.ops.sgld_step: grads[{i}] has shape {tuple(g.shape)} but params[{i}] "
                                 f"has {tuple(p.shape)}")
            if g.device != device:
                raise ValueError(f"stnas.ops.sgld_step: grads[{i}] is on {g.device} but params are on {device}")
        if momenta is not None:
            v = momenta[i]
            if not isinstance(v, torch.Tensor) or v.dtype != torch.float32 or v.shape != p.shape:
                got = f"{v.dtype} {tuple(v.shape)}" if isinstance(v, torch.Tensor) else type(v).__name__
                raise ValueError(f"stnas.ops.sgld_step: momenta[{i}] must be a float32 tensor of shape "
                                 f"{tuple(p.shape)}, got {got}")
            if v.device != device or v.stride() != p.stride():
                raise ValueError(f"stnas.ops.sgld_step: momenta[{i}] must have params[{i}]'s device and layout "
                                 f"(create it with torch.zeros_like(param)); got {v.device}, strides {v.stride()}")
    for i, idx in enumerate(indices):
        if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < 2**32:
            raise ValueError(f"stnas.ops.sgld_step: indices[{i}] must be an int in [0, 2^32), got {idx!r}")


def _like_param(g: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """g laid out with p's strides, so that both can be walked as flat storage (p is dense, so equal
    strides and shapes make g dense too)."""
    if g.stride() == p.stride():
        return g
    return torch.empty_like(p, dtype=g.dtype).copy_(g)


@torch.no_grad()
def sgld_step(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor | None],
    momenta: Sequence[torch.Tensor] | None = None,
    *,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    sigma: float = 0.0,
    seed: int = 0,
    step: int = 0,
    indices: Sequence[int] | None = None,
    noise_without_grad: bool = False,
    backend: str | None = None,
) -> None:
    """Update ``params`` in place by one SGLD step (see the module docstring for the formula).

    Args:
        params: float32 tensors (dense: contiguous or channels_last), all on one device.
        grads: one entry per param: a float32/bfloat16/float16 tensor of the param's shape, or None.
            Params whose grad is None are skipped, or get the noise alone if ``noise_without_grad``.
        momenta: float32 buffers laid out like their params (``torch.zeros_like(p)``), updated in
            place; required when ``momentum > 0``, ignored otherwise.
        lr, weight_decay, momentum, sigma: step size, L2 coefficient, momentum in [0, 1), noise std.
        seed, step: with ``indices``, the key of the noise: the same (seed, step, index) gives the same
            noise on every backend and device.
        indices: the noise index of each param (default: its position in ``params``).
        backend: ``"auto"`` (default), ``"cuda"``, ``"triton"``, ``"cpp"`` or ``"reference"``.
    """
    params, grads = list(params), list(grads)
    indices = list(range(len(params))) if indices is None else list(indices)
    validate_sgld_step_args(params, grads, momenta, lr, weight_decay, momentum, sigma, seed, step, indices)
    run_sgld_step(params, grads, momenta, lr=lr, weight_decay=weight_decay, momentum=momentum, sigma=sigma,
                  seed=seed, step=step, indices=indices, noise_without_grad=noise_without_grad, backend=backend)


def validate_sgld_step_args(params, grads, momenta, lr, weight_decay, momentum, sigma, seed, step, indices):
    """Every boundary check of :func:`sgld_step`; raises ValueError/TypeError naming the argument."""
    for name, value, low, high, open_ in (("lr", lr, 0.0, math.inf, False),
                                          ("weight_decay", weight_decay, 0.0, math.inf, False),
                                          ("momentum", momentum, 0.0, 1.0, True),
                                          ("sigma", sigma, 0.0, math.inf, False)):
        _check_scalar(name, value, low, high, open_)
    for name, value in (("seed", seed), ("step", step)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _MAX_SEED:
            raise ValueError(f"stnas.ops.sgld_step: {name} must be an int in [0, 2^63), got {value!r}")
    if momentum > 0 and momenta is None:
        raise ValueError("stnas.ops.sgld_step: momentum > 0 needs momenta (one float32 buffer per param)")
    _check_tensor_list(params, grads, momenta if momentum > 0 else None, indices)


@torch.no_grad()
def run_sgld_step(params, grads, momenta, *, lr, weight_decay, momentum, sigma, seed, step, indices,
                  noise_without_grad=False, backend=None):
    """:func:`sgld_step` without the per-tensor boundary checks, for callers that validated once (the
    SGLD optimiser checks its param groups on their first step; 161 tensors cost ~0.9 ms of Python checks
    per call on the CI machine, more than the CUDA kernel's whole step). Outside torch.compile the
    backend is called directly; the ``torch.library`` op (and its dispatcher overhead) is what a
    compiled graph records."""
    if not params:
        return
    scalars = (float(lr), float(weight_decay), float(momentum), float(sigma), int(seed), int(step))
    call = _sgld_step_op if torch.compiler.is_compiling() else _sgld_step_impl
    # One launch per gradient dtype: the kernels are specialised on it.
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, g in enumerate(grads):
        if g is not None:
            by_dtype.setdefault(g.dtype, []).append(i)
    for with_grad in by_dtype.values():
        call(
            [params[i] for i in with_grad],
            [_like_param(grads[i], params[i]) for i in with_grad],
            [momenta[i] for i in with_grad] if momentum > 0 else [],
            *scalars,
            [indices[i] for i in with_grad],
            backend or "auto",
        )
    without_grad = [i for i, g in enumerate(grads) if g is None]
    if noise_without_grad and sigma > 0 and without_grad:
        call([params[i] for i in without_grad], [], [], *scalars, [indices[i] for i in without_grad],
             backend or "auto")
