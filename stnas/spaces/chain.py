"""The ``chain`` kind of space (ST-NAS): a chain of feature maps (nodes) joined by stem and branch edges.

Node 0 is the stem convolution's output. Stem edge e joins node e to node e + 1 and always carries one
op (a block of the skeleton's stages, in order). Branch edge (i, j) joins nodes whose depth differs by
one of ``branch.distances`` (2 and 3 in the Topology Augmented Space of ST-NAS) and is either off or
carries one of ``branch.ops``. A node sums its incoming edges. After the last node: a 1x1 conv + BN +
ReLU6 head, global average pooling, an optional dropout and a linear classifier.

Every node's width and resolution are fixed by the skeleton, so an edge's cost depends on its own op
alone; MAdds and parameters of an architecture are sums over its edges, and the range over a space is
the sum of the per-edge minima and maxima.

A space file (YAML or JSON; ``type: chain`` may be left out, it is the default)::

    type: chain
    name: demo
    input: {resolution: 32, channels: 3}
    num_classes: 10
    stem: {width: 16, kernel: 3, stride: 1}
    stages:                      # blocks, output width, stride of the first block, candidate ops
      - {blocks: 2, width: 24, stride: 2, ops: [mb_k3_e3, mb_k5_e3, skip], first_ops: [mb_k3_e3, mb_k5_e3]}
    branch: {distances: [2, 3], ops: [skip]}   # optional; no branch edges without it
    head: {width: 128, dropout: 0.0}

``first_ops`` (optional, default ``ops``) are the candidates of a stage's first block, where the
stride or width may change; ``skip`` there is a 1x1 conv + BN projection.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from functools import cached_property

from stnas.spaces.arch import Arch
from stnas.spaces.base import Cost, Decision, Space, field_checks, register_kind
from stnas.spaces.errors import SpaceError
from stnas.spaces.ops import conv_cost, conv_out, is_op, op_cost, op_names


@dataclass(frozen=True)
class Stage:
    blocks: int
    width: int
    stride: int
    ops: tuple[str, ...]
    first_ops: tuple[str, ...]


@dataclass(frozen=True)
class Edge:
    """One edge of the chain: stem edges have ``dst == src + 1``."""

    src: int
    dst: int
    cin: int
    cout: int
    stride: int
    in_size: int
    ops: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.src}_{self.dst}"


@register_kind
@dataclass(frozen=True)
class ChainSpace(Space):
    kind = "chain"
    arch_type = Arch

    name: str
    resolution: int
    in_channels: int
    num_classes: int
    stem_width: int
    stem_kernel: int
    stem_stride: int
    stages: tuple[Stage, ...]
    branch_distances: tuple[int, ...] = ()
    branch_ops: tuple[str, ...] = ()
    head_width: int = 1280
    dropout: float = 0.0
    source: str = field(default="", compare=False)

    # ---------------------------------------------------------------- loading

    @classmethod
    def _parse(cls, data, source: str = "") -> "ChainSpace":
        fail, obj, integer, check_keys = field_checks(source)

        def ops_list(value, path, allow_empty=False):
            if not isinstance(value, list) or (not value and not allow_empty):
                fail(f"'{path}' must be a non-empty list of op names, got {value!r}")
            for k, name in enumerate(value):
                if not is_op(name, "chain"):
                    fail(f"'{path}[{k}]': unknown op {name!r} (ops: {', '.join(op_names('chain'))})")
            if len(set(value)) != len(value):
                fail(f"'{path}' lists an op twice: {value}")
            return tuple(value)

        data = obj(data, "<top level>")
        check_keys(data, "<top level>", {"name", "input", "num_classes", "stem", "stages", "branch", "head"})
        for key in ("name", "input", "num_classes", "stem", "stages", "head"):
            if key not in data:
                fail(f"missing field '{key}'")
        if not isinstance(data["name"], str) or not data["name"]:
            fail(f"'name' must be a non-empty string, got {data['name']!r}")
        inp = obj(data["input"], "input")
        check_keys(inp, "input", {"resolution", "channels"})
        stem = obj(data["stem"], "stem")
        check_keys(stem, "stem", {"width", "kernel", "stride"})
        head = obj(data["head"], "head")
        check_keys(head, "head", {"width", "dropout", "pool"})
        if head.get("pool", "avg") != "avg":
            fail(f"'head.pool' must be 'avg' (global average pooling), got {head['pool']!r}")
        dropout = head.get("dropout", 0.0)
        if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            fail(f"'head.dropout' must be in [0, 1), got {dropout!r}")
        kernel = integer(stem.get("kernel", 3), "stem.kernel")
        if kernel % 2 == 0:
            fail(f"'stem.kernel' must be odd, got {kernel}")
        if not isinstance(data["stages"], list) or not data["stages"]:
            fail("'stages' must be a non-empty list")
        stages = []
        for s, st in enumerate(data["stages"]):
            st = obj(st, f"stages[{s}]")
            check_keys(st, f"stages[{s}]", {"blocks", "width", "stride", "ops", "first_ops"})
            for key in ("blocks", "width", "stride", "ops"):
                if key not in st:
                    fail(f"'stages[{s}]' is missing '{key}'")
            ops = ops_list(st["ops"], f"stages[{s}].ops")
            first = ops_list(st.get("first_ops", st["ops"]), f"stages[{s}].first_ops")
            stages.append(Stage(integer(st["blocks"], f"stages[{s}].blocks"), integer(st["width"], f"stages[{s}].width"),
                                integer(st["stride"], f"stages[{s}].stride"), ops, first))
        branch = obj(data.get("branch", {}), "branch")
        check_keys(branch, "branch", {"distances", "ops"})
        distances = branch.get("distances", [])
        if not isinstance(distances, list) or any(isinstance(d, bool) or not isinstance(d, int) or d < 2
                                                  for d in distances) or len(set(distances)) != len(distances):
            fail(f"'branch.distances' must be a list of distinct integers >= 2, got {distances!r}")
        bops = ops_list(branch.get("ops", ["skip"] if distances else []), "branch.ops", allow_empty=not distances)
        space = cls(name=data["name"], resolution=integer(inp.get("resolution"), "input.resolution"),
                    in_channels=integer(inp.get("channels", 3), "input.channels"),
                    num_classes=integer(data["num_classes"], "num_classes"),
                    stem_width=integer(stem.get("width"), "stem.width"), stem_kernel=kernel,
                    stem_stride=integer(stem.get("stride", 2), "stem.stride"), stages=tuple(stages),
                    branch_distances=tuple(sorted(distances)), branch_ops=bops,
                    head_width=integer(head.get("width"), "head.width"), dropout=float(dropout), source=source)
        return space

    def to_dict(self) -> dict:
        """The space file's content (``Space.from_dict(s.to_dict()) == s``)."""
        out = {"type": self.kind, "name": self.name, "input": {"resolution": self.resolution, "channels": self.in_channels},
               "num_classes": self.num_classes,
               "stem": {"width": self.stem_width, "kernel": self.stem_kernel, "stride": self.stem_stride},
               "stages": [{"blocks": s.blocks, "width": s.width, "stride": s.stride, "ops": list(s.ops),
                           "first_ops": list(s.first_ops)} for s in self.stages],
               "head": {"width": self.head_width, "dropout": self.dropout, "pool": "avg"}}
        if self.branch_distances:
            out["branch"] = {"distances": list(self.branch_distances), "ops": list(self.branch_ops)}
        return out

    # ---------------------------------------------------------------- structure

    @cached_property
    def nodes(self) -> tuple[tuple[int, int], ...]:
        """(channels, spatial size) of every node, node 0 being the stem's output."""
        size = conv_out(self.resolution, self.stem_stride)
        out = [(self.stem_width, size)]
        for st in self.stages:
            for b in range(st.blocks):
                size = conv_out(size, st.stride if b == 0 else 1)
                out.append((st.width, size))
        return tuple(out)

    @cached_property
    def stem_edges(self) -> tuple[Edge, ...]:
        edges, e = [], 0
        for st in self.stages:
            for b in range(st.blocks):
                (cin, size), (cout, _) = self.nodes[e], self.nodes[e + 1]
                edges.append(Edge(e, e + 1, cin, cout, st.stride if b == 0 else 1, size,
                                  st.first_ops if b == 0 else st.ops))
                e += 1
        return tuple(edges)

    @cached_property
    def branch_edges(self) -> tuple[Edge, ...]:
        """Ordered by destination node, then by source node."""
        strides = [e.stride for e in self.stem_edges]
        edges = []
        for j in range(len(self.nodes)):
            for d in sorted(self.branch_distances, reverse=True):
                i = j - d
                if i < 0:
                    continue
                (cin, size), (cout, _) = self.nodes[i], self.nodes[j]
                edges.append(Edge(i, j, cin, cout, math.prod(strides[i:j]), size, self.branch_ops))
        return tuple(edges)

    # ---------------------------------------------------------------- the protocol

    @cached_property
    def _decisions(self) -> tuple[Decision, ...]:
        stems = tuple(Decision(f"arch.ops[{k}]", e.ops, f"stem edge {e.name}") for k, e in enumerate(self.stem_edges))
        branches = tuple(Decision(f"arch.branches[{b}]", (None,) + e.ops, f"branch edge {e.name}")
                         for b, e in enumerate(self.branch_edges))
        return stems + branches

    def decisions(self) -> tuple[Decision, ...]:
        """One op per stem edge, then per branch edge None (off) or one of its ops."""
        return self._decisions

    def genes(self, arch: Arch) -> tuple:
        if not isinstance(arch, Arch):
            raise SpaceError(f"expected an Arch, got {type(arch).__name__}")
        if len(arch.ops) != len(self.stem_edges):
            raise SpaceError(f"arch.ops has {len(arch.ops)} entries, space {self.name!r} has "
                             f"{len(self.stem_edges)} stem edges")
        if len(arch.branches) != len(self.branch_edges):
            raise SpaceError(f"arch.branches has {len(arch.branches)} entries, space {self.name!r} has "
                             f"{len(self.branch_edges)} branch edges")
        return arch.ops + arch.branches

    def from_genes(self, genes) -> Arch:
        n = len(self.stem_edges)
        return Arch(tuple(genes[:n]), tuple(genes[n:]))

    @cached_property
    def _fixed(self) -> Cost:
        out = conv_out(self.resolution, self.stem_stride)
        m1, p1 = conv_cost(self.in_channels, self.stem_width, self.stem_kernel, out * out)
        c_last, s_last = self.nodes[-1]
        m2, p2 = conv_cost(c_last, self.head_width, 1, s_last * s_last)
        m3, p3 = conv_cost(self.head_width, self.num_classes, 1, 1, bn=False, bias=True)
        return Cost(m1 + m2 + m3, p1 + p2 + p3)

    def fixed_cost(self) -> Cost:
        """Stem conv, head conv and classifier: present in every architecture."""
        return self._fixed

    @cached_property
    def _edges(self) -> tuple[Edge, ...]:
        return self.stem_edges + self.branch_edges

    def choice_cost(self, decision: int, value) -> Cost:
        if value is None:
            return Cost(0, 0)
        e = self._edges[decision]
        return Cost(*op_cost(value, e.cin, e.cout, e.stride, e.in_size))

    def draw(self, rng: random.Random) -> Arch:
        """Uniform over stem ops; each branch edge on with probability 1/2, then a uniform op."""
        ops = tuple(rng.choice(e.ops) for e in self.stem_edges)
        branches = tuple(rng.choice(e.ops) if rng.random() < 0.5 else None for e in self.branch_edges)
        return Arch(ops, branches)

    # ---------------------------------------------------------------- counting

    def count_topologies(self) -> int:
        """Distinct on/off patterns of the branch edges: 2 ** (number of branch edges)."""
        return 2 ** len(self.branch_edges)

    def info(self) -> dict:
        return {**super().info(), "nodes": len(self.nodes), "stem_edges": len(self.stem_edges),
                "branch_edges": len(self.branch_edges), "topologies": self.count_topologies()}
