"""Standalone models of single architectures: ``stnas.models.build(arch, space)``."""
from stnas.supernet.supernet import ChainNet, build

__all__ = ["ChainNet", "build"]
