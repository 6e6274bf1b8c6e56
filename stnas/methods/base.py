"""The small interface every search method implements, and the registry ``stnas search --method``
reads (NASLib's one-interface-per-optimizer habit: a method says its options and runs; the CLI holds
no method's flags).

A method is one file: its config, its defaults, its CLI arguments and its ``run``, built on the shared
parts below it (spaces, supernets, trainers, evaluators, strategies). The options every method shares
(space, data, device, precision, seed, output folder, resume, progress) are read once by the CLI into a
:class:`RunContext`.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch

_METHODS: dict[str, type["Method"]] = {}


@dataclass
class RunContext:
    """What the CLI gives every method."""

    space: str | None        # --space as given (None: the method's default for the data)
    data: Path | None        # --data as given (None: the built-in demo dataset)
    out: Path
    resume: bool
    device: torch.device
    amp: bool | None         # --precision: True bf16, False fp32, None by device
    seed: int
    batch_size: int | None
    loader: str
    threads: int | None
    progress: bool
    rank: int = 0
    world: int = 1


class Method:
    """``name`` (the ``--method`` value), ``summary`` (one line for ``--help``); :meth:`add_arguments`
    adds the method's own options to an argument group, :meth:`run` runs a search and returns a summary
    dict (also written to ``out/summary.json``)."""

    name: str = ""
    summary: str = ""

    def add_arguments(self, group: argparse._ArgumentGroup) -> None:
        pass

    def check(self, args: argparse.Namespace, ctx: RunContext) -> None:
        """Reject bad option values before anything is written or trained (one-line errors)."""

    def run(self, args: argparse.Namespace, ctx: RunContext) -> dict:
        raise NotImplementedError

    def report(self, summary: dict, ctx: RunContext) -> None:
        """What the command prints at the end (rank 0), before the list of what is in ``--out``."""


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``stnas search --method <cls.name>`` run ``cls``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__}: a method needs a name")
    _METHODS[cls.name] = cls
    return cls


def method_names() -> list[str]:
    return sorted(_METHODS)


def get_method(name: str) -> Method:
    if name not in _METHODS:
        raise ValueError(f"--method {name!r}: no such method (known: {', '.join(method_names())})")
    return _METHODS[name]()


# ---------------------------------------------------------------------- argument types of method options

def _bounded(kind, noun: str, ok, bound: str):
    """An argparse type: ``kind(text)`` with ``ok(value)``, else argparse's one-line error."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value
    parse.__name__ = kind.__name__
    return parse


def positive(kind):
    """An argparse type: a ``kind`` (int or float) > 0."""
    return _bounded(kind, f"a {kind.__name__}", lambda v: v > 0, "> 0")


non_negative = _bounded(float, "a number", lambda v: not v < 0, ">= 0")   # a float >= 0
non_negative_int = _bounded(int, "an int", lambda v: not v < 0, ">= 0")   # an int >= 0 (steps, generations)


def count(text) -> float:
    """An argparse type: a count > 0 such as '320M', '3.2e8' or '0.32G' (budgets)."""
    from stnas.spaces.budget import parse_count

    try:
        value = parse_count(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    if value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite count, got {text}")
    return value


# ---------------------------------------------------------------------- options every differentiable method shares

def add_checkpoint_every_argument(g, default: int, each_epoch: bool = False) -> None:
    """``--checkpoint-every``: steps between checkpoints, the same option on every method (those whose
    trainer also checkpoints at each epoch's end say so)."""
    also = ", besides every epoch's end" if each_epoch else ""
    g.add_argument("--checkpoint-every", type=positive(int), default=default,
                   help=f"steps between checkpoints{also} (default: {default})")


def add_simplify_argument(g) -> None:
    """``--simplify``: TopoNAS's simplification of the mixed edges (:mod:`stnas.supernet.toponas`), the same
    switch on every differentiable method (DARTS, DrNAS, GOLD-NAS)."""
    g.add_argument("--simplify", action="store_true",
                   help="TopoNAS (arXiv 2408.01311, our design): one ReLU per source node, each edge's linear "
                        "paths merged into one convolution with one BN and kernel normalisation; derivation "
                        "and table lookup unchanged (see docs/toponas.md)")
