"""Triton kernel of the fused multi-tensor SGLD step (contract: stnas/ops/sgld_step.py).

One launch per call covers the whole parameter list: program ``pid`` reads row ``pid`` of a device table
(param, grad and momentum pointers, first element, element count, noise index) and updates BLOCK
elements of that tensor. Byte floor per element: read p, g, v and write p, v; the Philox normals are
made in registers, four per 32-bit Philox call, in the layout of csrc/include/stnas/philox.h.
"""
from __future__ import annotations

import os

import triton
import triton.language as tl

from stnas.kernels._pointer_table import cached_table

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
BLOCK = 4096  # elements per program: a multiple of 4 so that Philox groups never straddle programs
_COLS = 6  # p, g, v, first element, count, noise index


@triton.jit
def philox_normal4(seed, group, index, step_lo, step_hi):
    """The four normals of Philox group ``group`` (uint32 tensor) in the shared stnas layout."""
    # Scalars may arrive as int32 or int64 depending on their value: widen, then truncate to uint32.
    c1 = (tl.full(group.shape, 0, tl.int64) + index).to(tl.uint32)
    c2 = (tl.full(group.shape, 0, tl.int64) + step_lo).to(tl.uint32)
    c3 = (tl.full(group.shape, 0, tl.int64) + step_hi).to(tl.uint32)
    x0, x1, x2, x3 = tl.philox(seed, group, c1, c2, c3)
    scale: tl.constexpr = 1.1920928955078125e-07  # 2^-23
    u0 = ((x0 >> 9).to(tl.float32) + 0.5) * scale
    u1 = ((x1 >> 9).to(tl.float32) + 0.5) * scale
    u2 = ((x2 >> 9).to(tl.float32) + 0.5) * scale
    u3 = ((x3 >> 9).to(tl.float32) + 0.5) * scale
    two_pi: tl.constexpr = 6.283185307179586
    r01 = tl.sqrt(-2.0 * tl.log(u0))
    r23 = tl.sqrt(-2.0 * tl.log(u2))
    return r01 * tl.cos(two_pi * u1), r01 * tl.sin(two_pi * u1), r23 * tl.cos(two_pi * u3), r23 * tl.sin(two_pi * u3)


@triton.jit
def _sgld_step_kernel(table, grad_ref, lr, weight_decay, momentum, sigma, seed, step_lo, step_hi,
                      HAS_GRAD: tl.constexpr, HAS_MOMENTUM: tl.constexpr, HAS_NOISE: tl.constexpr,
                      BLOCK: tl.constexpr):
    row = table + tl.program_id(0) * 6
    p_ptr = tl.load(row).to(tl.pointer_type(tl.float32))
    first = tl.load(row + 3)
    count = tl.load(row + 4)
    offs = first + tl.arange(0, BLOCK)
    mask = offs < count
    p = tl.load(p_ptr + offs, mask=mask, other=0.0)
    if HAS_GRAD:
        g_ptr = tl.load(row + 1).to(grad_ref.dtype)
        d = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32) + weight_decay * p
        if HAS_MOMENTUM:
            v_ptr = tl.load(row + 2).to(tl.pointer_type(tl.float32))
            d = momentum * tl.load(v_ptr + offs, mask=mask, other=0.0) + d
            tl.store(v_ptr + offs, d, mask=mask)
        p = p - lr * d
    if HAS_NOISE:
        index = tl.load(row + 5)
        group = (first // 4 + tl.arange(0, BLOCK // 4)).to(tl.uint32)
        n0, n1, n2, n3 = philox_normal4(seed, group, index, step_lo, step_hi)
        # Interleave into element order 4q+0..4q+3: join(n0,n2) and join(n1,n3) pair along a new last
        # axis; joining those puts (i, k) -> n[2i+k], and the row-major reshape flattens to n0 n1 n2 n3.
        noise = tl.reshape(tl.join(tl.join(n0, n2), tl.join(n1, n3)), (BLOCK,))
        p = p + sigma * noise
    tl.store(p_ptr + offs, p, mask=mask)


def _table(params, grads, momenta, indices):
    key = tuple((p.data_ptr(), p.numel()) for p in params) + tuple(g.data_ptr() for g in grads) + \
        tuple(v.data_ptr() for v in momenta) + tuple(indices)

    def rows():  # built only on a cache miss: 100M params are ~24k rows of Python lists
        out = []
        for i, p in enumerate(params):
            g = grads[i].data_ptr() if grads else 0
            v = momenta[i].data_ptr() if momenta else 0
            out += [[p.data_ptr(), g, v, first, p.numel(), indices[i]] for first in range(0, p.numel(), BLOCK)]
        return out

    table = cached_table(key, rows, params[0].device)
    return table, table.shape[0]


def sgld_step(params, grads, momenta, lr, weight_decay, momentum, sigma, seed, step, indices):
    """Update ``params`` in place; argument conventions of stnas.ops.sgld_step_reference."""
    if not any(p.numel() for p in params):
        return
    table, programs = _table(params, grads, momenta, indices)
    grad_ref = grads[0] if grads else params[0]
    _sgld_step_kernel[(programs,)](
        table, grad_ref, lr, weight_decay, momentum, sigma, seed, step & 0xFFFFFFFF, step >> 32,
        HAS_GRAD=bool(grads), HAS_MOMENTUM=bool(momenta), HAS_NOISE=sigma != 0.0, BLOCK=BLOCK,
        num_warps=8,
    )
