"""Many architectures of a single-path supernet on the same fixed batches, with what they share computed
once: BN recalibration and held-out accuracy as a walk over the prefix tree of their stages.

Scoring an architecture (SPOS, Guo et al. 2020; ST-NAS) recalibrates its BatchNorm statistics on fixed
training batches, then runs the held-out set in eval mode. Written the usual way, every architecture
runs the whole network on every batch. But a supernet's forward is a chain of stages keyed by the
choices each makes (:mod:`stnas.supernet.stages`): architectures with equal first keys compute equal
first stages, on the recalibration batches (training-mode BN normalises by the batch's own statistics,
never by the running ones) and on the held-out batches (eval-mode BN then uses running statistics that
depend only on the stages before, which are equal). So the architectures become the paths of a prefix
tree, and each batch walks the tree depth-first: a tree node runs its stage once for every
architecture below it. The stem is always shared; in a chain space so is every leading block two
architectures have in common (evolution's children share most of theirs with each other).

A tree node holds the running statistics of its stage's BatchNorms for the architectures below it; the
walk attaches them to the modules as their buffers before the stage runs (no copy), so the statistics
of every node are those ``recalibrate_bn`` would give each architecture, bit for bit: the same updates
(momentum None, the exact mean over the batches) in the same order. Its ``num_batches_tracked`` lives on
the CPU, so the cumulative average's ``1 / n`` never waits for the device.

Walking batch by batch keeps one batch's activations per depth alive, never the whole set's.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from torch import nn

from stnas.supernet.stages import Stage, State

BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def net_stages(net: nn.Module, arch) -> list[Stage]:
    """``net.stages(arch)``; a single-path net without stages is one stage keyed by the architecture (it
    shares nothing, and still scores)."""
    if hasattr(net, "stages"):
        return net.stages(arch)
    modules = tuple(net.active_modules(arch))
    return [Stage(arch, modules, lambda state: (net(state[0], arch),))]


class _Node:
    __slots__ = ("stage", "bns", "stats", "children", "archs")

    def __init__(self, stage: Stage | None):
        self.stage = stage
        self.bns = [] if stage is None else [m for mod in stage.modules for m in mod.modules()
                                              if isinstance(m, nn.BatchNorm2d)]
        self.stats: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.children: dict = {}
        self.archs: list[int] = []  # the architectures whose last stage this is

    def attach(self) -> None:
        for bn, (mean, var, n) in zip(self.bns, self.stats):
            buffers = bn._buffers
            buffers["running_mean"], buffers["running_var"], buffers["num_batches_tracked"] = mean, var, n


class PrefixScorer:
    """BN recalibration and eval-mode forward of ``archs`` on ``net``, sharing common stage prefixes.

    ``share=False`` gives every architecture its own path (the per-architecture way, for comparison).
    """

    def __init__(self, net: nn.Module, archs: Sequence, share: bool = True):
        self.net, self.num_archs = net, len(archs)
        self.root = _Node(None)
        self.nodes: list[_Node] = []
        for a, arch in enumerate(archs):
            node = self.root
            for s, stage in enumerate(net_stages(net, arch)):
                key = stage.key if share else (a, s)
                child = node.children.get(key)
                if child is None:
                    child = node.children[key] = _Node(stage)
                    self.nodes.append(child)
                node = child
            node.archs.append(a)
        self.bns = list({id(bn): bn for node in self.nodes for bn in node.bns}.values())  # each module once
        self.stage_runs = 0  # stages run so far (what sharing saves is visible in tests and benchmarks)

    def _reset_stats(self) -> None:
        for node in self.nodes:
            node.stats = [(torch.zeros_like(bn.running_mean), torch.ones_like(bn.running_var),
                           torch.zeros((), dtype=torch.long)) for bn in node.bns]

    def _walk(self, node: _Node, state: State, at_leaf: Callable[[list[int], State], None] | None) -> None:
        for child in node.children.values():
            child.attach()
            out = child.stage.run(state)
            self.stage_runs += 1
            if child.archs and at_leaf is not None:
                at_leaf(child.archs, out)
            self._walk(child, out, at_leaf)

    @contextlib.contextmanager
    def _walking(self):
        """The net in eval mode with the walk's buffers attached as it goes; on exit the modules' own
        buffers, momenta and modes are put back."""
        own = [(bn, {k: bn._buffers[k] for k in BUFFERS}, bn.momentum) for bn in self.bns]
        was_training = self.net.training
        self.net.eval()
        try:
            yield
        finally:
            for bn, buffers, momentum in own:
                bn._buffers.update(buffers)
                bn.momentum = momentum
            self.net.train(was_training)

    @torch.no_grad()
    def recalibrate(self, batches, on_batch: Callable[[], None] | None = None) -> None:
        """Every architecture's BN statistics: the exact mean over ``batches`` (inputs), as
        :func:`stnas.supernet.recalibrate_bn` computes them. Dropout and the like stay in eval mode."""
        self._reset_stats()
        with self._walking():
            for bn in self.bns:
                bn.momentum = None  # cumulative moving average: the exact mean over the batches
                bn.train()
            for x in batches:
                self._walk(self.root, (x,), None)
                if on_batch is not None:
                    on_batch()

    @torch.no_grad()
    def forward(self, batches, at_leaf: Callable[[list[int], torch.Tensor, int], None],
                on_batch: Callable[[], None] | None = None) -> None:
        """Eval mode, the statistics of :meth:`recalibrate`: for every input batch ``i`` of ``batches``
        and every architecture path of the tree, ``at_leaf(archs, logits, i)`` (``archs``: the indices of
        the architectures the logits belong to, several when the same architecture was given twice)."""
        with self._walking():
            for i, x in enumerate(batches):
                self._walk(self.root, (x,), lambda archs, out: at_leaf(archs, out[0], i))
                if on_batch is not None:
                    on_batch()

    def correct(self, batches, on_batch: Callable[[], None] | None = None) -> tuple[torch.Tensor, int]:
        """Per architecture, the held-out images it classifies right over ``batches`` ((x, y) pairs), and
        the images seen."""
        batches = list(batches)
        device = next(self.net.parameters()).device
        counts = torch.zeros(self.num_archs, dtype=torch.long, device=device)  # on the device: one read-back

        def count(archs, logits, i):
            hits = (logits.argmax(1) == batches[i][1]).sum()
            for a in archs:
                counts[a] += hits
        self.forward((x for x, _ in batches), count, on_batch)
        return counts, sum(y.numel() for _, y in batches)
