"""Device tables of raw pointers, so that one Triton launch can walk a list of tensors.

A kernel loads an int64 from the table and casts it to a pointer of the element type it needs. Tables
are cached by the tensors' addresses and sizes, so a training loop that steps the same parameters pays
the host-to-device copy once.
"""
from __future__ import annotations

import torch

_CACHE: dict[tuple, torch.Tensor] = {}
_CACHE_LIMIT = 64


def cached_table(key: tuple, rows, device: torch.device) -> torch.Tensor:
    """An int64 device tensor of ``rows`` (a list of equal-length int lists, or a function returning
    one, called only on a cache miss), cached under ``key``."""
    full_key = (key, str(device))
    table = _CACHE.get(full_key)
    if table is None:
        if len(_CACHE) >= _CACHE_LIMIT:
            _CACHE.clear()
        rows = rows() if callable(rows) else rows
        table = torch.tensor(rows, dtype=torch.int64).reshape(len(rows), -1).to(device, non_blocking=True)
        _CACHE[full_key] = table
    return table
