"""Weight-sharing supernets built from a space (:mod:`stnas.spaces`)."""
from stnas.supernet.supernet import ChainNet, build, recalibrate_bn


def SuperNet(space) -> ChainNet:
    """The weight-sharing supernet of ``space`` (a Space, a space file, or a built-in name)."""
    return ChainNet(space)


__all__ = ["ChainNet", "SuperNet", "build", "recalibrate_bn"]
