"""Triton kernels of a TopoNAS merged edge's skip + average pooling (contract: stnas/supernet/toponas.py,
``skip_pool``): ``out = ws * x + wp * P(x)``, P the 3x3 average pooling (stride 1, padding 1) dividing by
the window's valid count (``EXACT``, count_include_pad=False) or by 9.

One program owns BLOCK consecutive elements of the tensor's storage. A dense tensor in any layout (NCHW
or channels_last) gives each storage offset its row and column as ``(offset // stride) % size``, and its
eight neighbours sit at ``offset +- stride_h +- stride_w``, so one kernel serves both layouts; the
neighbours' loads hit the cache lines the adjacent programs read. The weights are read on the device
(no host synchronisation). Byte floor: forward reads x and writes out; backward reads g and x and writes
dx, with ``<g, x>`` and ``<P^T g, x>`` (the weights' gradients) as one partial sum per program, added in
program order afterwards (the same result on every run).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
BLOCK = 4096 if _INTERPRET else 1024  # the interpreter pays per program, the GPU per register


@triton.jit
def _taps(i, n, EXACT: tl.constexpr):
    # Valid taps of a 3-wide window at position i of n (3 when the border is counted as padding).
    if EXACT:
        return 1.0 + (i > 0).to(tl.float32) + (i < n - 1).to(tl.float32)
    return tl.full(i.shape, 3.0, tl.float32)


@triton.jit
def _block(numel, H, W, stride_h, stride_w, BLOCK: tl.constexpr):
    # This program's storage offsets, their mask, and each one's row and column.
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    return offs, offs < numel, (offs // stride_h) % H, (offs // stride_w) % W


@triton.jit
def _neighbour(offs, mask, h, w, H, W, stride_h, stride_w, DH: tl.constexpr, DW: tl.constexpr):
    # The offset of the neighbour (h + DH, w + DW) of every element, and where it exists.
    hh, ww = h + DH, w + DW
    return offs + DH * stride_h + DW * stride_w, mask & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W), hh, ww


@triton.jit
def _skip_pool_forward_kernel(x, out, ws, wp, numel, H, W, stride_h, stride_w,
                              EXACT: tl.constexpr, FP64: tl.constexpr, BLOCK: tl.constexpr):
    offs, mask, h, w = _block(numel, H, W, stride_h, stride_w, BLOCK)
    if FP64:
        acc = tl.zeros((BLOCK,), tl.float64)
    else:
        acc = tl.zeros((BLOCK,), tl.float32)
    for dh in tl.static_range(3):
        for dw in tl.static_range(3):
            at, ok, _, _ = _neighbour(offs, mask, h, w, H, W, stride_h, stride_w, dh - 1, dw - 1)
            acc += tl.load(x + at, mask=ok, other=0.0).to(acc.dtype)
    count = (_taps(h, H, EXACT) * _taps(w, W, EXACT)).to(acc.dtype)
    xv = tl.load(x + offs, mask=mask, other=0.0).to(acc.dtype)
    y = tl.load(ws).to(acc.dtype) * xv + tl.load(wp).to(acc.dtype) * (acc / count)
    tl.store(out + offs, y.to(out.dtype.element_ty), mask=mask)


@triton.jit
def _skip_pool_backward_kernel(g, x, dx, ws, wp, partial, numel, H, W, stride_h, stride_w,
                               EXACT: tl.constexpr, FP64: tl.constexpr, BLOCK: tl.constexpr):
    offs, mask, h, w = _block(numel, H, W, stride_h, stride_w, BLOCK)
    if FP64:
        q = tl.zeros((BLOCK,), tl.float64)
    else:
        q = tl.zeros((BLOCK,), tl.float32)
    # P^T g at i: the neighbours' gradients, each divided by the neighbour's own count.
    for dh in tl.static_range(3):
        for dw in tl.static_range(3):
            at, ok, hh, ww = _neighbour(offs, mask, h, w, H, W, stride_h, stride_w, dh - 1, dw - 1)
            gn = tl.load(g + at, mask=ok, other=0.0).to(q.dtype)
            q += gn / (_taps(hh, H, EXACT) * _taps(ww, W, EXACT)).to(q.dtype)
    gv = tl.load(g + offs, mask=mask, other=0.0).to(q.dtype)
    xv = tl.load(x + offs, mask=mask, other=0.0).to(q.dtype)
    d = tl.load(ws).to(q.dtype) * gv + tl.load(wp).to(q.dtype) * q
    tl.store(dx + offs, d.to(dx.dtype.element_ty), mask=mask)
    pid = tl.program_id(0)
    tl.store(partial + 2 * pid, tl.sum(gv * xv, axis=0))
    tl.store(partial + 2 * pid + 1, tl.sum(q * xv, axis=0))


def _geometry(x: torch.Tensor):
    """(numel, H, W, stride_h, stride_w, grid, accumulation dtype) of a dense 4-D tensor."""
    _, _, h, w = x.shape
    _, _, sh, sw = x.stride()
    # A size-1 dim's stride is arbitrary (possibly 0): any positive value gives coordinate 0 there.
    sh, sw = (sh if h > 1 else 1), (sw if w > 1 else 1)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    return x.numel(), h, w, sh, sw, (triton.cdiv(x.numel(), BLOCK),), acc


def _weight(v: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
    return v.detach().reshape(1).to(acc)


def skip_pool_forward(x: torch.Tensor, w_skip: torch.Tensor, w_pool: torch.Tensor, exact: bool) -> torch.Tensor:
    numel, h, w, sh, sw, grid, acc = _geometry(x)
    out = torch.empty_like(x)
    _skip_pool_forward_kernel[grid](x, out, _weight(w_skip, acc), _weight(w_pool, acc), numel, h, w, sh, sw,
                                    EXACT=exact, FP64=acc == torch.float64, BLOCK=BLOCK)
    return out


def skip_pool_backward(g: torch.Tensor, x: torch.Tensor, w_skip: torch.Tensor, w_pool: torch.Tensor,
                       exact: bool):
    """(dx, <g, x>, <P^T g, x>); g must have x's shape and strides. The dots are 0-d, float32 (float64 for
    float64 inputs), summed over the programs' partials in float64."""
    numel, h, w, sh, sw, grid, acc = _geometry(x)
    dx = torch.empty_like(x)
    partial = torch.empty((grid[0], 2), dtype=acc, device=x.device)
    _skip_pool_backward_kernel[grid](g, x, dx, _weight(w_skip, acc), _weight(w_pool, acc), partial, numel, h, w,
                                     sh, sw, EXACT=exact, FP64=acc == torch.float64, BLOCK=BLOCK)
    dots = partial.sum(0, dtype=torch.float64).to(acc)
    return dx, dots[0], dots[1]
