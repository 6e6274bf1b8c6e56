"""Triton kernels of the masked multi-path sum (contract: stnas/ops/masked_path_sum.py).

The backends see only the A active paths. Their data pointers sit in a small device table and their
weights are gathered on the device (never read on the host), so one launch serves any A without a
recompile. Byte floor: forward reads A tensors and writes one; backward reads grad_out (and the A
inputs when the weights need a gradient) and writes A gradients, in one pass over grad_out.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from stnas.kernels._pointer_table import cached_table

BLOCK = 4096


@triton.jit
def _masked_path_sum_forward_kernel(ptrs, w, out, n, paths, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    acc = tl.zeros((BLOCK,), tl.float32)
    for a in range(paths):
        y_ptr = tl.load(ptrs + a).to(out.dtype)
        acc += tl.load(w + a) * tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out + offs, acc.to(out.dtype.element_ty), mask=mask)


@triton.jit
def _masked_path_sum_backward_kernel(grad_out, y_ptrs, grad_ptrs, w, partial, n, paths,
                                     NEED_DOT: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    g = tl.load(grad_out + offs, mask=mask, other=0.0).to(tl.float32)
    for a in range(paths):
        gy_ptr = tl.load(grad_ptrs + a).to(grad_out.dtype)
        tl.store(gy_ptr + offs, (tl.load(w + a) * g).to(grad_out.dtype.element_ty), mask=mask)
        if NEED_DOT:
            y_ptr = tl.load(y_ptrs + a).to(grad_out.dtype)
            y = tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            tl.store(partial + pid * paths + a, tl.sum(g * y, axis=0))


def _gathered_weights(weights: torch.Tensor, active) -> torch.Tensor:
    index = cached_table(("active",) + tuple(active), [list(active)], weights.device)[0]
    return weights.index_select(0, index).to(torch.float32)


def _ptr_table(tensors):
    return cached_table(("ptrs",) + tuple(t.data_ptr() for t in tensors), [[t.data_ptr() for t in tensors]],
                        tensors[0].device)[0]


def masked_path_sum_forward(ys, weights, active):
    out = torch.empty_like(ys[0])
    n = out.numel()
    if n == 0:
        return out
    _masked_path_sum_forward_kernel[(triton.cdiv(n, BLOCK),)](
        _ptr_table(ys), _gathered_weights(weights, active), out, n, len(ys), BLOCK=BLOCK, num_warps=8)
    return out


def masked_path_sum_backward(grad_out, ys, weights, active, need_grad_weights):
    grad_ys = [torch.empty_like(grad_out) for _ in active]
    n = grad_out.numel()
    grad_w = torch.zeros(weights.shape, dtype=torch.float32, device=weights.device)
    if n == 0:
        return grad_ys, grad_w.to(weights.dtype)
    programs = triton.cdiv(n, BLOCK)
    paths = len(active)
    partial = torch.empty((programs, paths), dtype=torch.float32, device=grad_out.device)
    y_table = _ptr_table(ys) if need_grad_weights else _ptr_table(grad_ys)  # unread without NEED_DOT
    grad_table = _ptr_table(grad_ys)  # keyed by address, so reuse of freed memory is still correct
    _masked_path_sum_backward_kernel[(programs,)](
        grad_out, y_table, grad_table, _gathered_weights(weights, active), partial, n, paths,
        NEED_DOT=bool(need_grad_weights), BLOCK=BLOCK, num_warps=8)
    if need_grad_weights:
        index = cached_table(("active",) + tuple(active), [list(active)], weights.device)[0]
        grad_w.index_copy_(0, index, partial.sum(dim=0))
    return grad_ys, grad_w.to(weights.dtype)
