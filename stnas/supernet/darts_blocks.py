"""The modules of the ``darts-gold`` space (:mod:`stnas.spaces.darts_cell`): the registry's darts ops
(``sep_conv_3x3``, ``factorized_reduce``), the DARTS skeleton around any cell, and the standalone network
of one architecture (:class:`DartsGoldNet`, what ``stnas retrain`` trains).

The standalone network and the gated supernet (:mod:`stnas.supernet.gated`) are laid out by the same
functions, so their modules carry the same names (``cells.3.edges["4<-1"]["sep_conv_3x3"]``) and the
MAdds and parameters that the space computes analytically are those of these modules (affine BN); the
tests count them with hooks.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import nn

from stnas.spaces import Space
from stnas.spaces.darts_cell import EDGES, INPUT_NODES, STEPS, DartsGoldSpace, GoldArch, GoldCell, registry_op
from stnas.spaces.errors import SpaceError
from stnas.spaces.ops import OpDef
from stnas.supernet.cell_blocks import ReLUConvBN, edge_key
from stnas.supernet.ops import make_op


class SepConv(nn.Sequential):
    """DARTS's separable conv, applied twice: ReLU-dw k x k (stride)-pw 1x1-BN-ReLU-dw k x k-pw 1x1-BN."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, affine: bool = True):
        pad = kernel // 2
        super().__init__(OrderedDict(
            relu1=nn.ReLU(inplace=False), dw1=nn.Conv2d(cin, cin, kernel, stride, pad, groups=cin, bias=False),
            pw1=nn.Conv2d(cin, cin, 1, bias=False), bn1=nn.BatchNorm2d(cin, affine=affine),
            relu2=nn.ReLU(inplace=False), dw2=nn.Conv2d(cin, cin, kernel, 1, pad, groups=cin, bias=False),
            pw2=nn.Conv2d(cin, cout, 1, bias=False), bn2=nn.BatchNorm2d(cout, affine=affine)))


class FactorizedReduce(nn.Module):
    """DARTS's factorized reduction: ReLU, two 1x1 stride-2 convs (the second shifted by one pixel, so the
    two halves see every input position between them) concatenated, then BN."""

    def __init__(self, cin: int, cout: int, affine: bool = True):
        super().__init__()
        if cout % 2:
            raise SpaceError(f"FactorizedReduce: cout must be even, got {cout}")
        self.conv1 = nn.Conv2d(cin, cout // 2, 1, 2, bias=False)
        self.conv2 = nn.Conv2d(cin, cout // 2, 1, 2, bias=False)
        self.bn = nn.BatchNorm2d(cout, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(x)
        return self.bn(torch.cat([self.conv1(x), self.conv2(x[:, :, 1:, 1:])], 1))


def make_sep_conv(op: OpDef, cin: int, cout: int, stride: int, affine: bool = True) -> SepConv:
    """Registry builder of ``sep_conv_3x3``."""
    return SepConv(cin, cout, op.arg("kernel"), stride, affine)


def make_factorized_reduce(op: OpDef, cin: int, cout: int, stride: int, affine: bool = True) -> FactorizedReduce:
    """Registry builder of ``factorized_reduce`` (stride 2 only)."""
    if stride != 2:
        raise SpaceError(f"op 'factorized_reduce' takes stride 2, got {stride}")
    return FactorizedReduce(cin, cout, affine)


# ---------------------------------------------------------------------- cells

class GoldCellBase(nn.Module):
    """What every darts-gold cell holds: the two preprocessing ops and, per edge, a module per op it
    lists (``edges["4<-1"]["sep_conv_3x3"]``); the ops of edge ``e`` are ``ops[e]``."""

    def __init__(self, site: GoldCell, ops: Sequence[Sequence[str]], affine: bool):
        super().__init__()
        c = site.channels
        self.site = site
        self.pre0 = (FactorizedReduce(site.c_prev_prev, c, affine) if site.reduce_s0
                     else ReLUConvBN(site.c_prev_prev, c, 1, 1, affine))
        self.pre1 = ReLUConvBN(site.c_prev, c, 1, 1, affine)
        self.edges = nn.ModuleDict()
        for (dst, src), names in zip(EDGES, ops):
            stride = site.stride(src)
            self.edges[edge_key(dst, src)] = nn.ModuleDict(
                {name: make_op(registry_op(name, stride), c, c, stride, affine=affine) for name in names})

    def zero_node(self, s1: torch.Tensor) -> torch.Tensor:
        """A node with no incoming op: zeros of the cell's node shape."""
        size = self.site.size
        return s1.new_zeros((s1.shape[0], self.site.channels, size, size))


class GoldCellStandalone(GoldCellBase):
    """One cell of a fixed architecture: a node sums every op its edges keep (no gates)."""

    def __init__(self, site: GoldCell, kept: Sequence[Sequence[str]], affine: bool = True):
        super().__init__(site, kept, affine)
        self.kept = tuple(tuple(k) for k in kept)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for dst in range(INPUT_NODES, INPUT_NODES + STEPS):
            total = None
            for e, (d, src) in enumerate(EDGES):
                if d != dst:
                    continue
                for name in self.kept[e]:
                    y = self.edges[edge_key(d, src)][name](states[src])
                    total = y if total is None else total + y
            states.append(self.zero_node(states[1]) if total is None else total)
        return torch.cat(states[INPUT_NODES:], 1)


def gold_skeleton(space: DartsGoldSpace, make_cell: Callable[[GoldCell], nn.Module]):
    """DARTS's skeleton around ``make_cell(site)``: (stem conv 3x3 + BN, ModuleList of cells, classifier),
    built in that order."""
    stem_c = space.stem_multiplier * space.channels
    stem = nn.Sequential(OrderedDict(conv=nn.Conv2d(space.in_channels, stem_c, 3, 1, 1, bias=False),
                                     bn=nn.BatchNorm2d(stem_c)))
    cells = nn.ModuleList(make_cell(site) for site in space.cells)
    return stem, cells, nn.Linear(space.out_channels, space.num_classes)


class DartsGoldNet(nn.Module):
    """The standalone network of one darts-gold architecture (affine BN): the model ``stnas retrain``
    trains. Modules: ``stem``, ``cells[i]`` (``pre0``, ``pre1``, ``edges[key][op]``), ``classifier``."""

    def __init__(self, space: DartsGoldSpace | str, arch: GoldArch):
        super().__init__()
        space = Space.load(space)
        if not isinstance(space, DartsGoldSpace):
            raise SpaceError(f"DartsGoldNet takes a darts-gold space, got a {space.kind!r} space ({space.name!r})")
        self.space, self.arch = space, space.validate(arch)
        self.stem, self.cells, self.classifier = gold_skeleton(
            space, lambda site: GoldCellStandalone(site, arch.cells[site.index]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(s1.mean((2, 3)))


def build_darts_gold(arch, space) -> nn.Module:
    """:func:`stnas.supernet.build` for a darts-gold space: ``arch`` a GoldArch or its JSON dict."""
    space = Space.load(space)
    if isinstance(arch, dict):
        arch = space.arch_from_dict(arch)
    return DartsGoldNet(space, arch)
