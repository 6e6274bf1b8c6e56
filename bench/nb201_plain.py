"""The baseline of bench_mixed_supernet.py: NAS-Bench-201's DARTS / DrNAS search supernet written the way
a user of plain PyTorch writes it, as AutoDL-Projects (``xautodl/models/cell_searchs``: the NB201 search
cell and the DARTS tiny network) and NASLib write it.

- every edge ``i<-j`` of the cell is an ``nn.ModuleList`` of its candidate ops, in the space's op order:
  ``none`` as ``x.mul(0.)``, ``skip_connect`` the identity, ``nor_conv_1x1`` / ``nor_conv_3x3`` as ReLU-conv-BN
  with ``affine=False`` BatchNorm (running statistics tracked), ``avg_pool_3x3`` as a 3x3 average pooling
  with ``count_include_pad=False``;
- a node is ``sum(w * op(x) for w, op in zip(weights, ops))`` over each input, summed over its inputs;
- the NB201 skeleton: a 3x3 stem conv + BN to C channels; ``cells_per_stage`` search cells per stage at C,
  2C, 4C; between stages a ResNet basic block that halves the resolution (ReLU-conv3x3 stride 2-BN,
  ReLU-conv3x3-BN, shortcut 2x2 average pooling + 1x1 conv); a head of BN + ReLU, global average pooling
  and a linear classifier;
- architecture parameters ``alphas`` (edges x ops, initialised ``1e-3 * randn``) turned into the edges'
  weights by a softmax (DARTS) or by a reparameterised sample of Dirichlet(elu(alphas) + 1) (DrNAS), drawn
  again at every forward.

It reads the space from ``stnas.spaces`` (plain data) but uses none of stnas's modules or ops.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stnas.spaces import Space

WEIGHTINGS = ("softmax", "dirichlet")


class Zero(nn.Module):
    def forward(self, x):
        return x.mul(0.0)


class ReLUConvBN(nn.Module):
    def __init__(self, cin, cout, kernel, stride, affine):
        super().__init__()
        self.op = nn.Sequential(nn.ReLU(inplace=False),
                                nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                                nn.BatchNorm2d(cout, affine=affine, track_running_stats=True))

    def forward(self, x):
        return self.op(x)


OPS = {
    "none": lambda c, affine: Zero(),
    "skip_connect": lambda c, affine: nn.Identity(),
    "nor_conv_1x1": lambda c, affine: ReLUConvBN(c, c, 1, 1, affine),
    "nor_conv_3x3": lambda c, affine: ReLUConvBN(c, c, 3, 1, affine),
    "avg_pool_3x3": lambda c, affine: nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
}


class SearchCell(nn.Module):
    """Every candidate op on every edge; ``forward(x, weights)`` with ``weights[edge, op]``."""

    def __init__(self, channels, nodes, op_names, affine=False):
        super().__init__()
        self.nodes = nodes
        self.edges = nn.ModuleDict()
        for i in range(1, nodes):
            for j in range(i):
                self.edges[f"{i}<-{j}"] = nn.ModuleList(OPS[name](channels, affine) for name in op_names)
        # Edge order: by destination, then source (AutoDL's sorted keys; NB201's arch-string order).
        self.edge_index = {key: k for k, key in enumerate(f"{i}<-{j}" for i in range(1, nodes) for j in range(i))}

    def forward(self, x, weights):
        states = [x]
        for i in range(1, self.nodes):
            inputs = []
            for j in range(i):
                key = f"{i}<-{j}"
                w = weights[self.edge_index[key]]
                inputs.append(sum(wk * op(states[j]) for wk, op in zip(w, self.edges[key])))
            states.append(sum(inputs))
        return states[-1]


class ResNetBasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=2):
        super().__init__()
        self.conv_a = ReLUConvBN(cin, cout, 3, stride, affine=True)
        self.conv_b = ReLUConvBN(cout, cout, 3, 1, affine=True)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(cin, cout, 1, bias=False))

    def forward(self, x):
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class PlainDartsSupernet(nn.Module):
    """``PlainDartsSupernet(space, weighting)``: ``forward(x)`` -> logits, ``arch_parameters()``,
    ``weight_parameters()``."""

    def __init__(self, space, weighting: str = "softmax"):
        super().__init__()
        space = Space.load(space)
        if space.kind != "cell":
            raise ValueError(f"PlainDartsSupernet takes a cell space, got a {space.kind!r} space ({space.name!r})")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        self.space, self.weighting = space, weighting
        c = space.channels
        self.stem = nn.Sequential(nn.Conv2d(space.in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        cells, cprev = [], c
        for s, width in enumerate(space.stage_channels):
            if s > 0:
                cells.append(ResNetBasicBlock(cprev, width, 2))
            cells += [SearchCell(width, space.nodes, space.ops) for _ in range(space.cells_per_stage)]
            cprev = width
        self.cells = nn.ModuleList(cells)
        self.lastact = nn.Sequential(nn.BatchNorm2d(cprev), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cprev, space.num_classes)
        edges = space.nodes * (space.nodes - 1) // 2
        self.alphas = nn.Parameter(1e-3 * torch.randn(edges, len(space.ops)))

    def arch_parameters(self):
        return [self.alphas]

    def weight_parameters(self):
        return [p for name, p in self.named_parameters() if name != "alphas"]

    def arch_weights(self):
        if self.weighting == "softmax":
            return F.softmax(self.alphas, dim=-1)
        return torch.distributions.Dirichlet(F.elu(self.alphas) + 1).rsample()

    def forward(self, x):
        weights = self.arch_weights()
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x, weights) if isinstance(cell, SearchCell) else cell(x)
        x = self.global_pooling(self.lastact(x)).flatten(1)
        return self.classifier(x)
