"""A search space as data: a chain of feature maps (nodes) joined by stem and branch edges.

Node 0 is the stem convolution's output. Stem edge e joins node e to node e + 1 and always carries one
op (a block of the skeleton's stages, in order). Branch edge (i, j) joins nodes whose depth differs by
one of ``branch.distances`` (2 and 3 in the Topology Augmented Space of ST-NAS) and is either off or
carries one of ``branch.ops``. A node sums its incoming edges. After the last node: a 1x1 conv + BN +
ReLU6 head, global average pooling, an optional dropout and a linear classifier.

Every node's width and resolution are fixed by the skeleton, so an edge's cost depends on its own op
alone; MAdds and parameters of an architecture are sums over its edges, and the range over a space is
the sum of the per-edge minima and maxima.

A space file (YAML or JSON)::

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

import json
import math
import random
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from stnas.spaces.arch import Arch
from stnas.spaces.errors import SpaceError
from stnas.spaces.ops import conv_cost, conv_out, op_cost, op_names, parse_op

BUILTIN_DIR = Path(__file__).with_name("builtin")


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


@dataclass(frozen=True)
class Space:
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
    def from_dict(cls, data, source: str = "") -> "Space":
        """Validate a parsed space file; every error names the field."""
        where = f" in {source}" if source else ""

        def fail(msg):
            raise SpaceError(f"space{where}: {msg}")

        def obj(value, path):
            if not isinstance(value, dict):
                fail(f"'{path}' must be a mapping, got {type(value).__name__}")
            return value

        def integer(value, path, lo=1):
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                fail(f"'{path}' must be an integer >= {lo}, got {value!r}")
            return value

        def ops_list(value, path, allow_empty=False):
            if not isinstance(value, list) or (not value and not allow_empty):
                fail(f"'{path}' must be a non-empty list of op names, got {value!r}")
            for k, name in enumerate(value):
                if parse_op(name) is None:
                    fail(f"'{path}[{k}]': unknown op {name!r} (ops: {', '.join(op_names())})")
            if len(set(value)) != len(value):
                fail(f"'{path}' lists an op twice: {value}")
            return tuple(value)

        def check_keys(d, path, allowed):
            extra = set(d) - set(allowed)
            if extra:
                fail(f"'{path}' has unknown field(s) {sorted(extra)} (allowed: {sorted(allowed)})")

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

    @classmethod
    def load(cls, spec) -> "Space":
        """A space from a file path (.yaml/.yml/.json) or a built-in name (see :func:`builtin_spaces`)."""
        if isinstance(spec, Space):
            return spec
        path = Path(spec)
        if not path.suffix and (BUILTIN_DIR / f"{spec}.yaml").is_file():
            path = BUILTIN_DIR / f"{spec}.yaml"
        if not path.is_file():
            raise SpaceError(f"space {spec!r} is neither a file nor a built-in space "
                             f"(built-in: {', '.join(builtin_spaces())})")
        text = path.read_text()
        try:
            if path.suffix == ".json":
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
        except Exception as e:  # yaml.YAMLError / json.JSONDecodeError: say which file and where
            raise SpaceError(f"space file {path}: cannot parse it ({e})") from None
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict:
        """The space file's content (``Space.from_dict(s.to_dict()) == s``)."""
        out = {"name": self.name, "input": {"resolution": self.resolution, "channels": self.in_channels},
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

    # ---------------------------------------------------------------- counting and cost

    def count_topologies(self) -> int:
        """Distinct on/off patterns of the branch edges: 2 ** (number of branch edges)."""
        return 2 ** len(self.branch_edges)

    def count_architectures(self) -> int:
        """Distinct architectures: every stem edge's op choice times every branch edge's off-or-op choice."""
        n = math.prod(len(e.ops) for e in self.stem_edges)
        return n * math.prod(1 + len(e.ops) for e in self.branch_edges)

    def _fixed_cost(self) -> tuple[int, int]:
        """Stem conv, head conv and classifier: present in every architecture."""
        out = conv_out(self.resolution, self.stem_stride)
        m1, p1 = conv_cost(self.in_channels, self.stem_width, self.stem_kernel, out * out)
        c_last, s_last = self.nodes[-1]
        m2, p2 = conv_cost(c_last, self.head_width, 1, s_last * s_last)
        m3, p3 = conv_cost(self.head_width, self.num_classes, 1, 1, bn=False, bias=True)
        return m1 + m2 + m3, p1 + p2 + p3

    @staticmethod
    def _edge_cost(edge: Edge, op) -> tuple[int, int]:
        return (0, 0) if op is None else op_cost(op, edge.cin, edge.cout, edge.stride, edge.in_size)

    def cost(self, arch: Arch) -> tuple[int, int]:
        """(multiply-adds, parameters) of ``arch`` at the space's input resolution, per image."""
        self.validate(arch)
        madds, params = self._fixed_cost()
        for edge, op in zip(self.stem_edges + self.branch_edges, arch.ops + arch.branches):
            m, p = self._edge_cost(edge, op)
            madds, params = madds + m, params + p
        return madds, params

    def madds(self, arch: Arch) -> int:
        return self.cost(arch)[0]

    def params(self, arch: Arch) -> int:
        return self.cost(arch)[1]

    def madds_range(self) -> tuple[int, int]:
        """Smallest and largest MAdds over every architecture of the space (exact: costs add per edge)."""
        lo = hi = self._fixed_cost()[0]
        for e in self.stem_edges:
            costs = [self._edge_cost(e, op)[0] for op in e.ops]
            lo, hi = lo + min(costs), hi + max(costs)
        for e in self.branch_edges:
            hi += max(self._edge_cost(e, op)[0] for op in e.ops)
        return lo, hi

    def info(self) -> dict:
        lo, hi = self.madds_range()
        return {"name": self.name, "source": self.source, "resolution": self.resolution,
                "nodes": len(self.nodes), "stem_edges": len(self.stem_edges),
                "branch_edges": len(self.branch_edges), "topologies": self.count_topologies(),
                "architectures": self.count_architectures(), "madds_min": lo, "madds_max": hi}

    # ---------------------------------------------------------------- validation and sampling

    def validate(self, arch: Arch) -> Arch:
        """``arch`` if it belongs to this space, else a SpaceError naming the field."""
        if not isinstance(arch, Arch):
            raise SpaceError(f"expected an Arch, got {type(arch).__name__}")
        if len(arch.ops) != len(self.stem_edges):
            raise SpaceError(f"arch.ops has {len(arch.ops)} entries, space {self.name!r} has "
                             f"{len(self.stem_edges)} stem edges")
        if len(arch.branches) != len(self.branch_edges):
            raise SpaceError(f"arch.branches has {len(arch.branches)} entries, space {self.name!r} has "
                             f"{len(self.branch_edges)} branch edges")
        for k, (edge, op) in enumerate(zip(self.stem_edges, arch.ops)):
            if op not in edge.ops:
                raise SpaceError(f"arch.ops[{k}]: {op!r} is not a candidate of stem edge {edge.name} "
                                 f"(candidates: {', '.join(edge.ops)})")
        for k, (edge, op) in enumerate(zip(self.branch_edges, arch.branches)):
            if op is not None and op not in edge.ops:
                raise SpaceError(f"arch.branches[{k}]: {op!r} is not a candidate of branch edge {edge.name} "
                                 f"(candidates: null, {', '.join(edge.ops)})")
        return arch

    def check_budget(self, budget_madds: float | None = None, budget_params: float | None = None) -> None:
        """A clear error for a budget that no architecture of the space can meet."""
        lo, _ = self.madds_range()
        if budget_madds is not None and (not math.isfinite(budget_madds) or budget_madds < lo):
            raise SpaceError(f"budget_madds: {budget_madds / 1e6:.2f}M is below the smallest architecture "
                             f"of space {self.name!r} ({lo / 1e6:.2f}M MAdds)")
        if budget_params is not None:
            plo = self._fixed_cost()[1] + sum(min(self._edge_cost(e, op)[1] for op in e.ops) for e in self.stem_edges)
            if not math.isfinite(budget_params) or budget_params < plo:
                raise SpaceError(f"budget_params: {budget_params / 1e6:.3f}M is below the smallest architecture "
                                 f"of space {self.name!r} ({plo / 1e6:.3f}M parameters)")

    def within(self, arch: Arch, budget_madds=None, budget_params=None) -> bool:
        madds, params = self.cost(arch)
        return (budget_madds is None or madds <= budget_madds) and (budget_params is None or params <= budget_params)

    def sample(self, rng: random.Random, budget_madds=None, budget_params=None, max_tries: int = 10000) -> Arch:
        """Uniform over stem ops; each branch edge on with probability 1/2, then a uniform op. Under a
        budget: rejection sampling (so uniform over the architectures that meet it)."""
        self.check_budget(budget_madds, budget_params)
        for _ in range(max_tries):
            ops = tuple(rng.choice(e.ops) for e in self.stem_edges)
            branches = tuple(rng.choice(e.ops) if rng.random() < 0.5 else None for e in self.branch_edges)
            arch = Arch(ops, branches)
            if self.within(arch, budget_madds, budget_params):
                return arch
        raise SpaceError(f"budget: no architecture of space {self.name!r} under it found in {max_tries} random "
                         f"draws; raise the budget (MAdds range {self.madds_range()})")

    def mutate(self, arch: Arch, rng: random.Random, prob: float = 0.1) -> Arch:
        """Each gene (stem op, branch state) is redrawn with probability ``prob``; at least one changes
        when the space has a gene with more than one value."""
        self.validate(arch)
        genes = self._genes()
        values = list(arch.ops + arch.branches)
        movable = [k for k, choices in enumerate(genes) if len(choices) > 1]
        if not movable:
            return arch
        changed = False
        for k in movable:
            if rng.random() < prob:
                values[k] = rng.choice([c for c in genes[k] if c != values[k]])
                changed = True
        if not changed:
            k = rng.choice(movable)
            values[k] = rng.choice([c for c in genes[k] if c != values[k]])
        n = len(self.stem_edges)
        return Arch(tuple(values[:n]), tuple(values[n:]))

    def crossover(self, a: Arch, b: Arch, rng: random.Random) -> Arch:
        """Uniform crossover: every gene from either parent with probability 1/2."""
        self.validate(a), self.validate(b)
        pick = [x if rng.random() < 0.5 else y for x, y in zip(a.ops + a.branches, b.ops + b.branches)]
        n = len(self.stem_edges)
        return Arch(tuple(pick[:n]), tuple(pick[n:]))

    def _genes(self) -> list[tuple]:
        return [e.ops for e in self.stem_edges] + [(None,) + e.ops for e in self.branch_edges]

    def largest(self) -> Arch:
        """The architecture with every edge at its most expensive op (every branch on)."""
        def heaviest(e):
            return max(e.ops, key=lambda op: self._edge_cost(e, op))
        return Arch(tuple(heaviest(e) for e in self.stem_edges), tuple(heaviest(e) for e in self.branch_edges))

    def smallest(self) -> Arch:
        """The architecture with every edge at its cheapest op (every branch off)."""
        return Arch(tuple(min(e.ops, key=lambda op: self._edge_cost(e, op)) for e in self.stem_edges),
                    (None,) * len(self.branch_edges))


def builtin_spaces() -> list[str]:
    """Names of the spaces shipped with stnas (``stnas/spaces/builtin/*.yaml``)."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def load_space(spec) -> Space:
    return Space.load(spec)
