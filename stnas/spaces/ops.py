"""Candidate operations of a space, as names, and their analytic cost.

An op name is data: ``mb_k{3,5,7}_e{1,3,6}`` is an inverted-residual MBConv block (MobileNetV2,
Sandler et al. 2018) with that depthwise kernel and expansion; ``skip`` is the identity where the edge
keeps the shape, and a 1x1 convolution + BatchNorm projection where its stride or width changes. The
supernet (``stnas.supernet.blocks``) builds modules from the same names; the costs here must match what
those modules compute (the tests count the built modules with hooks).

Costs follow the usual convention of the MobileNet papers: one multiply-add per weight per output
position of every convolution and of the classifier; BatchNorm (foldable into the convolution), ReLU6,
pooling and residual additions are not counted. Parameters count every weight, bias and BatchNorm affine
parameter (running statistics are buffers, not parameters).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_MBCONV = re.compile(r"^mb_k([357])_e([136])$")
KERNELS = (3, 5, 7)
EXPANSIONS = (1, 3, 6)


@dataclass(frozen=True)
class OpSpec:
    """A parsed op name: ``kind`` is ``"mbconv"`` or ``"skip"``."""

    kind: str
    kernel: int = 0
    expansion: int = 0


def parse_op(name: str) -> OpSpec | None:
    """The op that ``name`` denotes, or None when it is not an op name."""
    if name == "skip":
        return OpSpec("skip")
    m = _MBCONV.match(name) if isinstance(name, str) else None
    return OpSpec("mbconv", int(m.group(1)), int(m.group(2))) if m else None


def op_names() -> list[str]:
    """Every valid op name."""
    return [f"mb_k{k}_e{e}" for k in KERNELS for e in EXPANSIONS] + ["skip"]


def conv_out(size: int, stride: int) -> int:
    """Spatial size after a 'same'-padded convolution (padding k // 2, odd k): ceil(size / stride)."""
    return (size + stride - 1) // stride


def conv_cost(cin: int, cout: int, kernel: int, out_hw: int, groups: int = 1, bn: bool = True,
              bias: bool = False) -> tuple[int, int]:
    """(multiply-adds, parameters) of a kxk convolution with ``out_hw`` output positions."""
    weights = kernel * kernel * (cin // groups) * cout
    params = weights + (2 * cout if bn else 0) + (cout if bias else 0)
    return weights * out_hw, params


def op_cost(name: str, cin: int, cout: int, stride: int, in_size: int) -> tuple[int, int]:
    """(multiply-adds, parameters) of op ``name`` from ``cin`` to ``cout`` channels on an
    ``in_size`` x ``in_size`` input with ``stride``; 0 for an identity skip."""
    spec = parse_op(name)
    if spec is None:
        raise ValueError(f"unknown op {name!r} (ops: {', '.join(op_names())})")
    out = conv_out(in_size, stride)
    if spec.kind == "skip":
        if stride == 1 and cin == cout:
            return 0, 0
        return conv_cost(cin, cout, 1, out * out)
    hidden = cin * spec.expansion
    madds = params = 0
    if spec.expansion != 1:
        m, p = conv_cost(cin, hidden, 1, in_size * in_size)
        madds, params = madds + m, params + p
    m, p = conv_cost(hidden, hidden, spec.kernel, out * out, groups=hidden)
    madds, params = madds + m, params + p
    m, p = conv_cost(hidden, cout, 1, out * out)
    return madds + m, params + p
