"""The modules of NAS-Bench-201's cell space (:mod:`stnas.spaces.cell`): the registry's cell ops, the
cell, the residual reduction block and the standalone network of one cell architecture.

The MAdds and parameters that ``CellSpace`` computes analytically are those of these modules (affine
BatchNorm); the tests count them with hooks on a built :class:`CellNet`. Every edge's module comes from
the op registry through :func:`stnas.supernet.ops.make_op`, and :func:`make_cell_edges` lays out a
cell's edges the same way for a standalone cell (one op per edge) and for a mixed search cell (every
candidate per edge), so their weights carry the same names.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from stnas.spaces import Space
from stnas.spaces.cell import CellArch, CellSpace, cell_edges
from stnas.spaces.errors import SpaceError
from stnas.spaces.ops import OpDef, get_op
from stnas.supernet.ops import make_op


def _check_same_shape(op: OpDef, cin: int, cout: int, stride: int) -> None:
    if cin != cout or stride != 1:
        raise SpaceError(f"op {op.name!r} keeps the shape: it takes cin == cout and stride 1, got {cin} -> {cout}, "
                         f"stride {stride}")


class Zero(nn.Module):
    """The zero op. A cell never calls it (its edge is skipped); it exists so that every edge has a
    module of the same name, and it computes the zero of NAS-Bench-201 if called."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


class ReLUConvBN(nn.Sequential):
    """ReLU -> kxk convolution ('same' padding, no bias) -> BatchNorm (affine or not)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, affine: bool = True):
        super().__init__(OrderedDict(relu=nn.ReLU(inplace=False),
                                     conv=nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                                     bn=nn.BatchNorm2d(cout, affine=affine)))


def make_zero(op: OpDef, cin: int, cout: int, stride: int, affine: bool = True) -> Zero:
    """Registry builder of ``none``."""
    _check_same_shape(op, cin, cout, stride)
    return Zero()


def make_identity(op: OpDef, cin: int, cout: int, stride: int, affine: bool = True) -> nn.Identity:
    """Registry builder of ``skip_connect``."""
    _check_same_shape(op, cin, cout, stride)
    return nn.Identity()


def make_nor_conv(op: OpDef, cin: int, cout: int, stride: int, affine: bool = True) -> ReLUConvBN:
    """Registry builder of ``nor_conv_1x1`` and ``nor_conv_3x3``."""
    _check_same_shape(op, cin, cout, stride)
    return ReLUConvBN(cin, cout, op.arg("kernel"), stride, affine)


def make_avg_pool(op: OpDef, cin: int, cout: int, stride: int, affine: bool = True) -> nn.AvgPool2d:
    """Registry builder of ``avg_pool_3x3``: padding excluded from the average, as NAS-Bench-201's."""
    _check_same_shape(op, cin, cout, stride)
    k = op.arg("kernel")
    return nn.AvgPool2d(k, stride, k // 2, count_include_pad=False)


# ---------------------------------------------------------------------- cells

def edge_key(dst: int, src: int) -> str:
    """The module name of edge ``dst <- src`` (as the decisions' ``where`` spells it)."""
    return f"{dst}<-{src}"


def make_cell_edges(nodes: int, ops: Sequence[Sequence[str]], channels: int, affine: bool) -> nn.ModuleDict:
    """The modules of a cell's edges: ``edges["2<-1"]["nor_conv_3x3"]``, one entry per op that
    ``ops[k]`` lists for edge k (arch-string order). A standalone cell lists its one op per edge, a mixed
    search cell every candidate; the names are the same, so weights can move between them."""
    edges = cell_edges(nodes)
    if len(ops) != len(edges):
        raise SpaceError(f"a cell of {nodes} nodes has {len(edges)} edges, got ops for {len(ops)}")
    out = nn.ModuleDict()
    for (dst, src), names in zip(edges, ops):
        out[edge_key(dst, src)] = nn.ModuleDict({name: make_op(name, channels, channels, 1, affine=affine)
                                                 for name in names})
    return out


class Cell(nn.Module):
    """One cell of a fixed architecture: node i sums ``op(node j)`` over its inputs j < i; the output is
    the last node. Zero-op edges are never computed; a node whose inputs are all zero ops is a zero
    tensor, and the ops that read it still run (on zeros, as in NAS-Bench-201, so that the network
    computes, and costs, what the benchmark's does)."""

    def __init__(self, arch: CellArch, channels: int, affine: bool = True):
        super().__init__()
        self.nodes = arch.nodes
        self.edges = make_cell_edges(arch.nodes, [(op,) for op in arch.ops], channels, affine)
        # Per node, the (module, source node) of its non-zero inputs, computed once.
        self._inputs = [[(edge_key(dst, src), arch.op(dst, src), src) for src in range(dst)
                         if not get_op(arch.op(dst, src)).zero] for dst in range(arch.nodes)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = [x]
        for dst in range(1, self.nodes):
            total = None
            for key, op, src in self._inputs[dst]:
                y = self.edges[key][op](states[src])
                total = y if total is None else total + y
            states.append(torch.zeros_like(x) if total is None else total)
        return states[-1]


class ResNetBasicBlock(nn.Module):
    """NAS-Bench-201's reduction block (a ResNet basic block): ReLU-conv3x3 (stride)-BN -> ReLU-conv3x3-BN,
    plus a shortcut: 2x2 average pooling and a 1x1 conv (no BN) at stride 2, a ReLU-conv1x1-BN where only
    the width changes, else the identity."""

    def __init__(self, cin: int, cout: int, stride: int = 2, affine: bool = True):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"ResNetBasicBlock: stride must be 1 or 2, got {stride}")
        self.conv_a = ReLUConvBN(cin, cout, 3, stride, affine)
        self.conv_b = ReLUConvBN(cout, cout, 3, 1, affine)
        if stride == 2:
            self.shortcut = nn.Sequential(OrderedDict(pool=nn.AvgPool2d(2, 2),
                                                      conv=nn.Conv2d(cin, cout, 1, bias=False)))
        elif cin != cout:
            self.shortcut = ReLUConvBN(cin, cout, 1, 1, affine)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


class CellHead(nn.Module):
    """BN + ReLU, global average pooling, linear classifier."""

    def __init__(self, channels: int, num_classes: int, affine: bool = True):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=affine)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.relu(self.bn(x)).mean((2, 3)))


def cell_skeleton(space: CellSpace, make_cell) -> tuple[nn.Module, nn.Sequential, CellHead]:
    """NAS-Bench-201's skeleton around the cells ``make_cell(site)`` gives (a fixed cell, or a mixed
    search cell): stem conv 3x3 + BN, the cells of every stage with a ResNet basic block (affine BN)
    before each later stage, and the head. Returns (stem, body, head), built in that order (so weights
    initialise alike in every network built on it)."""
    stem = nn.Sequential(OrderedDict(conv=nn.Conv2d(space.in_channels, space.channels, 3, 1, 1, bias=False),
                                     bn=nn.BatchNorm2d(space.channels)))
    body = nn.Sequential()
    reductions = {r.stage: r for r in space.reductions}
    for site in space.cells:
        if site.index == 0 and site.stage in reductions:
            r = reductions[site.stage]
            body.add_module(f"reduce{site.stage}", ResNetBasicBlock(r.cin, r.cout, 2, affine=True))
        body.add_module(f"stage{site.stage}_cell{site.index}", make_cell(site))
    return stem, body, CellHead(space.stage_channels[-1], space.num_classes)


class CellNet(nn.Module):
    """The NAS-Bench-201 network of one cell architecture, with affine BatchNorm: the model whose
    accuracy the benchmark's table reports and that ``stnas retrain`` trains.

    Modules: ``stem``; ``body.stage{s}_cell{i}`` (a :class:`Cell`, edges ``edges["2<-1"][op]``) and
    ``body.reduce{s}`` (the :class:`ResNetBasicBlock` before stage s); ``head``."""

    def __init__(self, space: CellSpace | str, arch: CellArch | str):
        super().__init__()
        space = Space.load(space)
        if not isinstance(space, CellSpace):
            raise SpaceError(f"CellNet takes a cell space, got a {space.kind!r} space ({space.name!r})")
        arch = space.arch_from_nb201(arch) if isinstance(arch, str) else space.validate(arch)
        self.space, self.arch = space, arch
        self.stem, self.body, self.head = cell_skeleton(space, lambda site: Cell(arch, site.channels))

    def inherit(self, supernet: nn.Module) -> "CellNet":
        """Take a single-path cell supernet's weights (and BN statistics) for this architecture's ops."""
        from stnas.supernet.single_path_cell import inherit

        return inherit(self, supernet)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x)))
