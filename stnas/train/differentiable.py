"""The differentiable trainer: a mixed supernet (``net(x)``, ``net.arch_parameters()``,
``net.weight_parameters()``) trained by first-order bilevel descent, as DARTS (Liu et al., ICLR 2019,
first order) and DrNAS (Chen et al., ICLR 2021) do.

Each step takes a training batch and a search batch (the other half of the training split):

1. architecture step: the loss on the search batch (plus the method's penalty) -> Adam on the
   architecture parameters (DARTS/DrNAS: lr 3e-4, betas (0.5, 0.999), weight decay 1e-3, which is
   DrNAS's L2 regulariser);
2. weight step: the loss on the training batch -> gradient clipping -> SGD on the weights (lr 0.025,
   cosine to 0.001 over the epochs, momentum 0.9, weight decay 3e-4).

Where we differ from the papers' code, and why:
- the clip norm is taken over the weights only; DrNAS's code clips ``model.parameters()``, which also
  holds the architecture parameters, whose gradient from the weight loss is thrown away just after. The
  clip then depends on a gradient nobody applies; we leave it out.
- the search batch: DrNAS's code draws a random batch of the search half on every step (a new iterator
  each time); ours walks a shuffled pass of the search half in step with the training half, seeded by the
  epoch, so that a resumed run sees the same batches.
- the learning rate is set per epoch from the cosine formula (as ``CosineAnnealingLR`` stepped once per
  epoch), so it needs no scheduler state in the checkpoint.

Hooks give the methods their parts: a penalty (``penalty(net) -> tensor``, DrNAS's KL term), an
``arch_from_epoch`` (progressive DrNAS starts the architecture steps late) and any epoch hook (the
per-epoch outputs, a prune schedule). One-level optimisation (GOLD-NAS: both parameter sets on the same
batch, one backward) is ``bilevel=False``.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from stnas.runtime import autocast
from stnas.train.base import Hook, Trainer, to_device

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class DifferentiableConfig:
    epochs: int = 100
    lr: float = 0.025             # weights: SGD, cosine from lr to lr_min over the epochs
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0        # max norm of the weight gradient; 0: no clipping
    arch_lr: float = 3e-4         # architecture: Adam
    arch_betas: tuple[float, float] = (0.5, 0.999)
    arch_weight_decay: float = 1e-3
    arch_from_epoch: int = 0      # architecture steps start at this epoch (of each stage)
    bilevel: bool = True          # False: one-level (both on the training batch)
    stages: tuple[int, ...] = ()  # epochs per stage (progressive search); empty: one stage of `epochs`
    seed: int = 0

    def __post_init__(self):
        self.arch_betas = tuple(self.arch_betas)
        self.stages = tuple(self.stages)
        if self.stages:
            if min(self.stages) < 1:
                raise ValueError(f"stages: every stage needs >= 1 epoch, got {self.stages}")
            self.epochs = sum(self.stages)
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        for name in ("lr", "arch_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.lr_min <= self.lr:
            raise ValueError(f"lr_min must be in [0, lr], got {self.lr_min}")
        for name in ("weight_decay", "arch_weight_decay", "grad_clip", "arch_from_epoch"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def stage_of(self, epoch: int) -> tuple[int, int, int]:
        """(stage, first epoch of the stage, epochs of the stage) of ``epoch``."""
        start = 0
        for s, n in enumerate(self.stages or (self.epochs,)):
            if epoch < start + n:
                return s, start, n
            start += n
        return len(self.stages or (self.epochs,)) - 1, start - n, n

    def lr_at(self, epoch: int) -> float:
        """The weights' learning rate during ``epoch``: cosine annealing from lr to lr_min over each
        stage, stepped per epoch (as ``CosineAnnealingLR`` stepped once an epoch)."""
        _, start, n = self.stage_of(epoch)
        return self.lr_min + (self.lr - self.lr_min) * (1 + math.cos(math.pi * (epoch - start) / n)) / 2

    def arch_active(self, epoch: int) -> bool:
        """Whether ``epoch`` takes architecture steps (from ``arch_from_epoch`` of its stage on)."""
        _, start, _ = self.stage_of(epoch)
        return epoch - start >= self.arch_from_epoch


def weight_optimizer(net: nn.Module, cfg: DifferentiableConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(net.weight_parameters(), lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


def arch_optimizer(net: nn.Module, cfg: DifferentiableConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(net.arch_parameters(), lr=cfg.arch_lr, betas=cfg.arch_betas,
                            weight_decay=cfg.arch_weight_decay)


def _params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


@contextlib.contextmanager
def _frozen(params: list[torch.Tensor]):
    """``params`` do not require grad inside: the step's forward records no graph for them, so its
    backward neither computes their gradients nor the work only they need (a convolution's weight
    gradient; the gradient of a merged TopoNAS kernel with respect to its ops' kernels). Restored on exit,
    also on an exception."""
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


class DifferentiableTrainer(Trainer):
    """Trains a mixed supernet; a batch is ``((x, y), (x_search, y_search))``.

    ``penalty(net)``: added to the architecture loss (None: none). ``settings`` default to the config;
    a method passes its whole config so that a resume with other method settings is refused."""

    def __init__(self, net: nn.Module, train_epoch: Callable[[int], Iterable], steps_per_epoch: int,
                 cfg: DifferentiableConfig, *, penalty: Callable[[nn.Module], torch.Tensor] | None = None,
                 settings: dict | None = None, identity: dict | None = None, hooks: Sequence[Hook] = (),
                 checkpoint=None, checkpoint_every: int = 1000, device=None, progress: bool = True,
                 channels_last: bool = False, amp: bool = False, log_every: int = 20, compile: bool = False):
        super().__init__(net, train_epoch, steps_per_epoch, cfg.epochs * steps_per_epoch,
                         settings=settings if settings is not None else asdict(cfg), identity=identity,
                         resumable=("checkpoint_every",), checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                         device=device, progress=progress, log_every=log_every, hooks=hooks, desc="search",
                         checkpoint_each_epoch=True)
        self.cfg, self.penalty = cfg, penalty
        self.channels_last, self.amp = channels_last, amp
        self.loss_fn = nn.CrossEntropyLoss()
        # The mixed supernet is a static graph for a given mask: torch.compile (or CUDA graphs through
        # it) removes the launch overhead of its many small ops on a GPU. A prune recompiles once.
        self.model = torch.compile(net) if compile else net
        self.reset_optimizers()

    def reset_optimizers(self) -> None:
        """Fresh optimisers over the net's current parameters (after a prune schedule reshapes it)."""
        self.w_optimizer = weight_optimizer(self.net, self.cfg)
        self.a_optimizer = arch_optimizer(self.net, self.cfg)

    @property
    def epoch(self) -> int:
        return self.step // self.steps_per_epoch

    def extra_state(self) -> dict:
        return {"w_optimizer": self.w_optimizer.state_dict(), "a_optimizer": self.a_optimizer.state_dict()}

    def load_extra_state(self, data: dict) -> None:
        self._optimizer_states = (data["w_optimizer"], data["a_optimizer"])

    def resume(self) -> bool:
        done = super().resume()  # hooks first restore the net's shape (pruned, widened), then the weights
        if done:
            self.reset_optimizers()
            self.w_optimizer.load_state_dict(self._optimizer_states[0])
            self.a_optimizer.load_state_dict(self._optimizer_states[1])
        return done

    def _batch(self, batch: Batch) -> Batch:
        x, y = batch
        return to_device(x, self.device, self.channels_last), y.to(self.device, non_blocking=True)

    def arch_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.a_optimizer.zero_grad(set_to_none=True)
        # Gradients of the architecture only: the weights' would be discarded by the weight step, and
        # the convolutions' weight gradients are a third of their backward. The weights are frozen
        # rather than left out with backward(inputs=...): a custom autograd Function sees which of its
        # inputs require grad, not which ones a backward asks for.
        with _frozen(_params(self.w_optimizer)):
            with autocast(self.device, self.amp):
                loss = self.loss_fn(self.model(x), y)
            if self.penalty is not None:
                loss = loss + self.penalty(self.net)
            loss.backward(inputs=_params(self.a_optimizer))
        self.a_optimizer.step()
        return loss.detach()

    def weight_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        for group in self.w_optimizer.param_groups:
            group["lr"] = self.cfg.lr_at(self.epoch)
        self.w_optimizer.zero_grad(set_to_none=True)
        with _frozen(_params(self.a_optimizer)):  # the architecture's gradients are the arch step's
            with autocast(self.device, self.amp):
                loss = self.loss_fn(self.model(x), y)
            loss.backward(inputs=_params(self.w_optimizer))
        if self.cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.net.weight_parameters(), self.cfg.grad_clip)
        self.w_optimizer.step()
        return loss.detach()

    def one_level_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Both parameter sets on one batch, one backward (one-level optimisation)."""
        for group in self.w_optimizer.param_groups:
            group["lr"] = self.cfg.lr_at(self.epoch)
        train_arch = self.cfg.arch_active(self.epoch)
        self.w_optimizer.zero_grad(set_to_none=True)
        self.a_optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.amp):
            loss = self.loss_fn(self.model(x), y)
        if self.penalty is not None and train_arch:
            loss = loss + self.penalty(self.net)
        loss.backward()
        if self.cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.net.weight_parameters(), self.cfg.grad_clip)
        self.w_optimizer.step()
        if train_arch:
            self.a_optimizer.step()
        return loss.detach()

    def train_step(self, batch) -> torch.Tensor:
        train, search = batch
        x, y = self._batch(train)
        if not self.cfg.bilevel:
            return self.one_level_step(x, y)
        if self.cfg.arch_active(self.epoch):
            self.arch_step(*self._batch(search))
        return self.weight_step(x, y)
