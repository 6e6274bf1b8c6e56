"""The single-path trainer: one architecture per step, drawn by a sampler, trained with an injected
optimiser (SPOS's uniform sampling, Guo et al. 2020; ST-NAS's SGLD sampling of the shared weights).

What a method adds comes in as parts: ``sampler(step) -> arch`` (a function of the step alone, so a
resumed run and every rank of a distributed one draw the same), the optimiser, and hooks (ST-NAS's
snapshots are one, :class:`stnas.methods.stnas.Snapshots`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from stnas.runtime import autocast
from stnas.train.base import Hook, Trainer, to_device

Batch = tuple[torch.Tensor, torch.Tensor]


class SinglePathTrainer(Trainer):
    """Trains ``net`` (a single-path supernet, ``net(x, arch)``) on ``arch = sampler(step)``.

    Under ``torch.distributed`` with more than one process the supernet is wrapped in
    DistributedDataParallel. Every rank trains the same architecture at each step (the sampler is a
    function of the step), so inactive choices are unused on every rank alike; an optimiser whose noise
    is keyed by (seed, step, parameter) keeps the replicas identical without broadcasting weights.

    ``amp``: bf16 autocast for the forward pass (fp32 master weights); ``channels_last``: feed NHWC.
    """

    def __init__(self, net: nn.Module, train_epoch: Callable[[int], Iterable[Batch]], steps_per_epoch: int,
                 total_steps: int, optimizer: torch.optim.Optimizer, sampler: Callable[[int], object], *,
                 settings: dict, identity: dict | None = None, resumable: Sequence[str] = (),
                 loss_fn: nn.Module | None = None, hooks: Sequence[Hook] = (), checkpoint=None,
                 checkpoint_every: int = 100, device=None, progress: bool = True, channels_last: bool = False,
                 amp: bool = False, log_every: int = 20):
        super().__init__(net, train_epoch, steps_per_epoch, total_steps, settings=settings, identity=identity,
                         resumable=resumable, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                         device=device, progress=progress, log_every=log_every, hooks=hooks)
        self.optimizer, self.sampler = optimizer, sampler
        self.loss_fn = loss_fn or nn.CrossEntropyLoss()
        self.channels_last, self.amp = channels_last, amp
        self.model = net
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            # Inactive choices are unused on every rank alike; DDP leaves their gradients None.
            self.model = DistributedDataParallel(net, device_ids=[self.device.index] if self.device.type == "cuda"
                                                 else None, find_unused_parameters=True)

    def extra_state(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_extra_state(self, data: dict) -> None:
        self.optimizer.load_state_dict(data["optimizer"])

    def train_step(self, batch: Batch) -> torch.Tensor:
        x, y = batch
        arch = self.sampler(self.step)
        x = to_device(x, self.device, self.channels_last)
        y = y.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)  # inactive modules keep grad None: SGLD skips them
        with autocast(self.device, self.amp):
            loss = self.loss_fn(self.model(x, arch), y)
        loss.backward()
        self.optimizer.step()
        return loss.detach()
