"""Search spaces as plain data (no torch): load, validate, count, cost, sample, mutate, cross over.

    >>> from stnas.spaces import Space
    >>> space = Space.load("tas")          # or a path to a YAML/JSON space file
    >>> space.count_topologies() == 2 ** 35
    True
"""
from stnas.spaces.arch import Arch, read_arch_json
from stnas.spaces.errors import SpaceError
from stnas.spaces.ops import op_cost, op_names, parse_op
from stnas.spaces.space import Edge, Space, Stage, builtin_spaces, load_space

__all__ = ["Arch", "Edge", "Space", "SpaceError", "Stage", "builtin_spaces", "load_space", "op_cost", "op_names",
           "parse_op", "read_arch_json"]
