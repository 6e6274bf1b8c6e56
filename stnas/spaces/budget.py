"""A resource budget: the most MAdds and/or parameters an architecture may cost.

One object, checked against a space once (:meth:`Budget.check`), then asked per architecture
(:meth:`Budget.admits`): sampling, evolution and the choice of the best all read the same rule.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from stnas.spaces.errors import SpaceError


def format_count(value: float) -> str:
    """3_860_000 -> '3.86M' (three significant digits, as budget file names use)."""
    return f"{value / 1e6:.3g}M"


@dataclass(frozen=True)
class Budget:
    madds: float | None = None
    params: float | None = None

    def __post_init__(self):
        for name in ("madds", "params"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                                  or v <= 0):
                raise SpaceError(f"budget: {name} must be a positive finite number, got {v!r}")

    @property
    def unbounded(self) -> bool:
        return self.madds is None and self.params is None

    def admits(self, cost) -> bool:
        """Whether a (MAdds, params) cost meets the budget."""
        madds, params = cost
        return (self.madds is None or madds <= self.madds) and (self.params is None or params <= self.params)

    def check(self, space) -> list[str]:
        """A SpaceError when no architecture of ``space`` can meet the budget; the list of warnings (a
        budget that every architecture meets binds nothing)."""
        (mlo, mhi), (plo, phi) = space.madds_range(), space.params_range()
        if self.madds is not None and self.madds < mlo:
            raise SpaceError(f"budget_madds: {self.madds / 1e6:.2f}M is below the smallest architecture of space "
                             f"{space.name!r} ({mlo / 1e6:.2f}M MAdds)")
        if self.params is not None and self.params < plo:
            raise SpaceError(f"budget_params: {self.params / 1e6:.3f}M is below the smallest architecture of space "
                             f"{space.name!r} ({plo / 1e6:.3f}M parameters)")
        warnings = []
        if self.madds is not None and self.madds >= mhi:
            warnings.append(f"budget_madds {self.madds / 1e6:.2f}M is at or above the largest architecture of space "
                            f"{space.name!r} ({mhi / 1e6:.2f}M MAdds): it binds nothing")
        if self.params is not None and self.params >= phi:
            warnings.append(f"budget_params {self.params / 1e6:.3f}M is at or above the largest architecture of "
                            f"space {space.name!r} ({phi / 1e6:.3f}M parameters): it binds nothing")
        return warnings

    @property
    def name(self) -> str:
        """A short name for file names: the MAdds budget ('3.86M'), else the parameter budget."""
        if self.madds is not None:
            return format_count(self.madds)
        if self.params is not None:
            return format_count(self.params) + "-params"
        return "unbounded"

    def to_dict(self) -> dict:
        return {"madds": self.madds, "params": self.params}


_UNITS = {"": 1, "k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6, "g": 1e9, "G": 1e9}


def parse_count(text) -> float:
    """'320M', '3.2e8', '0.32G' -> a number; a ValueError that shows examples otherwise."""
    import re

    m = re.fullmatch(r"\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgG]?)\s*", str(text))
    if not m:
        raise ValueError(f"{text!r} is not a count (examples: 320M, 3.2e8, 0.32G)")
    return float(m.group(1)) * _UNITS[m.group(2)]
