"""The one op registry: every candidate operation's name, its analytic cost and the module that computes it.

A space names its candidate ops; the registry says what each name costs (``OpDef.cost``) and which
module computes it (``OpDef.module``, an import path that :func:`stnas.supernet.ops.make_op` resolves,
so this file stays free of torch). The tests build every registered op and count its MAdds and
parameters with hooks against ``cost``, so the two can never drift apart.

Chain ops (MobileNet-like spaces of ST-NAS):
- ``mb_k{3,5,7}_e{1,3,6}``: the inverted-residual MBConv block (MobileNetV2, Sandler et al. 2018) with
  that depthwise kernel and expansion;
- ``skip``: the identity where the edge keeps the shape, a 1x1 conv + BN projection where its stride or
  width changes.

Cell ops (NAS-Bench-201, Dong & Yang 2020; the names are the benchmark's):
- ``none``: the zero op (``zero``: a path that is never computed);
- ``skip_connect``: the identity (the cells of NAS-Bench-201 keep the shape);
- ``nor_conv_1x1``, ``nor_conv_3x3``: ReLU -> k x k conv (no bias) -> BN;
- ``avg_pool_3x3``: 3x3 average pooling, stride 1, padding 1, ``count_include_pad=False``.

Costs follow the MobileNet papers' convention: one multiply-add per weight per output position of every
convolution and of the classifier; BatchNorm (foldable into the convolution), activations, pooling and
additions are not counted. Parameters count every weight, bias and BatchNorm affine parameter (running
statistics are buffers, not parameters).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from stnas.spaces.errors import SpaceError

Cost = tuple[int, int]  # (multiply-adds, parameters)


@dataclass(frozen=True)
class OpDef:
    """A registered op. ``cost(cin, cout, stride, in_size, affine)`` gives (MAdds, params) on an
    ``in_size`` x ``in_size`` input; ``module`` is ``"package.module:function"``, a builder called as
    ``function(op, cin, cout, stride, affine=...)``; ``family`` is the kind of space it belongs to;
    ``args`` are the op's own settings (kernel, expansion)."""

    name: str
    family: str
    cost: Callable[..., Cost] = field(compare=False)
    module: str
    args: tuple[tuple[str, int], ...] = ()
    zero: bool = False          # the op's output is zero: a masked path, never computed
    identity: bool = False      # the op returns its input (where shapes allow)

    def arg(self, key: str) -> int:
        return dict(self.args)[key]


_REGISTRY: dict[str, OpDef] = {}


def register_op(op: OpDef) -> OpDef:
    if op.name in _REGISTRY:
        raise ValueError(f"op {op.name!r} is registered twice")
    _REGISTRY[op.name] = op
    return op


def get_op(name) -> OpDef:
    """The registered op ``name``; a SpaceError listing the ops when there is none."""
    op = _REGISTRY.get(name) if isinstance(name, str) else None
    if op is None:
        raise SpaceError(f"unknown op {name!r} (ops: {', '.join(op_names())})")
    return op


def is_op(name, family: str | None = None) -> bool:
    op = _REGISTRY.get(name) if isinstance(name, str) else None
    return op is not None and (family is None or op.family == family)


def op_names(family: str | None = None) -> list[str]:
    """Every registered op name (of one family: ``"chain"`` or ``"cell"``)."""
    return [n for n, op in _REGISTRY.items() if family is None or op.family == family]


def op_cost(name: str, cin: int, cout: int, stride: int, in_size: int, affine: bool = True) -> Cost:
    """(multiply-adds, parameters) of op ``name`` from ``cin`` to ``cout`` channels."""
    return get_op(name).cost(cin, cout, stride, in_size, affine)


# ---------------------------------------------------------------------- shared arithmetic

def conv_out(size: int, stride: int) -> int:
    """Spatial size after a 'same'-padded convolution (padding k // 2, odd k): ceil(size / stride)."""
    return (size + stride - 1) // stride


def conv_cost(cin: int, cout: int, kernel: int, out_hw: int, groups: int = 1, bn: bool = True,
              bias: bool = False) -> Cost:
    """(multiply-adds, parameters) of a kxk convolution with ``out_hw`` output positions, with an affine
    BatchNorm after it when ``bn``."""
    weights = kernel * kernel * (cin // groups) * cout
    params = weights + (2 * cout if bn else 0) + (cout if bias else 0)
    return weights * out_hw, params


def _add(*costs: Cost) -> Cost:
    return sum(c[0] for c in costs), sum(c[1] for c in costs)


# ---------------------------------------------------------------------- chain ops

KERNELS = (3, 5, 7)
EXPANSIONS = (1, 3, 6)


def _mbconv_cost(kernel: int, expansion: int):
    def cost(cin, cout, stride, in_size, affine=True):
        hidden = cin * expansion
        out = conv_out(in_size, stride)
        parts = [conv_cost(cin, hidden, 1, in_size * in_size)] if expansion != 1 else []
        parts += [conv_cost(hidden, hidden, kernel, out * out, groups=hidden), conv_cost(hidden, cout, 1, out * out)]
        return _add(*parts)
    return cost


def _skip_cost(cin, cout, stride, in_size, affine=True):
    if stride == 1 and cin == cout:
        return 0, 0
    out = conv_out(in_size, stride)
    return conv_cost(cin, cout, 1, out * out)


for _k in KERNELS:
    for _e in EXPANSIONS:
        register_op(OpDef(f"mb_k{_k}_e{_e}", "chain", _mbconv_cost(_k, _e), "stnas.supernet.blocks:make_mbconv",
                          args=(("kernel", _k), ("expansion", _e))))
register_op(OpDef("skip", "chain", _skip_cost, "stnas.supernet.blocks:make_skip", identity=True))


# ---------------------------------------------------------------------- cell ops (NAS-Bench-201)

def _same_shape(name):
    def check(cin, cout, stride):
        if cin != cout or stride != 1:
            raise SpaceError(f"op {name!r} keeps the shape: it takes cin == cout and stride 1, got {cin} -> {cout}, "
                             f"stride {stride}")
    return check


def _nor_conv_cost(kernel: int, name: str):
    check = _same_shape(name)

    def cost(cin, cout, stride, in_size, affine=True):
        check(cin, cout, stride)
        return conv_cost(cin, cout, kernel, in_size * in_size, bn=affine)
    return cost


def _free(name: str):
    check = _same_shape(name)

    def cost(cin, cout, stride, in_size, affine=True):
        check(cin, cout, stride)
        return 0, 0
    return cost


register_op(OpDef("none", "cell", _free("none"), "stnas.supernet.cell_blocks:make_zero", zero=True))
register_op(OpDef("skip_connect", "cell", _free("skip_connect"), "stnas.supernet.cell_blocks:make_identity",
                  identity=True))
register_op(OpDef("nor_conv_1x1", "cell", _nor_conv_cost(1, "nor_conv_1x1"), "stnas.supernet.cell_blocks:make_nor_conv",
                  args=(("kernel", 1),)))
register_op(OpDef("nor_conv_3x3", "cell", _nor_conv_cost(3, "nor_conv_3x3"), "stnas.supernet.cell_blocks:make_nor_conv",
                  args=(("kernel", 3),)))
register_op(OpDef("avg_pool_3x3", "cell", _free("avg_pool_3x3"), "stnas.supernet.cell_blocks:make_avg_pool",
                  args=(("kernel", 3),)))
