"""The baseline of bench_supernet.py: a supernet written the way a user of plain PyTorch would write it
for the same space (SPOS-style: an ``nn.ModuleList`` of candidate blocks per layer, a Python sum at
every node, ``torch.optim.SGD`` with ``randn_like`` noise added per parameter for SGLD). It reads the
space from ``stnas.spaces`` (plain data) but uses none of stnas's modules or ops.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from stnas.spaces import Arch, Space
from stnas.spaces.ops import get_op


def conv_bn(cin, cout, k=1, stride=1, groups=1, relu=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, k, e):
        super().__init__()
        hid = cin * e
        layers = ([conv_bn(cin, hid)] if e != 1 else []) + [conv_bn(hid, hid, k, stride, hid),
                                                              conv_bn(hid, cout, relu=False)]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class Shortcut(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.proj = None if stride == 1 and cin == cout else conv_bn(cin, cout, 1, stride, relu=False)

    def forward(self, x):
        return x if self.proj is None else self.proj(x)


def block(name, cin, cout, stride):
    op = get_op(name)  # the space's op registry names the op and its settings; the modules are this file's
    if op.identity:
        return Shortcut(cin, cout, stride)
    args = dict(op.args)
    return InvertedResidual(cin, cout, stride, args["kernel"], args["expansion"])


class SposSupernet(nn.Module):
    def __init__(self, space: Space):
        super().__init__()
        self.space = space
        self.stem = conv_bn(space.in_channels, space.stem_width, space.stem_kernel, space.stem_stride)
        self.choices = nn.ModuleList(nn.ModuleList(block(op, e.cin, e.cout, e.stride) for op in e.ops)
                                     for e in space.stem_edges)
        self.branch_choices = nn.ModuleList(nn.ModuleList(block(op, e.cin, e.cout, e.stride) for op in e.ops)
                                            for e in space.branch_edges)
        self.head = conv_bn(space.nodes[-1][0], space.head_width, 1)
        self.fc = nn.Linear(space.head_width, space.num_classes)

    def forward(self, x, arch: Arch):
        space = self.space
        feats = [self.stem(x)]
        for k, e in enumerate(space.stem_edges):
            y = self.choices[k][e.ops.index(arch.ops[k])](feats[k])
            for b, be in enumerate(space.branch_edges):
                if be.dst == k + 1 and arch.branches[b] is not None:
                    y = y + self.branch_choices[b][be.ops.index(arch.branches[b])](feats[be.src])
            feats.append(y)
        x = self.head(feats[-1]).mean((2, 3))
        return self.fc(x)


def sgd_with_noise_step(opt: torch.optim.SGD, lr: float, temperature: float, dataset_size: int) -> None:
    """What a user writes for SGLD with stock parts: an SGD step, then Gaussian noise on every
    parameter that has a gradient."""
    opt.step()
    sigma = math.sqrt(2 * lr * temperature / dataset_size)
    if sigma:
        with torch.no_grad():
            for group in opt.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.add_(torch.randn_like(p), alpha=sigma)
