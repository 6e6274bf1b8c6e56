"""The ST-NAS proxy: a supernet trained with one uniformly sampled architecture per step, its shared
weights sampled with SGLD; after burn-in, K snapshots of them; an architecture's score is its held-out
accuracy averaged over the snapshots, each with BatchNorm recalibrated for it.

What is the paper's and what is ours (Guo et al., "Powering One-shot Topological NAS with Stabilized
Share-parameter Proxy", ECCV 2020; its method section and code are not public):
- the paper's: uniform single-path sampling over the topology-augmented space, SGLD on the shared
  weights to stabilise the proxy, search under an MAdds budget;
- ours: the update ``p <- p - lr*(grad + wd*p) + sqrt(2*lr*T/N)*xi`` with heavy-ball momentum on the
  gradient term (``stnas.optim.SGLD``), a constant step size, K snapshots taken every
  ``snapshot_every`` steps after ``burn_in`` steps, the score as the mean top-1 accuracy over the K
  snapshots, each after an exact BN recalibration on a fixed set of training batches, and plain SGD
  (same schedule, same snapshots) as the baseline.

Everything a run needs to continue is in its checkpoint: weights, optimiser state (with the SGLD noise
counter), snapshots, the torch RNG; the architecture of step t is drawn from ``Random(f"{seed}:{t}")``
and the data of epoch e from the loader built with seed ``(seed, e)``, so a resumed run takes the same
steps as an uninterrupted one.
"""
from __future__ import annotations

import logging
import math
import random
import signal
from pathlib import Path
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields

import torch
from torch import nn

from stnas.optim import SGLD
from stnas.search.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from stnas.spaces import Arch
from stnas.supernet import ChainNet, recalibrate_bn

log = logging.getLogger("stnas.search")

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class ProxyConfig:
    optimizer: str = "sgld"       # "sgld" or "sgd" (the baseline: same schedule, no noise)
    burn_in: int = 400            # steps before the first snapshot
    snapshots: int = 4            # K
    snapshot_every: int = 50      # steps between snapshots
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 4e-5
    temperature: float = 1e-3     # T of the SGLD noise sqrt(2*lr*T/N)
    dataset_size: int = 0         # N; 0: the training split's size
    seed: int = 0
    checkpoint_every: int = 100   # steps; a checkpoint is also written on Ctrl-C and at the end
    label_smoothing: float = 0.0
    data: dict = field(default_factory=dict)  # the data settings of the run (batch size, ...), for resume checks

    def __post_init__(self):
        if self.optimizer not in ("sgld", "sgd"):
            raise ValueError(f"optimizer must be 'sgld' or 'sgd', got {self.optimizer!r}")
        for name in ("burn_in", "snapshot_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.snapshots < 1:
            raise ValueError(f"snapshots must be >= 1, got {self.snapshots}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")

    @property
    def steps(self) -> int:
        return self.burn_in + self.snapshots * self.snapshot_every

    def snapshot_steps(self) -> list[int]:
        """Steps after which a snapshot is taken (the last one is the final step)."""
        return [self.burn_in + (k + 1) * self.snapshot_every for k in range(self.snapshots)]

    @classmethod
    def from_dict(cls, data: dict) -> "ProxyConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def use_amp(device: torch.device, amp: bool | None = None) -> bool:
    """Whether training and scoring run in bf16 autocast: ``amp`` when given, else on CUDA devices only
    (bf16 convolutions are slow on most CPUs)."""
    return torch.device(device).type == "cuda" if amp is None else bool(amp)


def autocast(device: torch.device, enabled: bool):
    """The mixed precision of training, scoring and retraining: bf16 autocast on ``device`` when enabled
    (master weights stay fp32)."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=enabled)


def arch_of_step(space, seed: int, step: int) -> Arch:
    """The architecture trained at ``step``: uniform, and a function of (seed, step) alone."""
    return space.sample(random.Random(f"{seed}:{step}"))


def make_optimizer(net: nn.Module, cfg: ProxyConfig, dataset_size: int) -> torch.optim.Optimizer:
    params = [p for p in net.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return SGLD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                temperature=cfg.temperature, dataset_size=dataset_size, seed=cfg.seed)


_RESUMABLE_CHANGES = frozenset({"checkpoint_every"})


class SupernetTrainer:
    """Trains ``net`` and collects the snapshots; resumable from its checkpoint.

    Args:
        net: the supernet.
        train_epoch: ``train_epoch(epoch)`` gives the batches (images, labels) of that epoch, in an
            order that depends on the epoch alone; every epoch has at least ``steps_per_epoch`` batches.
        steps_per_epoch: batches per epoch (the same on every rank of a distributed run).
        dataset_size: training images (N of the SGLD noise unless the config sets it).
        cfg: the schedule.
        checkpoint: path of the checkpoint file (None: no checkpoints); rank 0 writes it.
        device: where the batches go.
        amp: bf16 autocast for the forward pass (fp32 master weights in the optimiser).
        channels_last: feed the images in channels_last memory format.
        log_every: steps between loss reports. The loss is accumulated on the device and read back
            only then, so a training step never waits for the GPU.

    Under ``torch.distributed`` with more than one process the supernet is wrapped in
    DistributedDataParallel. Every rank trains the same architecture at each step (it is a function of
    (seed, step)) and draws the same SGLD noise (keyed by seed, step and parameter index), so the
    replicas stay identical without broadcasting weights.
    """

    def __init__(self, net: ChainNet, train_epoch: Callable[[int], Iterable[Batch]], steps_per_epoch: int,
                 dataset_size: int, cfg: ProxyConfig, checkpoint=None, device=None, progress: bool = True,
                 channels_last: bool = False, amp: bool = False, log_every: int = 20):
        if steps_per_epoch < 1:
            raise ValueError("the training split gives no full batch: lower the batch size or add images")
        self.net, self.cfg = net, cfg
        self.train_epoch, self.steps_per_epoch = train_epoch, steps_per_epoch
        self.dataset_size = cfg.dataset_size or dataset_size
        self.checkpoint = checkpoint
        self.device = torch.device(device) if device is not None else next(net.parameters()).device
        self.rank, self.world = _rank_world()
        self.progress = progress and self.rank == 0
        self.channels_last, self.amp, self.log_every = channels_last, amp, max(1, log_every)
        self.model = net
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            # Inactive choices are unused on every rank alike; DDP leaves their gradients None.
            self.model = DistributedDataParallel(net, device_ids=[self.device.index] if self.device.type == "cuda"
                                                 else None, find_unused_parameters=True)
        self.optimizer = make_optimizer(net, cfg, self.dataset_size)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.step = 0
        self.snapshots: list[dict[str, torch.Tensor]] = []
        self.losses: list[list] = []  # [step, mean loss since the previous report]
        self._loss_sum = torch.zeros((), device=self.device)
        self._loss_steps = 0

    # ---------------------------------------------------------------- state

    def state(self) -> dict:
        return {"config": asdict(self.cfg), "space": self.net.space.to_dict(), "step": self.step,
                "model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "snapshots": self.snapshots, "losses": self.losses, "torch_rng": torch.get_rng_state()}

    def save(self) -> None:
        if self.checkpoint is not None and self.rank == 0:
            save_checkpoint(self.checkpoint, self.state(), kind="supernet")
        if self.world > 1:
            torch.distributed.barrier()

    def resume(self) -> bool:
        """Continue from the checkpoint if there is one; False when there is none to resume."""
        if self.checkpoint is None or not Path(self.checkpoint).exists():
            return False
        data = load_checkpoint(self.checkpoint, kind="supernet")
        saved = ProxyConfig.from_dict(data["config"])
        # Settings that change the result must match; how often checkpoints are written does not.
        diff = {k: (v, getattr(self.cfg, k)) for k, v in asdict(saved).items()
                if k not in _RESUMABLE_CHANGES and v != getattr(self.cfg, k)}
        if diff:
            raise CheckpointError(f"checkpoint {self.checkpoint} was written with other settings "
                                  f"(saved, now): {diff}; resume with the same options or use another --out")
        if data["space"] != self.net.space.to_dict():
            raise CheckpointError(f"checkpoint {self.checkpoint} is of space {data['space'].get('name')!r}, "
                                  f"not of {self.net.space.name!r}")
        self.net.load_state_dict(data["model"])
        self.optimizer.load_state_dict(data["optimizer"])
        self.step, self.snapshots, self.losses = data["step"], data["snapshots"], data["losses"]
        torch.set_rng_state(data["torch_rng"])
        log.info("resumed from %s at step %d of %d", self.checkpoint, self.step, self.cfg.steps)
        return True

    # ---------------------------------------------------------------- training

    def train(self, stop_at: int | None = None) -> list[dict[str, torch.Tensor]]:
        """Run to the end of the schedule (or to ``stop_at`` steps); Ctrl-C or SIGTERM writes a
        checkpoint, then raises KeyboardInterrupt."""
        cfg, total = self.cfg, self.cfg.steps
        end = total if stop_at is None else min(stop_at, total)
        snap_at = set(cfg.snapshot_steps())
        bar = _progress(total, self.step, "supernet", self.progress)
        previous = signal.getsignal(signal.SIGTERM)
        in_main = _in_main_thread()
        if in_main:
            signal.signal(signal.SIGTERM, _raise_interrupt)
        self.model.train()
        try:
            while self.step < end:
                epoch, skip = divmod(self.step, self.steps_per_epoch)
                given = 0
                for i, (x, y) in enumerate(self.train_epoch(epoch)):
                    given = i + 1
                    if i < skip:
                        continue  # resuming mid-epoch: the same batches, in the same order
                    if i >= self.steps_per_epoch or self.step >= end:
                        break
                    self.train_step(x, y)
                    self.step += 1
                    bar.update(1)
                    if self.step % self.log_every == 0 or self.step == end:
                        self._report(bar)
                    if self.step in snap_at:
                        self.snapshots.append({k: v.detach().to("cpu", copy=True)
                                               for k, v in self.net.state_dict().items()})
                    if self.step % cfg.checkpoint_every == 0 or self.step == total:
                        self.save()
                else:
                    if given < self.steps_per_epoch:  # found at the end of the short epoch, not one pass later
                        raise RuntimeError(f"epoch {epoch} gave {given} batches, expected {self.steps_per_epoch}: "
                                           "every epoch must give the same number of batches")
        except KeyboardInterrupt:
            bar.close()
            self.save()
            log.warning("interrupted at step %d of %d; checkpoint written to %s", self.step, total, self.checkpoint)
            raise
        finally:
            bar.close()
            if in_main:
                signal.signal(signal.SIGTERM, previous)
        if self.step == end and end != total:
            self.save()
        return self.snapshots

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One optimiser step on a batch, with the architecture of step ``self.step`` (which the caller
        advances). Queues work on the device and returns without waiting for it."""
        arch = arch_of_step(self.net.space, self.cfg.seed, self.step)
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = y.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)  # inactive modules keep grad None: SGLD skips them
        with autocast(self.device, self.amp):
            loss = self.loss_fn(self.model(x, arch), y)
        loss.backward()
        self.optimizer.step()
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
            raise FloatingPointError(f"the training loss is {mean} before step {self.step}: lower --lr or the "
                                     f"temperature")
        self.losses.append([self.step, mean])
        bar.set_postfix(loss=f"{mean:.3f}", refresh=False)


def _rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ProxyEvaluator:
    """Scores architectures: mean held-out top-1 accuracy over the snapshots, each with BN
    recalibrated for the architecture on ``recal_batches``."""

    def __init__(self, net: ChainNet, snapshots: Sequence[dict[str, torch.Tensor]],
                 recal_batches: Sequence[torch.Tensor], eval_batches: Sequence[Batch], progress: bool = True,
                 amp: bool = False):
        if not snapshots:
            raise ValueError("no snapshots: train the supernet past its burn-in first")
        self.net, self.snapshots = net, list(snapshots)
        self.recal_batches, self.eval_batches = list(recal_batches), list(eval_batches)
        self.progress, self.amp = progress, amp
        self.device = next(net.parameters()).device

    @torch.no_grad()
    def accuracy(self, arch: Arch) -> float:
        self.net.eval()
        correct = torch.zeros((), dtype=torch.long, device=self.device)  # summed on the device: one read-back
        seen = 0
        with autocast(self.device, self.amp):
            for x, y in self.eval_batches:
                correct += (self.net(x, arch).argmax(1) == y).sum()
                seen += y.numel()
        return int(correct) / max(seen, 1)

    def recalibrate(self, arch: Arch) -> None:
        with autocast(self.device, self.amp):
            recalibrate_bn(self.net, arch, self.recal_batches)

    def score_many(self, archs: Sequence[Arch], desc: str = "scoring") -> list[list[float]]:
        """Per-snapshot accuracies of every architecture (snapshot-major to load each snapshot once).
        Under ``torch.distributed`` each rank scores every world-th architecture and all ranks gather
        the results, so every rank returns the whole table."""
        rank, world = _rank_world()
        out = [[0.0] * len(self.snapshots) for _ in archs]
        mine = list(range(rank, len(archs), world))
        saved = {k: v.clone() for k, v in self.net.state_dict().items()}
        bar = _progress(len(mine) * len(self.snapshots), 0, desc, self.progress and rank == 0)
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


def _progress(total: int, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b between two score lists (ties handled as in scipy.stats.kendalltau)."""
    n = len(a)
    if n != len(b):
        raise ValueError("kendall_tau: the two lists differ in length")
    concordant = discordant = ties_a = ties_b = 0
    for i in range(n):
        for j in range(i + 1, n):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_a) * (concordant + discordant + ties_b))
    return (concordant - discordant) / denom if denom else float("nan")
