"""Search methods, one file each, behind one registry (``stnas search --method NAME``).

- ``stnas`` (default): ST-NAS, the SGLD-sampled single-path supernet, snapshot ensemble, evolution
  under an MAdds budget (:mod:`stnas.methods.stnas`);
- ``darts``, ``drnas``: the first-order bilevel mixed supernet with softmax (DARTS) or Dirichlet
  (DrNAS) architecture weights on a cell space (:mod:`stnas.methods.drnas`).
"""
from stnas.methods.base import Method, RunContext, get_method, method_names, register
from stnas.methods import stnas as _stnas  # noqa: F401  (registers)
from stnas.methods import drnas as _drnas  # noqa: F401  (registers darts and drnas)
from stnas.methods import goldnas as _goldnas  # noqa: F401
from stnas.methods import crnas as _crnas  # noqa: F401

DEFAULT_METHOD = "stnas"

__all__ = ["DEFAULT_METHOD", "Method", "RunContext", "get_method", "method_names", "register"]
