"""The ``cell`` kind of space (NAS-Bench-201, Dong & Yang, ICLR 2020): one searched cell, stacked.

A cell is a DAG of ``nodes`` feature maps; node 0 is the cell's input, node i sums one op applied to each
of nodes 0..i-1, and the last node is the cell's output. Every edge carries exactly one of ``cell.ops``
(``none`` is the zero op, so an edge can be absent). An architecture is the op of every edge, in the
order of NAS-Bench-201's arch string, ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``: edges ``1<-0, 2<-0,
2<-1, 3<-0, 3<-1, 3<-2`` for four nodes.

The macro skeleton is NAS-Bench-201's: a 3x3 stem conv + BN to ``C`` channels; ``stages`` stages of
``cells_per_stage`` cells, stage s at width ``C * 2**s``; between consecutive stages a residual reduction
block (ReLU-conv3x3 stride 2-BN, ReLU-conv3x3-BN, shortcut 2x2 average pooling + 1x1 conv); a head of
BN + ReLU, global average pooling and a linear classifier. Every cell of the network uses the same
cell architecture.

Every cell op keeps the shape, so an edge's cost at a cell depends on its op alone: MAdds and parameters
are a fixed part (stem, reductions, head) plus, per edge, the op's registry cost summed over all cells.
The cost is the standalone model's, whose BatchNorms are affine; NAS-Bench-201's search supernet uses
BatchNorm without affine parameters (``affine=False`` in the registry's cost and builders).

A space file::

    type: cell
    name: nb201
    input: {resolution: 32, channels: 3}
    num_classes: 10
    cell: {nodes: 4, ops: [none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3]}
    skeleton: {channels: 16, cells_per_stage: 5, stages: 3}

Isomorphic cells: :func:`canonical_form` reduces a cell to the expression its output computes, so that
architectures that compute the same function of the cell input (whatever the weights) get the same form.
"""
from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

from stnas.spaces.base import Cost, Decision, Space, read_header, register_kind
from stnas.spaces.errors import SpaceError
from stnas.spaces.ops import conv_cost, get_op, is_op, op_cost, op_names


def cell_edges(nodes: int) -> tuple[tuple[int, int], ...]:
    """(dst, src) of every edge of a cell of ``nodes`` nodes, in arch-string order: by destination node,
    then by source node."""
    return tuple((dst, src) for dst in range(1, nodes) for src in range(dst))


def _nodes_of(edge_count: int) -> int | None:
    """The node count n with n (n - 1) / 2 == edge_count, n >= 2; None when there is none."""
    n = (1 + math.isqrt(1 + 8 * edge_count)) // 2
    return n if n >= 2 and n * (n - 1) // 2 == edge_count else None


# ---------------------------------------------------------------------- architectures

@lru_cache(maxsize=65536)
def _parse_group(dst: int, group: str) -> tuple[str, ...] | str:
    """The ops of node ``dst``'s group ``|op~0|op~1|...|``, or what is wrong with it. Cached: a table of
    15,625 arch strings holds only 5 + 25 + 125 distinct groups."""
    if len(group) < 3 or group[0] != "|" or group[-1] != "|":
        return f"node {dst}: {group!r} is not of the form |op~0|op~1|...|"
    inputs = group[1:-1].split("|")
    if len(inputs) != dst:
        return f"node {dst} has {len(inputs)} input(s), expected {dst} (one from each of nodes 0..{dst - 1})"
    ops = []
    for src, item in enumerate(inputs):
        op, sep, origin = item.partition("~")
        if not sep or not op or " " in op:
            return f"node {dst}, input {src}: {item!r} is not 'op~source'"
        if origin != str(src):
            return (f"node {dst}, input {src}: {item!r} comes from node {origin!r}, expected {src} "
                    f"(inputs are listed by source node, from 0)")
        ops.append(op)
    return tuple(ops)


@dataclass(frozen=True, order=True)
class CellArch:
    """One cell architecture: the op of every edge, in NAS-Bench-201 arch-string order (see
    :func:`cell_edges`). Plain data; whether its ops belong to a space is the space's to say."""

    ops: tuple[str, ...]

    def __post_init__(self):
        if not isinstance(self.ops, tuple) or not all(isinstance(o, str) for o in self.ops):
            raise SpaceError(f"arch.ops must be a tuple of op names, got {self.ops!r}")
        if _nodes_of(len(self.ops)) is None:
            raise SpaceError(f"arch.ops has {len(self.ops)} entries: a cell of n nodes has n (n - 1) / 2 edges "
                             f"(1, 3, 6, 10, ...)")

    @property
    def nodes(self) -> int:
        return _nodes_of(len(self.ops))

    @property
    def edges(self) -> tuple[tuple[int, int], ...]:
        return cell_edges(self.nodes)

    def op(self, dst: int, src: int) -> str:
        """The op of edge ``dst <- src``."""
        if not 0 <= src < dst < self.nodes:
            raise SpaceError(f"a cell of {self.nodes} nodes has no edge {dst}<-{src}")
        return self.ops[dst * (dst - 1) // 2 + src]

    # ---------------------------------------------------------------- NAS-Bench-201 arch strings

    def to_nb201(self) -> str:
        """``|op~0|+|op~0|op~1|+...``: one ``|...|`` group per node from node 1, its inputs by source."""
        return "+".join("|" + "|".join(f"{self.op(dst, src)}~{src}" for src in range(dst)) + "|"
                        for dst in range(1, self.nodes))

    @classmethod
    def from_nb201(cls, text) -> "CellArch":
        """Parse an arch string strictly: node i's group lists exactly one input from each of nodes
        0..i-1, in that order."""
        if not isinstance(text, str):
            raise SpaceError(f"NB201 arch string: expected a string, got {type(text).__name__}")

        def fail(msg):
            raise SpaceError(f"NB201 arch string {text!r}: {msg}")

        if text != text.strip():
            fail("has leading or trailing whitespace")
        if not text:
            fail("is empty")
        ops: tuple[str, ...] = ()
        for dst, group in enumerate(text.split("+"), start=1):
            parsed = _parse_group(dst, group)
            if isinstance(parsed, str):
                fail(parsed)
            ops += parsed
        return cls(ops)

    # ---------------------------------------------------------------- JSON

    def to_dict(self) -> dict:
        return {"ops": list(self.ops), "nb201": self.to_nb201()}

    @classmethod
    def from_dict(cls, data) -> "CellArch":
        """From ``{"ops": [...]}``, ``{"nb201": "..."}`` (both: they must agree), or an exported file
        ``{"space": ..., "arch": {...}}``."""
        if not isinstance(data, dict):
            raise SpaceError(f"a cell architecture is a JSON object with 'ops' or 'nb201', got {type(data).__name__}")
        if "arch" in data and isinstance(data["arch"], dict):  # an exported file: {"space": ..., "arch": {...}}
            data = data["arch"]
        unknown = set(data) - {"ops", "nb201"}
        if unknown:
            raise SpaceError(f"cell architecture: unknown field(s) {sorted(unknown)} (expected 'ops' and/or 'nb201')")
        if "ops" not in data and "nb201" not in data:
            raise SpaceError("cell architecture: expected 'ops' (a list of op names, one per edge) or 'nb201' "
                             "(an arch string |op~0|+|op~0|op~1|+...)")
        from_ops = from_string = None
        if "ops" in data:
            if not isinstance(data["ops"], list):
                raise SpaceError(f"cell architecture field 'ops': expected a list of op names, one per edge, got "
                                 f"{type(data['ops']).__name__}")
            from_ops = cls(tuple(data["ops"]))
        if "nb201" in data:
            from_string = cls.from_nb201(data["nb201"])
        if from_ops is not None and from_string is not None and from_ops != from_string:
            raise SpaceError(f"cell architecture: 'ops' {list(from_ops.ops)} and 'nb201' {data['nb201']!r} disagree")
        return from_ops if from_ops is not None else from_string

    def to_json(self) -> str:
        """``to_dict()`` as one line of JSON (the ``arch`` column of ``scores.csv``)."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "CellArch":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpaceError(f"cell architecture: not valid JSON ({e})") from None
        return cls.from_dict(data)

    def __str__(self) -> str:
        return self.to_nb201()


# ---------------------------------------------------------------------- isomorphism

def canonical_form(arch: CellArch) -> str:
    """The expression the cell's output computes of its input ``x``, in one canonical spelling: two
    cells get the same string iff they compute the same function of ``x`` for every choice of op weights.

    The reduction: a zero op (``none``) contributes nothing; an identity (``skip_connect``) passes its
    source's sum through, term by term; any other op is an opaque function ``op(<its input>)``; a node
    is the multiset of its terms, spelt sorted and joined by ``+`` (so the order of a sum never matters
    and ``skip`` chains flatten); an op whose source is the zero node is dropped too (it sees no input,
    so its output is a constant: zero for pooling, BatchNorm's shift for a conv), which is why a node
    that does not reach the output never appears. The zero cell is ``"0"``. Ops are not given any
    algebra beyond that (the linearity of average pooling is not used).

    NAS-Bench-201's own ``UniqueString`` column keeps a few distinctions this form does not (see
    :func:`stnas.benchmarks.nb201.unique_string`), which is why it finds 6,466 classes where this form
    finds 4,930 over the 15,625 cells.
    """
    sums: list[tuple[str, ...]] = [("x",)]  # node 0: the cell input
    for dst in range(1, arch.nodes):
        terms: list[str] = []
        for src in range(dst):
            op, source = get_op(arch.op(dst, src)), sums[src]
            if op.zero or not source:
                continue
            if op.identity:
                terms.extend(source)
            else:
                terms.append(f"{op.name}({_spell(source)})")
        sums.append(tuple(sorted(terms)))
    return _spell(sums[-1])


def _spell(terms: tuple[str, ...]) -> str:
    return "+".join(terms) if terms else "0"


# ---------------------------------------------------------------------- the space

@dataclass(frozen=True)
class CellSite:
    """Where one cell of the network sits: its stage, its index within the stage, its width and its
    (square) spatial size."""

    stage: int
    index: int
    channels: int
    size: int


@dataclass(frozen=True)
class Reduction:
    """The residual reduction block before stage ``stage``: ``cin`` -> ``cout`` channels, ``in_size`` ->
    ``in_size // 2`` pixels."""

    stage: int
    cin: int
    cout: int
    in_size: int

    @property
    def out_size(self) -> int:
        return self.in_size // 2


@register_kind
@dataclass(frozen=True)
class CellSpace(Space):
    kind = "cell"
    arch_type = CellArch

    name: str
    resolution: int
    in_channels: int
    num_classes: int
    nodes: int
    ops: tuple[str, ...]
    channels: int
    cells_per_stage: int
    stages: int = 3
    source: str = field(default="", compare=False)

    # ---------------------------------------------------------------- loading

    @classmethod
    def _parse(cls, data, source: str = "") -> "CellSpace":
        (fail, obj, integer, check_keys), data, inp = read_header(data, source, ("cell", "skeleton"))
        cell = obj(data["cell"], "cell")
        check_keys(cell, "cell", {"nodes", "ops"}, ("nodes", "ops"))
        skeleton = obj(data["skeleton"], "skeleton")
        check_keys(skeleton, "skeleton", {"channels", "cells_per_stage", "stages"}, ("channels", "cells_per_stage"))

        nodes = integer(cell["nodes"], "cell.nodes", lo=2)
        ops = cell["ops"]
        if not isinstance(ops, list) or not ops:
            fail(f"'cell.ops' must be a non-empty list of op names, got {ops!r}")
        for k, name in enumerate(ops):
            if is_op(name, "cell"):
                continue
            if is_op(name):
                fail(f"'cell.ops[{k}]': {name!r} is a {get_op(name).family} op, not a cell op "
                     f"(cell ops: {', '.join(op_names('cell'))})")
            fail(f"'cell.ops[{k}]': unknown op {name!r} (cell ops: {', '.join(op_names('cell'))})")
        if len(set(ops)) != len(ops):
            fail(f"'cell.ops' lists an op twice: {ops}")

        stages = integer(skeleton.get("stages", 3), "skeleton.stages")
        resolution = integer(inp["resolution"], "input.resolution")
        # The reduction's shortcut pools 2x2 (floor) while its conv path strides (ceil): the two agree only
        # on even sizes, so every reduction must meet one.
        if resolution % 2 ** (stages - 1):
            fail(f"'input.resolution' must be divisible by 2^{stages - 1} = {2 ** (stages - 1)} (each of the "
                 f"{stages - 1} reduction blocks halves it), got {resolution}")
        return cls(name=data["name"], resolution=resolution,
                   in_channels=integer(inp.get("channels", 3), "input.channels"),
                   num_classes=integer(data["num_classes"], "num_classes"), nodes=nodes, ops=tuple(ops),
                   channels=integer(skeleton["channels"], "skeleton.channels"),
                   cells_per_stage=integer(skeleton["cells_per_stage"], "skeleton.cells_per_stage"),
                   stages=stages, source=source)

    def to_dict(self) -> dict:
        """The space file's content (``Space.from_dict(s.to_dict()) == s``)."""
        return {"type": self.kind, "name": self.name,
                "input": {"resolution": self.resolution, "channels": self.in_channels},
                "num_classes": self.num_classes, "cell": {"nodes": self.nodes, "ops": list(self.ops)},
                "skeleton": {"channels": self.channels, "cells_per_stage": self.cells_per_stage,
                             "stages": self.stages}}

    # ---------------------------------------------------------------- structure

    @cached_property
    def edges(self) -> tuple[tuple[int, int], ...]:
        """(dst, src) of every edge of the cell, in arch-string order (the order of the decisions)."""
        return cell_edges(self.nodes)

    @cached_property
    def stage_channels(self) -> tuple[int, ...]:
        return tuple(self.channels * 2 ** s for s in range(self.stages))

    @cached_property
    def stage_sizes(self) -> tuple[int, ...]:
        """Spatial size of every stage's cells (the stem keeps the input resolution)."""
        return tuple(self.resolution // 2 ** s for s in range(self.stages))

    @cached_property
    def cells(self) -> tuple[CellSite, ...]:
        """Every cell of the network, in network order."""
        return tuple(CellSite(s, i, self.stage_channels[s], self.stage_sizes[s])
                     for s in range(self.stages) for i in range(self.cells_per_stage))

    @cached_property
    def reductions(self) -> tuple[Reduction, ...]:
        """The reduction block before every stage but the first."""
        return tuple(Reduction(s, self.stage_channels[s - 1], self.stage_channels[s], self.stage_sizes[s - 1])
                     for s in range(1, self.stages))

    # ---------------------------------------------------------------- the protocol

    @cached_property
    def _decisions(self) -> tuple[Decision, ...]:
        return tuple(Decision(f"ops[{k}]", self.ops, f"edge {dst}<-{src}") for k, (dst, src) in enumerate(self.edges))

    def decisions(self) -> tuple[Decision, ...]:
        """One per edge, in arch-string order: ``ops[k]``, choices the cell ops."""
        return self._decisions

    def genes(self, arch: CellArch) -> tuple:
        if not isinstance(arch, CellArch):
            raise SpaceError(f"expected a CellArch, got {type(arch).__name__}")
        if len(arch.ops) != len(self.edges):
            raise SpaceError(f"arch.ops has {len(arch.ops)} entries, space {self.name!r} has {len(self.edges)} "
                             f"edges ({self.nodes} nodes)")
        return arch.ops

    def from_genes(self, genes) -> CellArch:
        return CellArch(tuple(genes))

    @cached_property
    def _fixed(self) -> Cost:
        r = self.resolution
        parts = [conv_cost(self.in_channels, self.channels, 3, r * r)]  # stem conv + BN
        for red in self.reductions:
            out = red.out_size * red.out_size
            parts += [conv_cost(red.cin, red.cout, 3, out),               # ReLU-conv3x3 (stride 2)-BN
                      conv_cost(red.cout, red.cout, 3, out),              # ReLU-conv3x3-BN
                      conv_cost(red.cin, red.cout, 1, out, bn=False)]     # shortcut: pool 2x2 + conv1x1
        last = self.stage_channels[-1]
        parts += [(0, 2 * last),                                          # head BN (affine)
                  conv_cost(last, self.num_classes, 1, 1, bn=False, bias=True)]  # classifier
        return Cost(sum(m for m, _ in parts), sum(p for _, p in parts))

    def fixed_cost(self) -> Cost:
        """Stem, reduction blocks, head BN and classifier: present in every architecture."""
        return self._fixed

    @cached_property
    def _op_costs(self) -> dict[str, Cost]:
        # Every edge of every cell keeps its cell's shape, so an op costs the same on every edge.
        out = {}
        for name in self.ops:
            costs = [op_cost(name, c.channels, c.channels, 1, c.size, affine=True) for c in self.cells]
            out[name] = Cost(sum(m for m, _ in costs), sum(p for _, p in costs))
        return out

    def choice_cost(self, decision: int, value) -> Cost:
        """Op ``value`` on edge ``decision``, summed over every cell of the network."""
        return self._op_costs[value]

    # ---------------------------------------------------------------- architectures

    def enumerate(self) -> Iterator[CellArch]:
        """Every architecture of the space (``count_architectures()`` of them), in lexicographic order of
        the decisions' choices."""
        return (CellArch(ops) for ops in itertools.product(self.ops, repeat=len(self.edges)))

    def arch_from_nb201(self, text: str) -> CellArch:
        """A validated architecture of this space from its arch string."""
        return self.validate(CellArch.from_nb201(text))

    def canonical(self, arch: CellArch) -> str:
        """:func:`canonical_form` of a validated architecture of this space."""
        return canonical_form(self.validate(arch))

    def info(self) -> dict:
        return {**super().info(), "nodes": self.nodes, "edges": len(self.edges), "cells": len(self.cells),
                "ops": list(self.ops)}
