"""Optimisers of stnas: :class:`SGLD` over the fused ``stnas.ops.sgld_step``."""
from stnas.optim.sgld import SGLD

__all__ = ["SGLD"]
