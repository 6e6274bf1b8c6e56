"""A single-path supernet's forward as a chain of stages, so that architectures that share a prefix of
choices can share its computation.

``net.stages(arch)`` lists the stages ``forward(x, arch)`` runs, in order; ``run_stages`` is that
forward. A stage maps a state (a tuple of tensors: ``(x,)`` first, the logits ``(y,)`` last) to the next
state. Its ``key`` names the choices of ``arch`` that this stage, and only this stage, depends on (the
op of an edge, the branches into a node; ``()`` for a fixed module such as the stem). The contract the
scorer relies on (:mod:`stnas.evaluate.prefix`): two architectures whose first ``s`` stage keys are
equal compute the same first ``s`` stages, by the same modules, so their states after stage ``s`` are
equal, and one of them can stand for both.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import NamedTuple

import torch
from torch import nn

State = tuple[torch.Tensor, ...]


class Stage(NamedTuple):
    key: Hashable  # the choices of the architecture this stage runs (given the stages before it)
    modules: tuple[nn.Module, ...]  # the modules it calls (BN recalibration recomputes their statistics)
    run: Callable[[State], State]


def run_stages(stages: Iterable[Stage], x: torch.Tensor) -> torch.Tensor:
    state: State = (x,)
    for stage in stages:
        state = stage.run(state)
    return state[0]


def stage_modules(stages: Iterable[Stage]) -> Iterator[nn.Module]:
    for stage in stages:
        yield from stage.modules
