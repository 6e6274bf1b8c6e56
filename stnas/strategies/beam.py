"""Greedy block-by-block beam search (CR-NAS's spatial search, Liang et al. 2020: beam width K = 3).

The search fixes the searched decisions one at a time, in order. A *partial* architecture is a gene
tuple in which the decisions not yet fixed are :data:`OPEN` (None); the scorer gets partial
architectures and decides how to score what is open (CR-NAS: every open decision drawn uniformly at
random, anew for every validation batch; :func:`complete` draws one completion). At each decision,
every beam is extended by every value of it, the extensions are scored, and the ``k`` best become the
beams. After the last decision the beams are full architectures.

Same interface as :func:`stnas.strategies.evolution.evolve`: a space, a scorer (a list in, a list of
scores out, higher is better), a config; it returns :class:`~stnas.strategies.evolution.Candidate` s of
every full architecture scored, best first. ``decisions`` restricts the search to some genes (the
others are taken from ``base``): the hierarchical recipe searches the stage allocation first, then the
dilations of that allocation.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from stnas.spaces import Budget, Space
from stnas.strategies.evolution import Candidate

OPEN = None  # a decision not fixed yet


@dataclass
class BeamConfig:
    k: int = 3          # beam width (CR-NAS: 3)
    seed: int = 0

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"beam search: k must be >= 1, got {self.k}")


def complete(space: Space, partial: Sequence, rng: random.Random):
    """``partial`` with every open decision drawn uniformly from its values: an architecture."""
    return space.from_genes(tuple(rng.choice(d.choices) if g is OPEN else g
                                  for g, d in zip(partial, space.decisions())))


def beam_search(space: Space, score: Callable[[Sequence[tuple]], Sequence[float]], cfg: BeamConfig,
                budget: Budget | None = None, *, base=None, decisions: Sequence[int] | None = None,
                on_step: Callable[[int, list[tuple[tuple, float]]], None] | None = None) -> list[Candidate]:
    """Beam search over ``decisions`` (gene indices, searched in this order; default: all of them).

    ``base``: an architecture whose genes outside ``decisions`` every candidate keeps (default: those
    genes stay open for the scorer to fill). ``score`` is called once per decision with the new partial
    gene tuples. ``on_step(i, beams)`` after decision i with the (partial, score) beams. The budget
    filters the full architectures only (partial ones have no cost yet)."""
    budget = budget or Budget()
    n = len(space.decisions())
    order = list(range(n)) if decisions is None else list(decisions)
    if sorted(set(order)) != sorted(order) or any(not 0 <= i < n for i in order):
        raise ValueError(f"beam search: decisions must be distinct gene indices in [0, {n}), got {order}")
    start = list(space.genes(base)) if base is not None else [OPEN] * n
    for i in order:
        start[i] = OPEN
    beams: list[tuple[tuple, float]] = [(tuple(start), float("-inf"))]
    finals: dict = {}
    for step, i in enumerate(order):
        last = step == len(order) - 1
        ext = []
        for partial, _ in beams:
            for v in space.decisions()[i].choices:
                g = list(partial)
                g[i] = v
                ext.append(tuple(g))
        ext = list(dict.fromkeys(ext))
        if last and not budget.unbounded:  # full architectures (when nothing else stays open) meet the budget
            ext = [g for g in ext if OPEN in g or space.within(space.from_genes(g), budget)]
        if not ext:
            raise ValueError("beam search: no extension of the beams meets the budget")
        scores = [float(s) for s in score(ext)]
        ranked = sorted(zip(ext, scores), key=lambda t: -t[1])  # stable: the first extension wins ties
        beams = ranked[: cfg.k]
        if on_step:
            on_step(step, beams)
        if last:
            for g, s in ranked:
                if OPEN not in g:
                    arch = space.from_genes(g)
                    madds, params = space.cost(arch)
                    finals[arch] = Candidate(arch, madds, params, s)
    if not finals:  # genes outside `decisions` stayed open: the best partial is the result's shape
        return []
    return sorted(finals.values(), key=lambda c: (-c.score, c.madds))
