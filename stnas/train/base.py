"""What every supernet trainer shares: the step loop over epochs with exact mid-epoch resume,
checkpoints (atomic, written on Ctrl-C/SIGTERM too), per-step and per-epoch hooks, the progress bar and
the loss read back only every ``log_every`` steps.

A trainer subclass says what one step is (:meth:`Trainer.train_step`) and what its state holds beyond
the model (:meth:`Trainer.extra_state`); a hook (ST-NAS's snapshots, DrNAS's per-epoch outputs, a prune
schedule) says what happens after a step or an epoch and what of it must survive a resume.

Exact resume rests on three rules: the batches of epoch ``e`` are a function of ``e`` alone (the
loaders are seeded with (seed, e)); reading them never draws from torch's global generator (a
DataLoader without a generator of its own draws its workers' seed from it when an epoch starts, which a
run resumed mid-epoch would do at another step); and the random state after a step (torch's CPU
generator, and the device's on CUDA) is in the checkpoint. A resumed run therefore takes the same steps
as an uninterrupted one, bit for bit.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from stnas.io import CheckpointError, load_checkpoint, save_checkpoint
from stnas.runtime import barrier, interrupt_guard, progress, rank_world

log = logging.getLogger("stnas.train")


class Hook:
    """Something that happens during training, with its own state in the checkpoint.

    ``name`` is the checkpoint key of :meth:`state` (None: nothing to save)."""

    name: str | None = None

    def after_step(self, trainer: "Trainer") -> None:
        pass

    def after_epoch(self, trainer: "Trainer", epoch: int) -> None:
        """After the last step of ``epoch`` (0-based). A run killed after this but before its checkpoint
        is written redoes the epoch's last steps on resume and calls this again: it must be idempotent."""

    def state(self):
        return None

    def load_state(self, state, trainer: "Trainer") -> None:
        pass


class Trainer:
    """The loop. Args:

    net: the module trained (its ``state_dict`` is the checkpoint's ``model``).
    train_epoch: ``train_epoch(epoch)`` gives that epoch's batches, in an order fixed by the epoch alone,
        at least ``steps_per_epoch`` of them. A batch is whatever :meth:`train_step` takes.
    steps_per_epoch, total_steps: the schedule (the same on every rank of a distributed run).
    settings: the run's settings as a dict (the checkpoint's ``config``); a resume with settings that
        differ outside ``resumable`` is refused.
    identity: what the run is about (e.g. ``{"space": space.to_dict()}``); must match on resume.
    checkpoint: path of the checkpoint file (None: no checkpoints); rank 0 writes it, every
        ``checkpoint_every`` steps (and after every epoch with ``checkpoint_each_epoch``), on interrupt
        and at the end.
    """

    kind = "supernet"

    def __init__(self, net: nn.Module, train_epoch: Callable[[int], Iterable], steps_per_epoch: int, total_steps: int,
                 *, settings: dict, identity: dict | None = None, resumable: Sequence[str] = (),
                 checkpoint=None, checkpoint_every: int = 100, device=None, progress: bool = True,
                 log_every: int = 20, hooks: Sequence[Hook] = (), desc: str = "supernet",
                 checkpoint_each_epoch: bool = False):
        if steps_per_epoch < 1:
            raise ValueError("the training split gives no full batch: lower the batch size or add images")
        self.net, self.train_epoch = net, train_epoch
        self.steps_per_epoch, self.total_steps = steps_per_epoch, total_steps
        self.settings, self.identity, self.resumable = dict(settings), dict(identity or {}), frozenset(resumable)
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.checkpoint_every = max(1, checkpoint_every)
        self.device = torch.device(device) if device is not None else next(net.parameters()).device
        self.rank, self.world = rank_world()
        self.progress, self.log_every, self.desc = progress, max(1, log_every), desc
        self.hooks = list(hooks)
        self.checkpoint_each_epoch = checkpoint_each_epoch
        self.step = 0
        self.losses: list[list] = []  # [step, mean loss since the previous report]
        self._loss_sum = torch.zeros((), device=self.device)
        self._loss_steps = 0

    # ---------------------------------------------------------------- what a trainer provides

    def train_step(self, batch) -> torch.Tensor:
        """One step on ``batch``; returns the (detached) loss to report. Queues work on the device and
        returns without waiting for it."""
        raise NotImplementedError

    def extra_state(self) -> dict:
        """Checkpoint entries beyond the model (optimisers, schedulers)."""
        return {}

    def load_extra_state(self, data: dict) -> None:
        pass

    def hook(self, name: str) -> Hook:
        for h in self.hooks:
            if h.name == name:
                return h
        raise KeyError(f"no hook named {name!r}")

    # ---------------------------------------------------------------- state

    def state(self) -> dict:
        data = {"config": self.settings, **self.identity, "step": self.step, "model": self.net.state_dict(),
                **self.extra_state(), "losses": self.losses, "torch_rng": torch.get_rng_state(),
                # The loss summed since the last report: a resumed run reports what an uninterrupted one does.
                "pending_loss": [float(self._loss_sum), self._loss_steps]}
        if self.device.type == "cuda":  # dropout and DrNAS's Dirichlet samples draw from the device's generator
            data["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        for h in self.hooks:
            if h.name is not None:
                data[h.name] = h.state()
        return data

    def save(self) -> None:
        if self.checkpoint is not None:
            save_checkpoint(self.checkpoint, self.state(), kind=self.kind)
        barrier()

    def resume(self) -> bool:
        """Continue from the checkpoint if there is one; False when there is none to resume."""
        if self.checkpoint is None or not self.checkpoint.exists():
            return False
        data = load_checkpoint(self.checkpoint, kind=self.kind)
        saved = data.get("config", {})
        # Settings that change the result must match; how often checkpoints are written does not.
        diff = {k: (v, self.settings.get(k)) for k, v in saved.items()
                if k not in self.resumable and v != self.settings.get(k)}
        diff.update({k: (None, v) for k, v in self.settings.items() if k not in saved and k not in self.resumable})
        if diff:
            raise CheckpointError(f"checkpoint {self.checkpoint} was written with other settings "
                                  f"(saved, now): {diff}; resume with the same options or use another --out")
        for key, value in self.identity.items():
            if data.get(key) != value:
                what = value.get("name") if isinstance(value, dict) else value
                have = data.get(key, {}).get("name") if isinstance(data.get(key), dict) else data.get(key)
                raise CheckpointError(f"checkpoint {self.checkpoint} is of {key} {have!r}, not of {what!r}")
        # Hooks first: a schedule hook may reshape the net (a pruned or widened supernet) before its
        # weights load.
        for h in self.hooks:
            if h.name is not None:
                h.load_state(data[h.name], self)
        self.load_extra_state(data)
        self.net.load_state_dict(data["model"])
        self.step, self.losses = data["step"], data["losses"]
        pending, self._loss_steps = data.get("pending_loss", [0.0, 0])
        self._loss_sum.fill_(pending)
        torch.set_rng_state(data["torch_rng"])
        if self.device.type == "cuda" and "cuda_rng" in data:
            torch.cuda.set_rng_state(data["cuda_rng"], self.device)
        log.info("resumed from %s at step %d of %d", self.checkpoint, self.step, self.total_steps)
        return True

    # ---------------------------------------------------------------- the loop

    def train(self, stop_at: int | None = None) -> "Trainer":
        """Run to the end of the schedule (or to ``stop_at`` steps); Ctrl-C or SIGTERM writes a
        checkpoint, then raises KeyboardInterrupt."""
        total = self.total_steps
        end = total if stop_at is None else min(stop_at, total)
        bar = progress(total, self.step, self.desc, self.progress)
        self.net.train()
        try:
            with interrupt_guard():
                while self.step < end:
                    epoch, skip = divmod(self.step, self.steps_per_epoch)
                    given = 0
                    for i, batch in enumerate(self.train_epoch(epoch)):
                        given = i + 1
                        if i < skip:
                            continue  # resuming mid-epoch: the same batches, in the same order
                        if i >= self.steps_per_epoch or self.step >= end:
                            break
                        self._accumulate(self.train_step(batch))
                        self.step += 1
                        bar.update(1)
                        epoch_done = self.step % self.steps_per_epoch == 0
                        if self.step % self.log_every == 0 or self.step == total or epoch_done:
                            self._report(bar)
                        for h in self.hooks:
                            h.after_step(self)
                        if epoch_done:
                            for h in self.hooks:
                                h.after_epoch(self, epoch)
                        if self.step % self.checkpoint_every == 0 or self.step == total or (epoch_done and self.checkpoint_each_epoch):
                            self.save()
                    else:
                        if given < self.steps_per_epoch:  # found at the end of the short epoch
                            raise RuntimeError(f"epoch {epoch} gave {given} batches, expected {self.steps_per_epoch}: "
                                               "every epoch must give the same number of batches")
        except KeyboardInterrupt:
            bar.close()
            self.save()
            log.warning("interrupted at step %d of %d; checkpoint written to %s", self.step, total, self.checkpoint)
            raise
        finally:
            bar.close()
        if self.step == end and end != total:
            self.save()
        return self

    def _accumulate(self, loss: torch.Tensor | None) -> None:
        if loss is not None:
            self._loss_sum += loss.detach().float()
            self._loss_steps += 1

    def _report(self, bar) -> None:
        """Read the accumulated loss back (the only host synchronisation of training)."""
        if not self._loss_steps:
            return
        mean = float(self._loss_sum) / self._loss_steps
        self._loss_sum.zero_()
        self._loss_steps = 0
        if not math.isfinite(mean):
            raise FloatingPointError(f"the training loss is {mean} before step {self.step}: lower the learning "
                                     f"rate (--lr) or the noise")
        self.losses.append([self.step, mean])
        bar.set_postfix(loss=f"{mean:.3f}", refresh=False)


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x
