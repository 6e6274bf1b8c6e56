"""stnas: one-shot neural architecture search at hardware speed.

Data flows one way: :mod:`stnas.spaces` (plain data) -> :mod:`stnas.supernet` (modules) ->
:mod:`stnas.train` and :mod:`stnas.evaluate` -> :mod:`stnas.strategies` -> :mod:`stnas.methods` (one
file per method) -> :mod:`stnas.cli`. Below them: the fast ops (:mod:`stnas.ops`), the SGLD optimiser
(:mod:`stnas.optim`), data (:mod:`stnas.data`), benchmark tables (:mod:`stnas.benchmarks`), and what
every layer shares (:mod:`stnas.runtime`, :mod:`stnas.io`, :mod:`stnas.plots`).
"""
from stnas import ops, optim

__version__ = "0.1.0"
__all__ = ["ops", "optim", "__version__"]
