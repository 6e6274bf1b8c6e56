"""The modules behind the chain ops of the registry (:mod:`stnas.spaces.ops`): MBConv and skip, and the
stem and head of chain networks.

The MAdds and parameters that ``stnas.spaces`` computes analytically are those of these modules; the
tests count them with hooks on a built model.
"""
from __future__ import annotations

import torch
from torch import nn

from stnas.ops import BatchNormAct2d
from stnas.spaces.ops import OpDef


class ConvBN(nn.Sequential):
    """kxk convolution ('same' padding, no bias) + BatchNorm, optionally followed by ReLU6; ``forward(x,
    addend)`` adds ``addend`` after the BatchNorm (before the activation).

    The BatchNorm and what follows it are one fused op (:class:`stnas.ops.BatchNormAct2d`, an
    ``nn.BatchNorm2d`` subclass): the state-dict keys (``0.weight``, ``1.weight``, ``1.running_mean``, ...)
    are those of the Conv2d + BatchNorm2d + ReLU6 layout, so checkpoints and ``inherit`` are unchanged.
    """

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                         BatchNormAct2d(cout, act="relu6" if act else "none"))

    def forward(self, x: torch.Tensor, addend: torch.Tensor | None = None) -> torch.Tensor:
        return self[1](self[0](x), addend)


class MBConv(nn.Module):
    """Inverted residual block (MobileNetV2): 1x1 expand (skipped when expansion is 1), kxk depthwise
    with the stride, linear 1x1 project; the input is added back when the block keeps the shape."""

    def __init__(self, cin: int, cout: int, stride: int, kernel: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        layers = [ConvBN(cin, hidden, 1)] if expansion != 1 else []
        layers += [ConvBN(hidden, hidden, kernel, stride, groups=hidden), ConvBN(hidden, cout, 1, act=False)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        last = len(self.body) - 1
        for i, layer in enumerate(self.body):
            # The residual is the projection's addend: added inside the fused BatchNorm, one pass fewer.
            h = layer(h, x) if i == last and self.residual else layer(h)
        return h


class Skip(nn.Module):
    """Identity where the edge keeps the shape; else a strided 1x1 conv + BN projection (linear)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.proj = None if stride == 1 and cin == cout else ConvBN(cin, cout, 1, stride, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.proj is None else self.proj(x)


def make_mbconv(op: OpDef, cin: int, cout: int, stride: int, affine: bool = True) -> MBConv:
    """Registry builder of ``mb_k{k}_e{e}`` (chain blocks always use affine BatchNorm)."""
    return MBConv(cin, cout, stride, op.arg("kernel"), op.arg("expansion"))


def make_skip(op: OpDef, cin: int, cout: int, stride: int, affine: bool = True) -> Skip:
    """Registry builder of ``skip``."""
    return Skip(cin, cout, stride)


class Head(nn.Module):
    """1x1 conv + BN + ReLU6, global average pooling, dropout, linear classifier."""

    def __init__(self, cin: int, width: int, num_classes: int, dropout: float):
        super().__init__()
        self.conv = ConvBN(cin, width, 1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x).mean((2, 3))
        return self.classifier(self.dropout(x))


def init_weights(module: nn.Module) -> None:
    """MobileNetV2's initialisation: Kaiming-normal (fan out) convs, unit BN, small normal classifier."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
