"""Philox4x32-10 normal noise in plain PyTorch: the definition every backend's noise must match.

The layout is the one in ``csrc/include/stnas/philox.h``: element ``j`` of the tensor with parameter
index ``i`` at step ``t`` under ``seed`` takes the ``j % 4``-th normal of the Philox block with counter
``(j // 4, i, t mod 2^32, t // 2^32)`` and key ``(seed mod 2^32, seed // 2^32)``.

32-bit unsigned arithmetic is emulated in int64: products of two 32-bit words are split into 16-bit
halves so that no intermediate leaves int64's range.
"""
from __future__ import annotations

import math

import torch

_MASK32 = 0xFFFFFFFF
_M0, _M1 = 0xD2511F53, 0xCD9E8D57
_W0, _W1 = 0x9E3779B9, 0xBB67AE85


def _mulhilo(m: int, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit words of the 64-bit product m * c, for c holding values in [0, 2^32)."""
    p_lo = (c & 0xFFFF) * m  # < 2^48
    p_hi = (c >> 16) * m  # < 2^48
    hi = (p_hi + (p_lo >> 16)) >> 16
    lo = (p_lo + ((p_hi & 0xFFFF) << 16)) & _MASK32
    return hi, lo


def philox4x32_10(counter: torch.Tensor, c1: int, c2: int, c3: int, seed: int) -> list[torch.Tensor]:
    """Four int64 tensors (values in [0, 2^32)) of Philox4x32-10 for counters (counter, c1, c2, c3)."""
    c0 = counter.to(torch.int64)
    c1t = torch.full_like(c0, c1 & _MASK32)
    c2t = torch.full_like(c0, c2 & _MASK32)
    c3t = torch.full_like(c0, c3 & _MASK32)
    k0, k1 = seed & _MASK32, (seed >> 32) & _MASK32
    for _ in range(10):
        hi0, lo0 = _mulhilo(_M0, c0)
        hi1, lo1 = _mulhilo(_M1, c2t)
        c0, c1t, c2t, c3t = hi1 ^ c1t ^ k0, lo1, hi0 ^ c3t ^ k1, lo0
        k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
    return [c0, c1t, c2t, c3t]


def _uniform(x: torch.Tensor) -> torch.Tensor:
    return ((x >> 9).to(torch.float32) + 0.5) * 2.0**-23


def philox_normal(numel: int, seed: int, step: int, index: int, device=None) -> torch.Tensor:
    """``numel`` float32 normals: the noise of parameter ``index`` at ``step`` under ``seed``."""
    if numel == 0:
        return torch.empty(0, dtype=torch.float32, device=device)
    groups = (numel + 3) // 4
    q = torch.arange(groups, dtype=torch.int64, device=device)
    x0, x1, x2, x3 = philox4x32_10(q, index, step & _MASK32, (step >> 32) & _MASK32, seed)
    two_pi = torch.tensor(2.0 * math.pi, dtype=torch.float32)
    r01 = torch.sqrt(-2.0 * torch.log(_uniform(x0)))
    r23 = torch.sqrt(-2.0 * torch.log(_uniform(x2)))
    t1 = two_pi * _uniform(x1)
    t3 = two_pi * _uniform(x3)
    normals = torch.stack([r01 * torch.cos(t1), r01 * torch.sin(t1), r23 * torch.cos(t3), r23 * torch.sin(t3)], dim=1)
    return normals.reshape(-1)[:numel]
