"""Modules of the op registry's names: :func:`make_op` builds the module that ``stnas.spaces.ops``
names for an op, so that one registry says what an op costs and what computes it."""
from __future__ import annotations

import importlib
from functools import lru_cache

from torch import nn

from stnas.spaces.ops import get_op


@lru_cache(maxsize=None)
def _builder(path: str):
    module, _, function = path.partition(":")
    return getattr(importlib.import_module(module), function)


def make_op(name: str, cin: int, cout: int, stride: int, affine: bool = True) -> nn.Module:
    """The module of registered op ``name`` from ``cin`` to ``cout`` channels with ``stride``; ``affine``:
    BatchNorm with learnable scale and shift (standalone models) or without (search cells of
    differentiable methods, as NAS-Bench-201's)."""
    op = get_op(name)
    return _builder(op.module)(op, cin, cout, stride, affine=affine)
