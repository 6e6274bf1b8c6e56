"""Triton kernels of the fused BatchNorm + addend + activation (contract: stnas/ops/batch_norm_act.py).

The input is walked as a matrix of M = N*H*W rows by C channels whatever its layout: element (m, c) of
image n = m // (H*W), pixel s = m % (H*W) sits at n*stride_n + c*stride_c + s*stride_s, so one kernel
serves contiguous NCHW (stride_s = 1) and channels_last (stride_c = 1). Each program owns a tile of
BLOCK_M rows by BLOCK_C channels. Four passes, as in every backend: statistics (shifted sums per tile,
added in float64 across tiles), normalise + addend + activation, the backward's two per-channel sums, and
the input gradient. The per-channel finishing math between passes is a few ops on C-vectors.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _activate(z, ACT: tl.constexpr):
    if ACT == 1:
        z = tl.maximum(z, 0.0)
    elif ACT == 2:
        z = tl.minimum(tl.maximum(z, 0.0), 6.0)
    return z


@triton.jit
def _act_mask(y, ACT: tl.constexpr):
    # PyTorch's backward masks: relu where y > 0, relu6 (hardtanh) where 0 < y < 6.
    if ACT == 1:
        return (y > 0.0).to(tl.float32)
    elif ACT == 2:
        return ((y > 0.0) & (y < 6.0)).to(tl.float32)
    return tl.full(y.shape, 1.0, tl.float32)


@triton.jit
def _tile(M, C, S, stride_n, stride_c, stride_s, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    m = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    n, s = m // S, m % S
    offs = (n * stride_n + s * stride_s)[:, None] + (c.to(tl.int64) * stride_c)[None, :]
    mask = (m < M)[:, None] & (c < C)[None, :]
    return offs, mask, c, c < C


@triton.jit
def _batch_norm_act_stats_kernel(x, shift, s1, s2, M, C, S, stride_n, stride_c, stride_s,
                                 BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    offs, mask, c, cmask = _tile(M, C, S, stride_n, stride_c, stride_s, BLOCK_M, BLOCK_C)
    sh = tl.load(shift + c, mask=cmask, other=0.0)
    d = tl.where(mask, tl.load(x + offs, mask=mask, other=0.0).to(tl.float32) - sh[None, :], 0.0)
    row = tl.program_id(0) * C
    tl.store(s1 + row + c, tl.sum(d, axis=0), mask=cmask)
    tl.store(s2 + row + c, tl.sum(d * d, axis=0), mask=cmask)


@triton.jit
def _batch_norm_act_apply_kernel(x, add, scale, bias, y, M, C, S, stride_n, stride_c, stride_s,
                                 HAS_ADD: tl.constexpr, ACT: tl.constexpr,
                                 BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    offs, mask, c, cmask = _tile(M, C, S, stride_n, stride_c, stride_s, BLOCK_M, BLOCK_C)
    a = tl.load(scale + c, mask=cmask, other=0.0)
    b = tl.load(bias + c, mask=cmask, other=0.0)
    z = tl.load(x + offs, mask=mask, other=0.0).to(tl.float32) * a[None, :] + b[None, :]
    if HAS_ADD:
        z += tl.load(add + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(y + offs, _activate(z, ACT).to(y.dtype.element_ty), mask=mask)


@triton.jit
def _batch_norm_act_backward_reduce_kernel(g, y, x, mean, s1, s2, M, C, S, stride_n, stride_c, stride_s,
                                           ACT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    offs, mask, c, cmask = _tile(M, C, S, stride_n, stride_c, stride_s, BLOCK_M, BLOCK_C)
    dz = tl.load(g + offs, mask=mask, other=0.0).to(tl.float32)
    if ACT != 0:
        dz *= _act_mask(tl.load(y + offs, mask=mask, other=0.0).to(tl.float32), ACT)
    mu = tl.load(mean + c, mask=cmask, other=0.0)
    xmu = tl.where(mask, tl.load(x + offs, mask=mask, other=0.0).to(tl.float32) - mu[None, :], 0.0)
    row = tl.program_id(0) * C
    tl.store(s1 + row + c, tl.sum(dz, axis=0), mask=cmask)
    tl.store(s2 + row + c, tl.sum(dz * xmu, axis=0), mask=cmask)


@triton.jit
def _batch_norm_act_backward_apply_kernel(g, y, x, mean, k1, k2, k3, dx, dadd, M, C, S, stride_n, stride_c,
                                          stride_s, HAS_ADD: tl.constexpr, ACT: tl.constexpr,
                                          BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    offs, mask, c, cmask = _tile(M, C, S, stride_n, stride_c, stride_s, BLOCK_M, BLOCK_C)
    dz = tl.load(g + offs, mask=mask, other=0.0).to(tl.float32)
    if ACT != 0:
        dz *= _act_mask(tl.load(y + offs, mask=mask, other=0.0).to(tl.float32), ACT)
    mu = tl.load(mean + c, mask=cmask, other=0.0)
    a = tl.load(k1 + c, mask=cmask, other=0.0)
    b = tl.load(k2 + c, mask=cmask, other=0.0)
    d = tl.load(k3 + c, mask=cmask, other=0.0)
    xv = tl.load(x + offs, mask=mask, other=0.0).to(tl.float32)
    out = a[None, :] * dz + b[None, :] * (xv - mu[None, :]) + d[None, :]
    tl.store(dx + offs, out.to(dx.dtype.element_ty), mask=mask)
    if HAS_ADD:
        tl.store(dadd + offs, dz.to(dadd.dtype.element_ty), mask=mask)


def _geometry(x: torch.Tensor):
    """(M, C, S, strides, grid, meta): the matrix view of x and its tiling."""
    n, c, h, w = x.shape
    s = h * w
    sn, sc, sh, sw = x.stride()
    # Dense in either layout, the pixel index s walks with stride sw (W's stride; H's is W times it).
    stride_s = sw if w > 1 else (sh if h > 1 else 1)
    block_c = min(triton.next_power_of_2(c), 64)
    block_m = max(16, min(1024 if not _INTERPRET else 4096, 4096 // block_c))
    grid = (triton.cdiv(n * s, block_m), triton.cdiv(c, block_c))
    return (n * s, c, s, sn, sc, stride_s), grid, {"BLOCK_M": block_m, "BLOCK_C": block_c, "num_warps": 4}


def _vector(v, c, device, fill):
    if v is None:
        return torch.full((c,), fill, dtype=torch.float32, device=device)
    return v.to(torch.float32)


def batch_norm_act_forward(x, weight, bias, running_mean, running_var, addend, training, momentum, eps, act):
    dims, grid, meta = _geometry(x)
    m, c = dims[0], dims[1]
    dev = x.device
    if training:
        shift = x[0, :, 0, 0].to(torch.float32).contiguous()  # shifted sums: |mean| >> std loses nothing
        s1 = torch.empty((grid[0], c), dtype=torch.float32, device=dev)
        s2 = torch.empty_like(s1)
        _batch_norm_act_stats_kernel[grid](x, shift, s1, s2, *dims, **meta)
        d = s1.sum(0, dtype=torch.float64) / m
        var64 = (s2.sum(0, dtype=torch.float64) / m - d * d).clamp_min_(0.0)
        mean = (shift.double() + d).to(torch.float32)
    else:
        mean = running_mean.to(torch.float32, copy=True)
        var64 = running_var.double()
    invstd64 = torch.rsqrt(var64 + eps)
    scale64 = invstd64 * _vector(weight, c, dev, 1.0).double()
    shift64 = _vector(bias, c, dev, 0.0).double() - mean.double() * scale64
    y = torch.empty_like(x)
    _batch_norm_act_apply_kernel[grid](x, addend if addend is not None else x, scale64.float(), shift64.float(), y,
                                       *dims, HAS_ADD=addend is not None, ACT=act, **meta)
    if training and running_mean is not None:
        with torch.no_grad():  # nn.BatchNorm2d's update, unbiased variance
            running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
            running_var.mul_(1 - momentum).add_((var64 * (m / (m - 1))).float(), alpha=momentum)
    return y, mean, invstd64.float()


def batch_norm_act_backward(grad_y, x, y, weight, mean, invstd, training, act, has_addend):
    dims, grid, meta = _geometry(x)
    m, c = dims[0], dims[1]
    dev = x.device
    yy = y if y is not None else grad_y  # unread without an activation
    s1 = torch.empty((grid[0], c), dtype=torch.float32, device=dev)
    s2 = torch.empty_like(s1)
    _batch_norm_act_backward_reduce_kernel[grid](grad_y, yy, x, mean, s1, s2, *dims, ACT=act, **meta)
    sdz, sdzx = s1.sum(0, dtype=torch.float64), s2.sum(0, dtype=torch.float64)
    is64 = invstd.double()
    k = is64 * _vector(weight, c, dev, 1.0).double()
    if training:
        k2, k3 = -k * is64 * is64 * sdzx / m, -k * sdz / m
    else:
        k2 = k3 = torch.zeros_like(k)
    dx = torch.empty_like(x)
    dadd = torch.empty_like(x) if has_addend else x.new_empty(0)
    _batch_norm_act_backward_apply_kernel[grid](grad_y, yy, x, mean, k.float(), k2.float(), k3.float(), dx,
                                                dadd if has_addend else dx, *dims, HAS_ADD=has_addend, ACT=act,
                                                **meta)
    return dx, (sdzx * is64).float(), sdz.float(), dadd
