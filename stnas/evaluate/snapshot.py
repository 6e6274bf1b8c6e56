"""The snapshot-ensemble evaluator of a single-path supernet (ST-NAS): an architecture's score is its
held-out top-1 accuracy averaged over K snapshots of the shared weights, each after BatchNorm is
recalibrated for that architecture (Guo et al., ECCV 2020; the recalibration is SPOS's).

One call scores many architectures (``score_many``), snapshot-major so each snapshot is loaded once; a
distributed run splits the architectures over the ranks and gathers the table.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from stnas.runtime import autocast, progress, rank_world
from stnas.supernet import recalibrate_bn

Batch = tuple[torch.Tensor, torch.Tensor]


class SnapshotEvaluator:
    """Scores architectures: mean held-out top-1 accuracy over the snapshots, each with BN
    recalibrated for the architecture on ``recal_batches``."""

    def __init__(self, net: nn.Module, snapshots: Sequence[dict[str, torch.Tensor]],
                 recal_batches: Sequence[torch.Tensor], eval_batches: Sequence[Batch], progress: bool = True,
                 amp: bool = False):
        if not snapshots:
            raise ValueError("no snapshots: train the supernet past its burn-in first")
        self.net, self.snapshots = net, list(snapshots)
        self.recal_batches, self.eval_batches = list(recal_batches), list(eval_batches)
        self.progress, self.amp = progress, amp
        self.device = next(net.parameters()).device

    @torch.no_grad()
    def accuracy(self, arch) -> float:
        self.net.eval()
        correct = torch.zeros((), dtype=torch.long, device=self.device)  # summed on the device: one read-back
        seen = 0
        with autocast(self.device, self.amp):
            for x, y in self.eval_batches:
                correct += (self.net(x, arch).argmax(1) == y).sum()
                seen += y.numel()
        return int(correct) / max(seen, 1)

    def recalibrate(self, arch) -> None:
        with autocast(self.device, self.amp):
            recalibrate_bn(self.net, arch, self.recal_batches)

    def score_many(self, archs: Sequence, desc: str = "scoring") -> list[list[float]]:
        """Per-snapshot accuracies of every architecture (snapshot-major to load each snapshot once).
        Under ``torch.distributed`` each rank scores every world-th architecture and all ranks gather
        the results, so every rank returns the whole table."""
        rank, world = rank_world()
        out = [[0.0] * len(self.snapshots) for _ in archs]
        mine = list(range(rank, len(archs), world))
        saved = {k: v.clone() for k, v in self.net.state_dict().items()}
        bar = progress(len(mine) * len(self.snapshots), 0, desc, self.progress)
        try:
            for k, snap in enumerate(self.snapshots):
                if not mine:
                    break
                self.net.load_state_dict(snap)
                for a in mine:
                    self.recalibrate(archs[a])
                    out[a][k] = self.accuracy(archs[a])
                    bar.update(1)
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
