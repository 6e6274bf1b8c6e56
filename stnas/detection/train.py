"""Single-path training of a detector whose backbone is a supernet: the shared single-path trainer
(:class:`~stnas.train.single_path.SinglePathTrainer`: loop, checkpoints, exact resume, progress) with
a detection step (the detector's own losses, summed) in place of the classification one."""
from __future__ import annotations

import torch

from stnas.detection.model import set_arch
from stnas.runtime import autocast
from stnas.train.single_path import SinglePathTrainer


class DetectionTrainer(SinglePathTrainer):
    """A batch is (list of images, list of targets); the step's architecture goes into the backbone."""

    def train_step(self, batch) -> torch.Tensor:
        xs, ts = batch
        set_arch(self.net, self.sampler(self.step))
        xs = [x.to(self.device, non_blocking=True) for x in xs]
        ts = [{k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in ts]
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.amp):
            losses = self.model(xs, ts)
        loss = sum(losses.values())
        loss.backward()
        self.optimizer.step()
        return loss.detach()
