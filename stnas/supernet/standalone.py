"""The standalone model of one architecture, for every kind of space: one builder."""
from __future__ import annotations

from torch import nn

from stnas.spaces import CellSpace, ChainSpace, Space, SpaceError, read_arch_json


def build(arch, space: Space | str | None = None) -> nn.Module:
    """The standalone model of ``arch`` (fresh weights).

    ``arch``: an architecture of ``space`` (an ``Arch`` of a chain space, a ``CellArch`` or an NB201
    string of a cell space, a ``ResNetArch`` of a resnet space), its JSON dict, or an architecture file
    written by ``stnas search`` (``best_*.json``, ``derived.json``, CR-NAS's ``arch.json``), which names
    its space. Chain, cell and resnet models take the supernet's weights with ``.inherit(supernet)``."""
    raw = None
    if isinstance(arch, dict) or (isinstance(arch, str) and not arch.startswith("|")) or hasattr(arch, "__fspath__"):
        raw = arch if isinstance(arch, dict) else read_arch_json(arch)
        if space is None and isinstance(raw, dict):
            space = raw.get("space")
    if space is None:
        raise ValueError("build: name the space of the architecture (build(arch, space)), or pass an exported "
                         "architecture file, which names it")
    space = Space.load(space)
    if raw is not None:
        arch = space.arch_from_dict(raw)
    if isinstance(space, ChainSpace):
        from stnas.supernet.single_path import ChainNet

        return ChainNet(space, space.validate(arch))
    if isinstance(space, CellSpace):
        from stnas.supernet.cell_blocks import CellNet

        return CellNet(space, arch)
    if space.kind == "resnet":
        from stnas.supernet.resnet import ResNetNet

        return ResNetNet(space, space.validate(arch))
    if space.kind == "darts-gold":
        from stnas.supernet.darts_blocks import DartsGoldNet

        return DartsGoldNet(space, space.validate(arch))
    raise SpaceError(f"build: no standalone model for a {space.kind!r} space")
