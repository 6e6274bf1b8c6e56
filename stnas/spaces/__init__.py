"""Search spaces as plain data (no torch): load, validate, count, cost, sample, mutate, cross over.

One protocol (:class:`Space`, in :mod:`stnas.spaces.base`) and its kinds, chosen by a space file's
``type:`` key: ``chain`` (ST-NAS, the default), ``cell`` (NAS-Bench-201) and ``resnet`` (CR-NAS).
One op registry (:mod:`stnas.spaces.ops`) gives every op's cost and module; a :class:`Budget` bounds
MAdds and parameters.

    >>> from stnas.spaces import Space
    >>> space = Space.load("tas")          # or a path to a YAML/JSON space file
    >>> space.count_topologies() == 2 ** 35
    True
"""
from stnas.spaces.arch import Arch, read_arch_json
from stnas.spaces.base import Cost, Decision, Space, builtin_spaces, load_space, space_kinds
from stnas.spaces.budget import Budget
from stnas.spaces.cell import CellArch, CellSpace
from stnas.spaces import darts_cell as _darts_cell  # noqa: F401  (registers type: darts-gold)
from stnas.spaces.chain import ChainSpace, Edge, Stage
from stnas.spaces.errors import SpaceError
from stnas.spaces.resnet import ResNetArch, ResNetSpace
from stnas.spaces.ops import OpDef, get_op, op_cost, op_names

__all__ = ["Arch", "Budget", "CellArch", "CellSpace", "ChainSpace", "Cost", "Decision", "Edge", "OpDef", "ResNetArch",
           "ResNetSpace", "Space", "SpaceError", "Stage", "builtin_spaces", "get_op", "load_space", "op_cost", "op_names",
           "read_arch_json", "space_kinds"]
