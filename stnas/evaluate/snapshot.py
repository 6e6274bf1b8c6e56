"""The snapshot-ensemble evaluator of a single-path supernet (ST-NAS): an architecture's score is its
held-out top-1 accuracy averaged over K snapshots of the shared weights, each after BatchNorm is
recalibrated for that architecture (Guo et al., ECCV 2020; the recalibration is SPOS's).
Architectures scored together share the computation of the stages they have in common
(:mod:`stnas.evaluate.prefix`); the accuracies are those of scoring each alone.

One call scores many architectures (``score_many``), snapshot-major so each snapshot is loaded once; a
distributed run splits the architectures over the ranks and gathers the table.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from stnas.evaluate.prefix import PrefixScorer
from stnas.runtime import autocast, progress, rank_world

Batch = tuple[torch.Tensor, torch.Tensor]


class SnapshotEvaluator:
    """Scores architectures: mean held-out top-1 accuracy over the snapshots, each with BN
    recalibrated for the architecture on ``recal_batches``. ``share=False`` runs every architecture on its
    own (the per-architecture way; the same accuracies)."""

    def __init__(self, net: nn.Module, snapshots: Sequence[dict[str, torch.Tensor]],
                 recal_batches: Sequence[torch.Tensor], eval_batches: Sequence[Batch], progress: bool = True,
                 amp: bool = False, share: bool = True):
        if not snapshots:
            raise ValueError("no snapshots: train the supernet past its burn-in first")
        self.net, self.snapshots = net, list(snapshots)
        self.recal_batches, self.eval_batches = list(recal_batches), list(eval_batches)
        self.progress, self.amp, self.share = progress, amp, share
        self.device = next(net.parameters()).device

    def score_snapshot(self, scorer: PrefixScorer, bar) -> list[float]:
        """The loaded snapshot's held-out accuracy of every architecture of ``scorer``."""
        tick = bar.update
        with autocast(self.device, self.amp):
            scorer.recalibrate(self.recal_batches, tick)
            correct, seen = scorer.correct(self.eval_batches, tick)
        return [c / max(seen, 1) for c in correct.tolist()]

    def score_many(self, archs: Sequence, desc: str = "scoring") -> list[list[float]]:
        """Per-snapshot accuracies of every architecture (snapshot-major to load each snapshot once; the
        architectures of a snapshot share the stages they have in common: :mod:`stnas.evaluate.prefix`).
        Under ``torch.distributed`` each rank scores every world-th architecture and all ranks gather
        the results, so every rank returns the whole table."""
        rank, world = rank_world()
        out = [[0.0] * len(self.snapshots) for _ in archs]
        mine = list(range(rank, len(archs), world))
        saved = {k: v.clone() for k, v in self.net.state_dict().items()}
        scorer = PrefixScorer(self.net, [archs[a] for a in mine], share=self.share)
        per_snapshot = len(self.recal_batches) + len(self.eval_batches)
        bar = progress(per_snapshot * len(self.snapshots) if mine else 0, 0, desc, self.progress)
        try:
            for k, snap in enumerate(self.snapshots):
                if not mine:
                    break
                self.net.load_state_dict(snap)
                for a, acc in zip(mine, self.score_snapshot(scorer, bar)):
                    out[a][k] = acc
        finally:
            bar.close()
            self.net.load_state_dict(saved)
        if world > 1:
            parts = [None] * world
            torch.distributed.all_gather_object(parts, {a: out[a] for a in mine})
            for part in parts:
                for a, accs in part.items():
                    out[a] = accs
        return out
