"""An architecture of a space: one op per stem edge, and per branch edge an op or None (off).

Plain data: hashable, comparable, and JSON round-trippable through :meth:`Arch.to_dict` /
:meth:`Arch.from_dict`. Whether an architecture belongs to a given space is the space's to say
(:meth:`stnas.spaces.Space.validate`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from stnas.spaces.errors import SpaceError


@dataclass(frozen=True)
class Arch:
    ops: tuple[str, ...]
    branches: tuple[str | None, ...] = ()

    def __post_init__(self):
        if not isinstance(self.ops, tuple) or not all(isinstance(o, str) for o in self.ops):
            raise SpaceError(f"arch.ops must be a tuple of op names, got {self.ops!r}")
        if not isinstance(self.branches, tuple) or not all(b is None or isinstance(b, str) for b in self.branches):
            raise SpaceError(f"arch.branches must be a tuple of op names or None, got {self.branches!r}")

    @property
    def topology(self) -> tuple[bool, ...]:
        """Which branch edges are on."""
        return tuple(b is not None for b in self.branches)

    def to_dict(self) -> dict:
        return {"ops": list(self.ops), "branches": list(self.branches)}

    @classmethod
    def from_dict(cls, data) -> "Arch":
        if not isinstance(data, dict):
            raise SpaceError(f"an architecture is a JSON object with 'ops' and 'branches', got {type(data).__name__}")
        if "arch" in data and isinstance(data["arch"], dict):  # an exported file: {"space": ..., "arch": {...}}
            data = data["arch"]
        unknown = set(data) - {"ops", "branches"}
        if unknown:
            raise SpaceError(f"architecture: unknown field(s) {sorted(unknown)} (expected 'ops' and 'branches')")
        if not isinstance(data.get("ops"), list):
            raise SpaceError("architecture field 'ops': expected a list of op names, one per stem edge")
        branches = data.get("branches", [])
        if not isinstance(branches, list):
            raise SpaceError("architecture field 'branches': expected a list (an op name or null per branch edge)")
        return cls(tuple(data["ops"]), tuple(branches))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "Arch":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpaceError(f"architecture: not valid JSON ({e})") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path) -> "Arch":
        return cls.from_dict(read_arch_json(path))


def read_arch_json(path, what: str = "architecture file"):
    """The parsed JSON of an architecture file (an architecture, a ``best_*.json`` that ``stnas search``
    wrote, or a list of them); a missing file or invalid JSON is one SpaceError that names the path."""
    path = Path(path)
    if not path.is_file():
        raise SpaceError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SpaceError(f"{what} {path}: not valid JSON ({e})") from None
