"""The single-path supernet of a ``resnet`` space (CR-NAS), and the standalone ResNet of one architecture.

Both are :class:`ResNetNet`. The supernet holds, per stage, the most blocks any admissible allocation
gives it (:attr:`~stnas.spaces.resnet.ResNetSpace.stage_max`); ``forward(x, arch)`` runs the first
``arch.blocks[s]`` blocks of stage s, so a stage of n blocks shares its weights with every longer one
(SPOS-style weight sharing, Guo et al. 2020, as CR-NAS trains its stage supernet). A block's centre
3x3 convolution (:class:`DilatedConv`) holds one weight and applies it with the dilation the
architecture names (padding = dilation, so the output keeps its size): the dilations 1, 2 and 3 share
the 3x3 weights, as CR-NAS's spatial supernet does. A standalone model holds only its architecture's
blocks, with the same module names (``stages.<s>.<b>.conv2.weight``), so it inherits the supernet's
weights as a plain subset of its state dict (:meth:`ResNetNet.inherit`).

Without the classifier (``head=False``) the network is a detection backbone:
:meth:`ResNetNet.features` gives the four stage outputs (C2..C5, at total strides 4, 8, 16, 32 with
the standard stem), which an FPN (:mod:`stnas.detection`) turns into pyramid levels.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from stnas.spaces import Space
from stnas.spaces.errors import SpaceError
from stnas.spaces.resnet import ResNetArch, ResNetSpace

__all__ = ["BasicBlock", "Bottleneck", "DilatedConv", "ResNetNet", "batch_statistics"]


class DilatedConv(nn.Module):
    """A 3x3 convolution (no bias) whose dilation is chosen per call; padding follows the dilation."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.stride = stride
        self.weight = nn.Parameter(torch.empty(cout, cin, 3, 3))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor, dilation: int = 1) -> torch.Tensor:
        return F.conv2d(x, self.weight, None, self.stride, dilation, dilation)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    return nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)


class _Block(nn.Module):
    def _shortcut(self, cin: int, cout: int, stride: int) -> None:
        self.downsample = (nn.Sequential(*_conv_bn(cin, cout, 1, stride)) if stride != 1 or cin != cout else None)

    def _residual(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class BasicBlock(_Block):
    """ResNet-18/34's block: 3x3 (stride) -> BN -> ReLU -> dilated 3x3 -> BN, plus the shortcut."""

    def __init__(self, cin: int, planes: int, cout: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(cin, planes, 3, stride)
        self.conv2, self.bn2 = DilatedConv(planes, cout), nn.BatchNorm2d(cout)
        self._shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor, dilation: int = 1) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return self._residual(x, self.bn2(self.conv2(out, dilation)))


class Bottleneck(_Block):
    """ResNet-50/101's block (torchvision's, the stride on the 3x3): 1x1 -> dilated 3x3 (stride) -> 1x1."""

    def __init__(self, cin: int, planes: int, cout: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(cin, planes, 1, 1)
        self.conv2, self.bn2 = DilatedConv(planes, planes, stride), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = _conv_bn(planes, cout, 1, 1)
        self._shortcut(cin, cout, stride)

    def forward(self, x: torch.Tensor, dilation: int = 1) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out, dilation)))
        return self._residual(x, self.bn3(self.conv3(out)))


class ResNetNet(nn.Module):
    """The supernet of ``space`` (``arch=None``) or the standalone ResNet of ``arch``; ``head``: the
    global-pool + linear classifier (False for a detection backbone)."""

    def __init__(self, space: ResNetSpace | str, arch: ResNetArch | None = None, head: bool = True):
        super().__init__()
        self.space = space = Space.load(space)
        if not isinstance(space, ResNetSpace):
            raise SpaceError(f"ResNetNet takes a resnet space, got a {space.kind!r} space ({space.name!r})")
        self.arch = None if arch is None else space.validate(arch)
        counts = space.stage_max if arch is None else arch.blocks
        self.stem = nn.Sequential(*_conv_bn(space.in_channels, space.stem_width, space.stem_kernel, space.stem_stride),
                                  nn.ReLU(inplace=True),
                                  *([nn.MaxPool2d(3, 2, 1)] if space.stem_pool else []))
        block = BasicBlock if space.block == "basic" else Bottleneck
        self.stages = nn.ModuleList()
        for s, n in enumerate(counts):
            sites = [space.site(s, b) for b in range(n)]
            self.stages.append(nn.ModuleList(block(t.cin, t.planes, t.cout, t.stride) for t in sites))
        self.out_channels = tuple(w * space.expansion for w in space.widths)
        self.fc = nn.Linear(self.out_channels[-1], space.num_classes) if head else None
        self._checked: set[ResNetArch] = set()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def is_supernet(self) -> bool:
        return self.arch is None

    def _resolve(self, arch: ResNetArch | None) -> ResNetArch:
        if arch is None:
            if self.arch is None:
                raise ValueError("ResNetNet.forward: a supernet needs an architecture: forward(x, arch)")
            return self.arch
        if arch not in self._checked:
            self.space.validate(arch)
            if self.arch is not None and arch != self.arch:
                raise ValueError("ResNetNet.forward: this standalone model only runs its own architecture")
            if len(self._checked) > 4096:
                self._checked.clear()
            self._checked.add(arch)
        return arch

    def features(self, x: torch.Tensor, arch: ResNetArch | None = None) -> list[torch.Tensor]:
        """The output of every stage (C2..C5 for a standard stem)."""
        arch = self._resolve(arch)
        x = self.stem(x)
        out = []
        for stage, dilations in zip(self.stages, arch.stage_dilations()):
            for blk, d in zip(stage, dilations):
                x = blk(x, d)
            out.append(x)
        return out

    def forward(self, x: torch.Tensor, arch: ResNetArch | None = None):
        feats = self.features(x, arch)
        if self.fc is None:
            return feats
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(feats[-1], 1), 1))

    def inherit(self, supernet: "ResNetNet") -> "ResNetNet":
        """Copy the supernet's weights and BN statistics into this standalone model (its state dict is
        a subset of the supernet's, by name). Returns ``self``."""
        from stnas.supernet.single_path_cell import inherit

        if self.is_supernet:
            raise ValueError("ResNetNet.inherit: this is a supernet; inherit into a standalone model, "
                             "ResNetNet(space, arch)")
        return inherit(self, supernet)

    def active_modules(self, arch: ResNetArch | None = None) -> Iterator[nn.Module]:
        """The modules ``forward(x, arch)`` runs (for BN recalibration)."""
        arch = self._resolve(arch)
        yield self.stem
        for stage, n in zip(self.stages, arch.blocks):
            yield from stage[:n]
        if self.fc is not None:
            yield self.fc


class batch_statistics:
    """Inside the block, the BatchNorms of ``net`` normalise with each batch's own statistics (in eval
    mode too) and leave their running statistics untouched, so scoring changes nothing of the run.

    Why: a partial architecture is scored with its open blocks drawn anew for every validation batch
    (CR-NAS), so no one architecture's statistics can be recalibrated in advance; the supernet's running
    statistics mix every architecture it trained. Batch statistics are the architecture's own."""

    def __init__(self, net: nn.Module):
        self.bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.saved: list = []

    def __enter__(self):
        self.saved = [(bn.running_mean, bn.running_var) for bn in self.bns]
        for bn in self.bns:
            bn.running_mean = bn.running_var = None
        return self

    def __exit__(self, *exc):
        for bn, (mean, var) in zip(self.bns, self.saved):
            bn.running_mean, bn.running_var = mean, var
        return False
