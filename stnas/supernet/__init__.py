"""Weight-sharing supernets built from a space (:mod:`stnas.spaces`), and standalone models.

Two kinds of supernet:

- single path (``forward(x, arch)``): one sampled architecture per step (SPOS, ST-NAS); only its ops
  run: :class:`ChainNet` on chain spaces, :class:`~stnas.supernet.single_path_cell.CellPathNet` on cell
  spaces, :class:`~stnas.supernet.resnet.ResNetNet` on resnet spaces (CR-NAS);
- mixed (:class:`~stnas.supernet.mixed.MixedCellNet`, ``forward(x)``): every op of every edge,
  weighted by architecture parameters (DARTS, DrNAS), with ``derive()`` to read the architecture out.

:func:`build` gives the standalone model of one architecture of any kind of space.
"""
from stnas.supernet.bn import recalibrate_bn
from stnas.supernet.ops import make_op
from stnas.supernet.single_path import ChainNet
from stnas.supernet.single_path_cell import CellPathNet, inherit
from stnas.supernet.standalone import build


def SuperNet(space):
    """The single-path supernet of ``space`` (a Space, a space file, or a built-in name), by its kind:
    :class:`ChainNet` for a chain space, :class:`CellPathNet` for a cell space,
    :class:`~stnas.supernet.resnet.ResNetNet` for a resnet space."""
    from stnas.spaces import CellSpace, Space
    from stnas.spaces.resnet import ResNetSpace

    space = Space.load(space)
    if isinstance(space, CellSpace):
        return CellPathNet(space)
    if isinstance(space, ResNetSpace):
        from stnas.supernet.resnet import ResNetNet

        return ResNetNet(space)
    return ChainNet(space)


__all__ = ["CellPathNet", "ChainNet", "SuperNet", "build", "inherit", "make_op", "recalibrate_bn"]
