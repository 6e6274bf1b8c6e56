"""The ``darts-gold`` kind of space: GOLD-NAS's relaxed DARTS space (Bi, Xie, Chen, Wei, Tian, "GOLD-NAS:
Gradual, One-Level, Differentiable", arXiv 2007.03331).

The skeleton is DARTS's (Liu et al., ICLR 2019): a 3x3 stem conv + BN to ``stem_multiplier * C``
channels, then ``cells`` cells; the cells at positions ``cells // 3`` and ``2 * cells // 3`` are
reduction cells (stride 2 on the edges from the input nodes, the width doubles). Every cell has two input
nodes (the outputs of the two previous cells, each brought to the cell's width C by a preprocessing op:
ReLU-conv1x1-BN, or a factorized reduction when the cell before the previous one halved the size less)
and four intermediate nodes; every earlier node feeds every later intermediate node, so a cell has
2 + 3 + 4 + 5 = 14 edges, and its output concatenates the four intermediate nodes (4C channels). The head
is global average pooling and a linear classifier (no auxiliary head).

What GOLD-NAS relaxes (the paper's abstract): the one-op-per-edge rule, the two-inputs-per-node rule and
the rule that every cell of a kind shares one architecture. So an architecture keeps, for every cell and
every edge, ANY subset of the candidate ops (none, one or several): one on/off decision per
(cell, edge, op). An edge with no op contributes nothing; a node with no incoming op is a zero tensor.

Candidate ops (our reading, after the paper's {skip, sep-conv} space): ``skip_connect`` (the identity on a
stride-1 edge, DARTS's factorized reduction on a stride-2 edge, so it is the registry's ``skip_connect``
or ``factorized_reduce`` by stride) and ``sep_conv_3x3`` (DARTS's separable conv, applied twice:
ReLU-dw3x3(stride)-pw1x1-BN-ReLU-dw3x3-pw1x1-BN). The ops are registered here, in the one op registry, as
family ``"darts"``; their modules live in :mod:`stnas.supernet.darts_blocks`.

Counting the space: 14 edges x 2 ops = 28 binary decisions per cell, ``2 ** (28 * cells)`` architectures.
The builtin ``darts-gold`` (20 cells, as DARTS's CIFAR-10 evaluation network) has 2^560 ~ 3.8 x 10^168
architectures, above the paper's "more than 10^160" (which needs at least 19 cells: 2^532 ~ 1.4 x 10^160).
Its architectures cost 227M-1,096M MAdds and 1.37M-7.41M parameters (``stnas space info --space
darts-gold``); the fixed part (stem, preprocessing, classifier) is 227M and 1.37M of that.

Costs (torch-free, the MobileNet convention of :mod:`stnas.spaces.ops`): a fixed part (stem, the
preprocessing convs of every cell, classifier) plus, per on/off decision, the op's registry cost at that
cell's width, stride and input size when on, zero when off. They are the standalone model's (affine BN);
the search supernet's BN has no affine parameters, as DARTS's.

A space file::

    type: darts-gold
    name: darts-gold
    input: {resolution: 32, channels: 3}
    num_classes: 10
    cell: {ops: [skip_connect, sep_conv_3x3]}
    skeleton: {channels: 36, cells: 20, stem_multiplier: 3}
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from stnas.spaces.base import Cost, Decision, Space, read_header, register_kind
from stnas.spaces.errors import SpaceError
from stnas.spaces.ops import OpDef, conv_cost, conv_out, get_op, is_op, register_op

INPUT_NODES = 2
STEPS = 4  # intermediate nodes per cell (DARTS)
CANDIDATE_OPS = ("skip_connect", "sep_conv_3x3")


# ---------------------------------------------------------------------- the ops (family "darts")

def _sep_conv_cost(kernel: int):
    def cost(cin, cout, stride, in_size, affine=True):
        out = conv_out(in_size, stride)
        hw = out * out
        # DARTS's SepConv: (dw k x k stride s, pw 1x1 cin->cin, BN), then (dw k x k, pw 1x1 cin->cout, BN).
        parts = [conv_cost(cin, cin, kernel, hw, groups=cin, bn=False), conv_cost(cin, cin, 1, hw, bn=affine),
                 conv_cost(cin, cin, kernel, hw, groups=cin, bn=False), conv_cost(cin, cout, 1, hw, bn=affine)]
        return sum(m for m, _ in parts), sum(p for _, p in parts)
    return cost


def _factorized_reduce_cost(cin, cout, stride, in_size, affine=True):
    if stride != 2 or cout % 2:
        raise SpaceError(f"op 'factorized_reduce' halves the size to an even width: it takes stride 2 and an even "
                         f"cout, got stride {stride}, cout {cout}")
    out = conv_out(in_size, 2)
    # Two 1x1 convs (cin -> cout / 2 each, stride 2, one shifted by a pixel), concatenated, then BN.
    m, p = conv_cost(cin, cout // 2, 1, out * out, bn=False)
    return 2 * m, 2 * p + (2 * cout if affine else 0)


for _op in (OpDef("sep_conv_3x3", "darts", _sep_conv_cost(3), "stnas.supernet.darts_blocks:make_sep_conv",
                  args=(("kernel", 3),)),
            OpDef("factorized_reduce", "darts", _factorized_reduce_cost,
                  "stnas.supernet.darts_blocks:make_factorized_reduce")):
    if not is_op(_op.name):  # a module reload must not register twice
        register_op(_op)


def registry_op(name: str, stride: int) -> str:
    """The registry op that computes candidate ``name`` on an edge of ``stride``: DARTS's skip_connect is
    the identity at stride 1 and a factorized reduction at stride 2."""
    if name == "skip_connect":
        return "skip_connect" if stride == 1 else "factorized_reduce"
    return name


# ---------------------------------------------------------------------- architectures

def gold_edges() -> tuple[tuple[int, int], ...]:
    """(dst, src) of the 14 edges of a cell, by destination node, then source: nodes 0, 1 are the inputs."""
    return tuple((dst, src) for dst in range(INPUT_NODES, INPUT_NODES + STEPS) for src in range(dst))


EDGES = gold_edges()


@dataclass(frozen=True)
class GoldArch:
    """The ops every edge of every cell keeps: ``cells[c][e]`` is a tuple of op names (possibly empty)
    for edge ``e`` (order of :func:`gold_edges`) of cell ``c``. Plain data; the space validates it."""

    cells: tuple[tuple[tuple[str, ...], ...], ...]

    def __post_init__(self):
        ok = isinstance(self.cells, tuple) and all(
            isinstance(c, tuple) and all(isinstance(e, tuple) and all(isinstance(o, str) for o in e) for e in c)
            for c in self.cells)
        if not ok:
            raise SpaceError("arch.cells must be a tuple (cells) of tuples (edges) of tuples of op names")

    @property
    def num_ops(self) -> int:
        """How many (cell, edge, op) paths the architecture keeps."""
        return sum(len(e) for c in self.cells for e in c)

    def to_dict(self) -> dict:
        return {"cells": [[list(e) for e in c] for c in self.cells]}

    @classmethod
    def from_dict(cls, data) -> "GoldArch":
        if not isinstance(data, dict):
            raise SpaceError(f"a darts-gold architecture is a JSON object with 'cells', got {type(data).__name__}")
        if "arch" in data and isinstance(data["arch"], dict):  # an exported file: {"space": ..., "arch": {...}}
            data = data["arch"]
        unknown = set(data) - {"cells"}
        if unknown:
            raise SpaceError(f"darts-gold architecture: unknown field(s) {sorted(unknown)} (expected 'cells')")
        cells = data.get("cells")
        if not isinstance(cells, list) or not all(isinstance(c, list) and all(isinstance(e, list) for e in c)
                                                  for c in cells):
            raise SpaceError("darts-gold architecture field 'cells': expected a list (cells) of lists (14 edges) "
                             "of lists of op names")
        return cls(tuple(tuple(tuple(e) for e in c) for c in cells))


# ---------------------------------------------------------------------- the space

@dataclass(frozen=True)
class GoldCell:
    """Where one cell sits: its index, whether it reduces, its width C, the sizes and widths of its two
    inputs (s0 from the cell before the previous one, s1 from the previous one), its output size."""

    index: int
    reduction: bool
    channels: int
    c_prev_prev: int
    c_prev: int
    size_prev_prev: int
    size_prev: int

    @property
    def size(self) -> int:
        """The size of the cell's nodes and output."""
        return conv_out(self.size_prev, 2) if self.reduction else self.size_prev

    def stride(self, src: int) -> int:
        return 2 if self.reduction and src < INPUT_NODES else 1

    def in_size(self, src: int) -> int:
        """Input size of the ops on an edge from node ``src`` (the preprocessed inputs keep s1's size)."""
        return self.size_prev if src < INPUT_NODES else self.size

    @property
    def reduce_s0(self) -> bool:
        """s0 is twice s1's size (the previous cell reduced): DARTS preprocesses it by a factorized reduction."""
        return self.size_prev_prev != self.size_prev


@register_kind
@dataclass(frozen=True)
class DartsGoldSpace(Space):
    kind = "darts-gold"
    arch_type = GoldArch

    name: str
    resolution: int
    in_channels: int
    num_classes: int
    ops: tuple[str, ...]
    channels: int
    num_cells: int
    stem_multiplier: int = 3
    source: str = field(default="", compare=False)

    # ---------------------------------------------------------------- loading

    @classmethod
    def _parse(cls, data, source: str = "") -> "DartsGoldSpace":
        (fail, obj, integer, check_keys), data, inp = read_header(data, source, ("cell", "skeleton"))
        cell = obj(data["cell"], "cell")
        check_keys(cell, "cell", {"ops"}, ("ops",))
        skeleton = obj(data["skeleton"], "skeleton")
        check_keys(skeleton, "skeleton", {"channels", "cells", "stem_multiplier"}, ("channels", "cells"))
        ops = cell["ops"]
        if not isinstance(ops, list) or not ops:
            fail(f"'cell.ops' must be a non-empty list of op names, got {ops!r}")
        for k, name in enumerate(ops):
            if name not in CANDIDATE_OPS:
                fail(f"'cell.ops[{k}]': {name!r} is not a darts-gold candidate (candidates: {', '.join(CANDIDATE_OPS)})")
        if len(set(ops)) != len(ops):
            fail(f"'cell.ops' lists an op twice: {ops}")
        channels = integer(skeleton["channels"], "skeleton.channels")
        if channels % 2:  # a factorized reduction splits its output into two halves
            fail(f"'skeleton.channels' must be even (factorized reductions split the width in two), got {channels}")
        cells = integer(skeleton["cells"], "skeleton.cells", lo=1)
        resolution = integer(inp["resolution"], "input.resolution")
        if resolution % 4:
            fail(f"'input.resolution' must be divisible by 4 (two reduction cells halve it), got {resolution}")
        return cls(name=data["name"], resolution=resolution, in_channels=integer(inp.get("channels", 3), "input.channels"),
                   num_classes=integer(data["num_classes"], "num_classes"), ops=tuple(ops), channels=channels,
                   num_cells=cells, stem_multiplier=integer(skeleton.get("stem_multiplier", 3), "skeleton.stem_multiplier"),
                   source=source)

    def to_dict(self) -> dict:
        return {"type": self.kind, "name": self.name, "input": {"resolution": self.resolution, "channels": self.in_channels},
                "num_classes": self.num_classes, "cell": {"ops": list(self.ops)},
                "skeleton": {"channels": self.channels, "cells": self.num_cells, "stem_multiplier": self.stem_multiplier}}

    # ---------------------------------------------------------------- structure

    @property
    def edges(self) -> tuple[tuple[int, int], ...]:
        return EDGES

    @cached_property
    def reduction_cells(self) -> tuple[int, ...]:
        """DARTS's rule: reductions at a third and two thirds of the depth (a set: one cell may be both)."""
        return tuple(sorted({self.num_cells // 3, 2 * self.num_cells // 3}))

    @cached_property
    def cells(self) -> tuple[GoldCell, ...]:
        stem = self.stem_multiplier * self.channels
        c_pp, c_p, c = stem, stem, self.channels
        s_pp = s_p = self.resolution
        out = []
        for i in range(self.num_cells):
            reduction = i in self.reduction_cells
            if reduction:
                c *= 2
            site = GoldCell(i, reduction, c, c_pp, c_p, s_pp, s_p)
            out.append(site)
            c_pp, c_p = c_p, STEPS * c
            s_pp, s_p = s_p, site.size
        return tuple(out)

    @property
    def out_channels(self) -> int:
        return STEPS * self.cells[-1].channels

    # ---------------------------------------------------------------- the protocol

    @cached_property
    def _decisions(self) -> tuple[Decision, ...]:
        return tuple(Decision(f"cells[{c}][{e}].{op}", (False, True), f"cell {c}, edge {dst}<-{src}")
                     for c in range(self.num_cells) for e, (dst, src) in enumerate(EDGES) for op in self.ops)

    def decisions(self) -> tuple[Decision, ...]:
        """One on/off gene per (cell, edge, op), by cell, then edge, then op."""
        return self._decisions

    def genes(self, arch: GoldArch) -> tuple:
        if not isinstance(arch, GoldArch):
            raise SpaceError(f"expected a GoldArch, got {type(arch).__name__}")
        if len(arch.cells) != self.num_cells:
            raise SpaceError(f"arch.cells has {len(arch.cells)} cells, space {self.name!r} has {self.num_cells}")
        out = []
        for c, cell in enumerate(arch.cells):
            if len(cell) != len(EDGES):
                raise SpaceError(f"arch.cells[{c}] has {len(cell)} edges, a darts-gold cell has {len(EDGES)}")
            for e, kept in enumerate(cell):
                for op in kept:
                    if op not in self.ops:
                        raise SpaceError(f"arch.cells[{c}][{e}]: {op!r} is not a candidate (candidates: "
                                         f"{', '.join(self.ops)})")
                if len(set(kept)) != len(kept):
                    raise SpaceError(f"arch.cells[{c}][{e}] lists an op twice: {list(kept)}")
                out.extend(op in kept for op in self.ops)
        return tuple(out)

    def from_genes(self, genes) -> GoldArch:
        genes, n = tuple(genes), len(self.ops)
        per_cell = len(EDGES) * n
        if len(genes) != self.num_cells * per_cell:
            raise SpaceError(f"expected {self.num_cells * per_cell} genes, got {len(genes)}")
        return GoldArch(tuple(tuple(tuple(op for o, op in enumerate(self.ops) if genes[c * per_cell + e * n + o])
                                    for e in range(len(EDGES))) for c in range(self.num_cells)))

    @cached_property
    def _fixed(self) -> Cost:
        r = self.resolution
        stem = self.stem_multiplier * self.channels
        parts = [conv_cost(self.in_channels, stem, 3, r * r)]                        # stem conv + BN
        for site in self.cells:
            if site.reduce_s0:                                                        # s0: factorized reduce
                parts.append(get_op("factorized_reduce").cost(site.c_prev_prev, site.channels, 2,
                                                              site.size_prev_prev))
            else:                                                                     # s0: ReLU-conv1x1-BN
                parts.append(conv_cost(site.c_prev_prev, site.channels, 1, site.size_prev_prev ** 2))
            parts.append(conv_cost(site.c_prev, site.channels, 1, site.size_prev ** 2))  # s1: ReLU-conv1x1-BN
        parts.append(conv_cost(self.out_channels, self.num_classes, 1, 1, bn=False, bias=True))  # classifier
        return Cost(sum(m for m, _ in parts), sum(p for _, p in parts))

    def fixed_cost(self) -> Cost:
        """Stem, every cell's two preprocessing ops, classifier: present in every architecture."""
        return self._fixed

    @cached_property
    def _on_costs(self) -> tuple[Cost, ...]:
        """The cost of every (cell, edge, op) when on, in decision order."""
        out = []
        for site in self.cells:
            for dst, src in EDGES:
                for op in self.ops:
                    stride = site.stride(src)
                    m, p = get_op(registry_op(op, stride)).cost(site.channels, site.channels, stride, site.in_size(src))
                    out.append(Cost(m, p))
        return tuple(out)

    def op_cost(self, cell: int, edge: int, op: str) -> Cost:
        """What op ``op`` on edge ``edge`` of cell ``cell`` costs when kept."""
        return self._on_costs[(cell * len(EDGES) + edge) * len(self.ops) + self.ops.index(op)]

    def choice_cost(self, decision: int, value) -> Cost:
        return self._on_costs[decision] if value else Cost(0, 0)

    def full(self) -> GoldArch:
        """Every op on every edge of every cell: the supernet before any pruning."""
        return GoldArch(tuple(tuple(tuple(self.ops) for _ in EDGES) for _ in range(self.num_cells)))

    def info(self) -> dict:
        return {**super().info(), "cells": self.num_cells, "edges_per_cell": len(EDGES), "ops": list(self.ops),
                "reduction_cells": list(self.reduction_cells)}
