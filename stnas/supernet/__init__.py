"""Weight-sharing supernets built from a space (:mod:`stnas.spaces`), and standalone models.

Two kinds of supernet:

- single path (:class:`ChainNet`, ``forward(x, arch)``): one sampled architecture per step (SPOS,
  ST-NAS); only its ops run;
- mixed (:class:`~stnas.supernet.mixed.MixedCellNet`, ``forward(x)``): every op of every edge,
  weighted by architecture parameters (DARTS, DrNAS), with ``derive()`` to read the architecture out.

:func:`build` gives the standalone model of one architecture of any kind of space.
"""
from stnas.supernet.bn import recalibrate_bn
from stnas.supernet.ops import make_op
from stnas.supernet.single_path import ChainNet
from stnas.supernet.standalone import build


def SuperNet(space) -> ChainNet:
    """The single-path supernet of a chain ``space`` (a Space, a space file, or a built-in name)."""
    return ChainNet(space)


__all__ = ["ChainNet", "SuperNet", "build", "make_op", "recalibrate_bn"]
