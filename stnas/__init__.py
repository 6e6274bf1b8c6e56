"""stnas: one-shot neural architecture search at hardware speed.

The fast ops live in :mod:`stnas.ops`, the SGLD optimiser in :mod:`stnas.optim`, search spaces in
:mod:`stnas.spaces`, supernets in :mod:`stnas.supernet`, data in :mod:`stnas.data`, strategies in
:mod:`stnas.search`; the command line is :mod:`stnas.cli`.
"""
from stnas import ops, optim

__version__ = "0.1.0"
__all__ = ["ops", "optim", "__version__"]
