"""Evolutionary search under a budget (the SPOS / ST-NAS recipe: keep the best, mutate and cross them
over, only ever admit candidates that meet the budget), and the Pareto front of its results.

Population size, parents, mutation probability and crossover share are ours to choose (the ST-NAS
paper does not give them); the defaults are SPOS's proportions scaled down.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from stnas.spaces import Budget, Space


@dataclass
class EvolutionConfig:
    population: int = 16
    generations: int = 5
    parents: int = 8
    mutation_prob: float = 0.1
    crossover_share: float = 0.5
    seed: int = 0
    max_tries: int = 1000  # draws per child before giving up on a new one

    def __post_init__(self):
        if self.population < 2 or self.parents < 1 or self.parents > self.population:
            raise ValueError(f"evolution: need population >= 2 and 1 <= parents <= population, got "
                             f"population {self.population}, parents {self.parents}")
        if self.generations < 0:
            raise ValueError(f"evolution: generations must be >= 0, got {self.generations}")
        if not 0 <= self.crossover_share <= 1 or not 0 < self.mutation_prob <= 1:
            raise ValueError("evolution: crossover_share must be in [0, 1] and mutation_prob in (0, 1]")


@dataclass(frozen=True)
class Candidate:
    arch: object  # an architecture of the space (Arch, CellArch, ...)
    madds: int
    params: int
    score: float


def evolve(space: Space, score: Callable[[Sequence], Sequence[float]], cfg: EvolutionConfig,
           budget: Budget | None = None,
           on_generation: Callable[[int, list[Candidate]], None] | None = None) -> list[Candidate]:
    """Every candidate evaluated, best first. ``score`` maps a list of architectures to their scores
    (higher is better); it is called once per generation with the new architectures only. The strategy
    sees the space and the scorer, never a model: any evaluator (snapshots, a benchmark table) serves."""
    budget = budget or Budget()
    budget.check(space)
    rng = random.Random(f"evolution:{cfg.seed}")
    seen: dict = {}

    def admit(archs: list) -> list[Candidate]:
        scores = score(archs)
        for arch, s in zip(archs, scores):
            madds, params = space.cost(arch)
            seen[arch] = Candidate(arch, madds, params, float(s))
        return [seen[a] for a in archs]

    def fresh(make: Callable[[], object], taken: set):
        for _ in range(cfg.max_tries):
            arch = make()
            if arch not in seen and arch not in taken and space.within(arch, budget):
                return arch
        return None

    first: list = []
    for _ in range(cfg.population):
        arch = fresh(lambda: space.sample(rng, budget), set(first))
        if arch is None:
            break  # a small space may have fewer architectures than the population
        first.append(arch)
    def rank(c: Candidate):  # best score first; between equal scores the cheaper (as best_under picks)
        return -c.score, c.madds

    population = sorted(admit(first), key=rank)
    if on_generation:
        on_generation(0, population)
    for gen in range(1, cfg.generations + 1):
        parents = population[: cfg.parents]
        n_cross = round(cfg.population * cfg.crossover_share) if len(parents) > 1 else 0
        children: list = []
        for k in range(cfg.population):
            if k < n_cross:
                make = lambda: space.crossover(*(c.arch for c in rng.sample(parents, 2)), rng)  # noqa: E731
            else:
                make = lambda: space.mutate(rng.choice(parents).arch, rng, cfg.mutation_prob)  # noqa: E731
            child = fresh(make, set(children))
            if child is not None:
                children.append(child)
        if not children:
            break  # the neighbourhood of the parents is exhausted
        population = sorted(population + admit(children), key=rank)[: cfg.population]
        if on_generation:
            on_generation(gen, population)
    return sorted(seen.values(), key=rank)


def pareto_front(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The candidates no other beats on both MAdds (lower) and score (higher), by increasing MAdds."""
    front: list[Candidate] = []
    for c in sorted(candidates, key=lambda c: (c.madds, -c.score)):
        if not front or c.score > front[-1].score:
            front.append(c)
    return front


def best_under(candidates: Sequence[Candidate], budget: Budget | None = None) -> Candidate | None:
    """The best-scored candidate that meets ``budget`` (between equal scores the cheaper)."""
    budget = budget or Budget()
    ok = [c for c in candidates if budget.admits((c.madds, c.params))]
    return max(ok, key=lambda c: (c.score, -c.madds)) if ok else None
