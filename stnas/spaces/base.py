"""The protocol every kind of search space implements, and what follows from it for all of them.

A space is plain data (no torch). Each kind (``chain``, ``cell``; ``resnet`` follows) says:

- its **decisions**: a tuple of :class:`Decision`, each a named gene with its possible values;
- how an architecture maps to gene values and back (:meth:`Space.genes`, :meth:`Space.from_genes`);
- its **cost** as a fixed part plus one additive part per decision (:meth:`Space.fixed_cost`,
  :meth:`Space.choice_cost`): MAdds and parameters of every kind so far add up per decision;
- how to read and write itself (:meth:`Space._parse`, :meth:`Space.to_dict`) and its architectures
  (:attr:`Space.arch_type`).

From that, this class gives every kind the same validation, cost, ranges, counting, the per-choice cost
table, sampling and mutation and crossover within a :class:`~stnas.spaces.budget.Budget`, and the JSON
round trip. A kind whose decisions constrain each other (CR-NAS's stage allocation sums to a fixed
total) overrides the sampling and mutation it needs.

A space file names its kind with a ``type:`` key (``chain`` when absent, so the first space files
still load); :meth:`Space.load` and :meth:`Space.from_dict` dispatch on it.
"""
from __future__ import annotations

import json
import math
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from stnas.spaces.budget import Budget
from stnas.spaces.errors import SpaceError

BUILTIN_DIR = Path(__file__).with_name("builtin")
_KINDS: dict[str, type["Space"]] = {}


class Cost(NamedTuple):
    madds: int
    params: int


@dataclass(frozen=True)
class Decision:
    """One gene of an architecture: its name (as the architecture's JSON spells the field), its possible
    values, and where in the network it acts (for messages and plots)."""

    name: str
    choices: tuple
    where: str = ""


def field_checks(source: str = ""):
    """The checks every kind's parser uses, each raising one SpaceError that names the field:
    ``fail(msg)``, ``obj(value, path)`` (a mapping), ``integer(value, path, lo)``, and
    ``check_keys(d, path, allowed, required)``."""
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

    def check_keys(d, path, allowed, required=()):
        extra = set(d) - set(allowed)
        if extra:
            fail(f"'{path}' has unknown field(s) {sorted(extra)} (allowed: {sorted(allowed)})")
        for key in required:
            if key not in d:
                fail(f"'{path}' is missing '{key}'" if path != "<top level>" else f"missing field '{key}'")

    return fail, obj, integer, check_keys


def read_header(data, source: str, sections: tuple[str, ...]):
    """The part every cell-like space file shares: a mapping with exactly ``name``, ``input``
    (``resolution``, optional ``channels``), ``num_classes`` and the kind's ``sections``; the name a
    non-empty string. Returns the checks of :func:`field_checks`, the mapping and its ``input``."""
    fail, obj, integer, check_keys = field_checks(source)
    data = obj(data, "<top level>")
    keys = ("name", "input", "num_classes", *sections)
    check_keys(data, "<top level>", set(keys), keys)
    if not isinstance(data["name"], str) or not data["name"]:
        fail(f"'name' must be a non-empty string, got {data['name']!r}")
    inp = obj(data["input"], "input")
    check_keys(inp, "input", {"resolution", "channels"}, ("resolution",))
    return (fail, obj, integer, check_keys), data, inp


def register_kind(cls: type["Space"]) -> type["Space"]:
    """Class decorator: make ``type: <cls.kind>`` in space files build ``cls``."""
    _KINDS[cls.kind] = cls
    return cls


def space_kinds() -> list[str]:
    return sorted(_KINDS)


class Space(ABC):
    kind: ClassVar[str]
    arch_type: ClassVar[type]
    # Every kind is a frozen dataclass with at least these fields.
    name: str
    resolution: int
    in_channels: int
    num_classes: int
    source: str

    # ---------------------------------------------------------------- what a kind provides

    @classmethod
    @abstractmethod
    def _parse(cls, data: dict, source: str) -> "Space":
        """Validate a parsed space file of this kind; every error names the field."""

    @abstractmethod
    def to_dict(self) -> dict:
        """The space file's content, with its ``type`` (``Space.from_dict(s.to_dict()) == s``)."""

    @abstractmethod
    def decisions(self) -> tuple[Decision, ...]:
        ...

    @abstractmethod
    def genes(self, arch) -> tuple:
        """The gene values of ``arch`` (an ``arch_type`` of the right length), in decision order."""

    @abstractmethod
    def from_genes(self, genes) -> Any:
        ...

    @abstractmethod
    def fixed_cost(self) -> Cost:
        """What every architecture costs whatever its decisions (stem, head, ...)."""

    @abstractmethod
    def choice_cost(self, decision: int, value) -> Cost:
        """What value ``value`` of decision ``decision`` adds."""

    # ---------------------------------------------------------------- loading and writing

    @classmethod
    def from_dict(cls, data, source: str = "") -> "Space":
        """A space from a parsed file: ``type`` picks the kind (default ``chain``)."""
        if not isinstance(data, dict):
            raise SpaceError(f"space{' in ' + source if source else ''}: the file must hold a mapping, got "
                             f"{type(data).__name__}")
        kind = data.get("type", "chain")
        if cls is not Space and getattr(cls, "kind", None) == kind:
            target = cls
        else:
            target = _KINDS.get(kind) if isinstance(kind, str) else None
        if target is None:
            raise SpaceError(f"space{' in ' + source if source else ''}: unknown type {kind!r} "
                             f"(types: {', '.join(space_kinds())})")
        if cls is not Space and not issubclass(target, cls):
            raise SpaceError(f"space{' in ' + source if source else ''}: a {kind!r} space, not a {cls.kind!r} one")
        return target._parse({k: v for k, v in data.items() if k != "type"}, source)

    @classmethod
    def load(cls, spec) -> "Space":
        """A space from a file path (.yaml/.yml/.json), a built-in name (see :func:`builtin_spaces`), or
        its parsed dict (as exported architecture files and checkpoints carry it)."""
        if isinstance(spec, Space):
            return spec
        if isinstance(spec, dict):
            return cls.from_dict(spec)
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

    def arch_from_dict(self, data):
        """An architecture of this space from its JSON form (validated)."""
        return self.validate(self.arch_type.from_dict(data))

    # ---------------------------------------------------------------- validation and cost

    def validate(self, arch):
        """``arch`` if it belongs to this space, else a SpaceError naming the gene."""
        if not isinstance(arch, self.arch_type):
            raise SpaceError(f"space {self.name!r} ({self.kind}) takes a {self.arch_type.__name__}, got "
                             f"{type(arch).__name__}")
        genes = self.genes(arch)
        for d, value in zip(self.decisions(), genes):
            if value not in d.choices:
                shown = ", ".join("null" if c is None else str(c) for c in d.choices)
                at = f" of {d.where}" if d.where else ""
                raise SpaceError(f"{d.name}: {value!r} is not a candidate{at} (candidates: {shown})")
        return arch

    def cost(self, arch) -> Cost:
        """(multiply-adds, parameters) of ``arch`` at the space's input resolution, per image."""
        self.validate(arch)
        madds, params = self.fixed_cost()
        for k, value in enumerate(self.genes(arch)):
            m, p = self.choice_cost(k, value)
            madds, params = madds + m, params + p
        return Cost(madds, params)

    def madds(self, arch) -> int:
        return self.cost(arch).madds

    def params(self, arch) -> int:
        return self.cost(arch).params

    def cost_table(self) -> dict:
        """The fixed cost and what every value of every decision adds: the data a resource term of a
        differentiable search (GOLD-NAS) or a cost predictor reads, without building a model."""
        fixed = self.fixed_cost()
        return {"fixed": {"madds": fixed.madds, "params": fixed.params},
                "decisions": [{"name": d.name, "choices": [
                    {"value": v, "madds": self.choice_cost(k, v)[0], "params": self.choice_cost(k, v)[1]}
                    for v in d.choices]} for k, d in enumerate(self.decisions())]}

    def _range(self, index: int) -> tuple[int, int]:
        lo = hi = self.fixed_cost()[index]
        for k, d in enumerate(self.decisions()):
            costs = [self.choice_cost(k, v)[index] for v in d.choices]
            lo, hi = lo + min(costs), hi + max(costs)
        return lo, hi

    def madds_range(self) -> tuple[int, int]:
        """Smallest and largest MAdds over every architecture (exact: costs add per decision)."""
        return self._range(0)

    def params_range(self) -> tuple[int, int]:
        return self._range(1)

    def count_architectures(self) -> int:
        return math.prod(len(d.choices) for d in self.decisions())

    def info(self) -> dict:
        lo, hi = self.madds_range()
        plo, phi = self.params_range()
        return {"name": self.name, "type": self.kind, "source": self.source, "resolution": self.resolution,
                "decisions": len(self.decisions()), "architectures": self.count_architectures(),
                "madds_min": lo, "madds_max": hi, "params_min": plo, "params_max": phi}

    # ---------------------------------------------------------------- budgets, sampling, variation

    def within(self, arch, budget: Budget | None = None) -> bool:
        return budget is None or budget.admits(self.cost(arch))

    def draw(self, rng: random.Random):
        """One architecture drawn without a budget: uniform over every decision's values."""
        return self.from_genes(tuple(rng.choice(d.choices) for d in self.decisions()))

    def sample(self, rng: random.Random, budget: Budget | None = None, max_tries: int = 10000):
        """:meth:`draw`; under a budget, rejection sampling (so the same law restricted to the
        architectures that meet it)."""
        if budget is None or budget.unbounded:
            return self.draw(rng)
        budget.check(self)
        for _ in range(max_tries):
            arch = self.draw(rng)
            if budget.admits(self.cost(arch)):
                return arch
        raise SpaceError(f"budget: no architecture of space {self.name!r} under it found in {max_tries} random "
                         f"draws; raise the budget (MAdds range {self.madds_range()})")

    def mutate(self, arch, rng: random.Random, prob: float = 0.1):
        """Each gene is redrawn with probability ``prob``; at least one changes when the space has a gene
        with more than one value."""
        self.validate(arch)
        choices = [d.choices for d in self.decisions()]
        values = list(self.genes(arch))
        movable = [k for k, c in enumerate(choices) if len(c) > 1]
        if not movable:
            return arch
        changed = False
        for k in movable:
            if rng.random() < prob:
                values[k] = rng.choice([c for c in choices[k] if c != values[k]])
                changed = True
        if not changed:
            k = rng.choice(movable)
            values[k] = rng.choice([c for c in choices[k] if c != values[k]])
        return self.from_genes(tuple(values))

    def crossover(self, a, b, rng: random.Random):
        """Uniform crossover: every gene from either parent with probability 1/2."""
        self.validate(a), self.validate(b)
        return self.from_genes(tuple(x if rng.random() < 0.5 else y for x, y in zip(self.genes(a), self.genes(b))))

    def largest(self):
        """The architecture with every decision at its most expensive value (MAdds, then parameters; an
        op before None where both cost nothing)."""
        return self.from_genes(tuple(max(d.choices, key=lambda v, k=k: (self.choice_cost(k, v), v is not None))
                                     for k, d in enumerate(self.decisions())))

    def smallest(self):
        return self.from_genes(tuple(min(d.choices, key=lambda v, k=k: (self.choice_cost(k, v), v is not None))
                                     for k, d in enumerate(self.decisions())))


def builtin_spaces() -> list[str]:
    """Names of the spaces shipped with stnas (``stnas/spaces/builtin/*.yaml``)."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def load_space(spec) -> Space:
    return Space.load(spec)
