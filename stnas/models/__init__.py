"""Standalone models of single architectures: ``stnas.models.build(arch, space)``."""
from stnas.supernet import ChainNet, build
from stnas.supernet.cell_blocks import CellNet

__all__ = ["CellNet", "ChainNet", "build"]
