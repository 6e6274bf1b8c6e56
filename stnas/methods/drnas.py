"""DrNAS (Chen et al., "DrNAS: Dirichlet Neural Architecture Search", ICLR 2021) and first-order DARTS
(Liu et al., ICLR 2019) on a cell space (NAS-Bench-201): one file, two registered methods, since DARTS
is DrNAS's trainer with softmax weights.

What is the paper's (its NAS-Bench-201 code, ``201-space/``), what is ours:
- the paper's: the architecture weights of an edge are a Dirichlet sample with concentration
  ``elu(beta) + 1`` (one reparameterised draw per forward, shared by every cell); ``beta`` starts at
  ``1e-3 * N(0, 1)``; the regulariser is L2 (Adam weight decay 1e-3 on beta, the default) or
  ``reg_scale * KL(Dir(elu(beta) + 1) || Dir(1))`` added to the architecture loss; first-order bilevel
  steps with the optimisers of :mod:`stnas.train.differentiable`; batch 64, 100 epochs, C = 16, N = 5;
  the derived cell is the argmax of beta per edge. Progressive learning (``--progressive``): partial
  channels K = 4 and all 5 ops for 50 epochs, then the 3 best ops per edge at K = 2 (net2wider) for 50
  more; in each stage the architecture steps start at its 10th epoch, and the weights get a fresh SGD
  with its own cosine schedule.
- ours: the halves of the training split are cut per class (an ImageFolder is sorted by class); the
  search batch walks a shuffled pass of its half in step (the paper's code draws a random batch per step);
  the clip norm covers the weights only; the loader's training augmentation (random-resized crop and
  flip) serves both halves, where the paper's CIFAR pipeline pads 4 and crops. Paper's NAS-Bench-201
  result: 94.36 / 73.51 / 46.34 (CIFAR-10 / CIFAR-100 / ImageNet16-120 test).

Outputs in ``out``: ``derived.json`` (the architecture after the latest epoch, NB201 string and ops, with
its space, so ``stnas retrain out/derived.json`` trains it), ``history.csv`` / ``history.json`` (every
epoch: derived arch, train loss, architecture weights, table accuracies with ``--benchmark``),
``arch_weights.png``, ``accuracy.png`` (with ``--benchmark``), ``search.ckpt`` (exact resume), ``search.log``.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from stnas.io import start_run, write_csv, write_json
from stnas.methods.base import (Method, RunContext, add_checkpoint_every_argument, add_simplify_argument, non_negative,
                                positive, register)
from stnas.plots import plot_arch_weights, plot_search_accuracy
from stnas.runtime import search_channels_last, use_amp
from stnas.spaces import CellSpace, Space
from stnas.supernet.cell_blocks import edge_key
from stnas.train.base import Hook
from stnas.train.differentiable import DifferentiableConfig, DifferentiableTrainer

log = logging.getLogger("stnas.search")


@dataclass
class DrNASConfig:
    weighting: str = "dirichlet"      # "dirichlet" (DrNAS) or "softmax" (DARTS)
    regularizer: str = "l2"           # "l2": Adam weight decay on beta; "kl": + kl_scale * KL(q || Dir(1))
    kl_scale: float = 1e-3
    progressive: bool = False
    stage_epochs: tuple[int, ...] = (50, 50)   # progressive stages
    stage_channels: tuple[int, ...] = (4, 2)   # partial channels K per stage
    stage_ops: tuple[int, ...] = (5, 3)        # ops kept per edge per stage
    stage_arch_from: int = 10                  # epoch of each stage where architecture steps start
    batch_size: int = 64
    simplify: bool = False                     # TopoNAS's merged edges (stnas.supernet.toponas)
    train: DifferentiableConfig = field(default_factory=DifferentiableConfig)

    def __post_init__(self):
        if isinstance(self.train, dict):
            self.train = DifferentiableConfig(**self.train)
        if self.weighting not in ("dirichlet", "softmax"):
            raise ValueError(f"weighting must be 'dirichlet' or 'softmax', got {self.weighting!r}")
        if self.regularizer not in ("l2", "kl"):
            raise ValueError(f"--regularizer must be l2 or kl, got {self.regularizer!r}")
        if self.regularizer == "kl" and self.weighting != "dirichlet":
            raise ValueError("--regularizer kl is DrNAS's (a Dirichlet prior); DARTS has softmax weights")
        self.stage_epochs = tuple(self.stage_epochs)
        self.stage_channels, self.stage_ops = tuple(self.stage_channels), tuple(self.stage_ops)
        if self.progressive:
            if not len(self.stage_epochs) == len(self.stage_channels) == len(self.stage_ops) >= 1:
                raise ValueError("progressive: stage_epochs, stage_channels and stage_ops need one entry per stage")
            if min(self.stage_epochs) < 1:
                raise ValueError(f"progressive: every stage needs >= 1 epoch, got {self.stage_epochs}")

    @property
    def epochs(self) -> int:
        return sum(self.stage_epochs) if self.progressive else self.train.epochs

    @property
    def title(self) -> str:
        return "DrNAS" if self.weighting == "dirichlet" else "DARTS (first order)"

    def trainer_config(self) -> DifferentiableConfig:
        """The trainer's schedule: progressive stages, each with its own cosine and a late start of the
        architecture steps."""
        if not self.progressive:
            return self.train
        return DifferentiableConfig(**{**asdict(self.train), "stages": self.stage_epochs,
                                       "arch_from_epoch": self.stage_arch_from})


def dirichlet_kl_to_uniform(concentration: torch.Tensor) -> torch.Tensor:
    """sum over rows of KL(Dir(a) || Dir(1)), in closed form:
    ``lnG(sum a) - sum lnG(a_i) - lnG(n) + sum (a_i - 1)(psi(a_i) - psi(sum a))`` (lnG(1) = 0)."""
    a = concentration
    a0 = a.sum(-1)
    n = a.shape[-1]
    kl = (torch.lgamma(a0) - torch.lgamma(a).sum(-1) - math.lgamma(n)
          + ((a - 1) * (torch.digamma(a) - torch.digamma(a0)[..., None])).sum(-1))
    return kl.sum()


def kl_penalty(scale: float):
    """DrNAS's KL regulariser on the kept ops of every edge."""
    def penalty(net) -> torch.Tensor:
        conc = torch.nn.functional.elu(net.beta) + 1
        total = conc.new_zeros(())
        for rows, cols in net._kept.values():  # edges grouped by how many ops they keep
            rows, cols = rows.to(conc.device), cols.to(conc.device)
            total = total + dirichlet_kl_to_uniform(conc[rows[:, None], cols])
        return scale * total
    return penalty


def epoch_loss(losses, epoch: int, steps_per_epoch: int) -> float | None:
    """The mean training loss of ``epoch`` from the trainer's reports ``[step, mean since the previous
    report]`` (the trainer reports at every epoch's end, so no report spans two epochs)."""
    start, end = epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch
    total = seen = 0.0
    previous = start
    for step, loss in losses:
        if start < step <= end:
            total += loss * (step - previous)
            seen += step - previous
            previous = step
    return round(total / seen, 6) if seen else None


class EpochOutputs(Hook):
    """After every epoch: the derived architecture, its table accuracies, the architecture weights; the
    files of the run rewritten from the whole history (so rerunning an epoch's hook is harmless)."""

    name = "history"

    def __init__(self, space: CellSpace, out: Path, table=None, title: str = ""):
        self.space, self.out, self.table, self.title = space, Path(out), table, title
        self.history: list[dict] = []

    def after_epoch(self, trainer, epoch: int) -> None:
        net = trainer.net
        arch = net.derive()
        row = {"epoch": epoch + 1, "nb201": arch.to_nb201(), "ops": list(arch.ops),
               "train_loss": epoch_loss(trainer.losses, epoch, trainer.steps_per_epoch),
               "weights": [[round(float(v), 6) for v in r] for r in net.arch_weights().detach().cpu().tolist()],
               "beta": [[round(float(v), 6) for v in r] for r in net.beta.detach().cpu().tolist()]}
        if self.table is not None:
            from stnas.benchmarks import METRICS

            row["table"] = {m: self.table.lookup(arch, m) for m in METRICS}
            row["optimum"] = {m: self.table.best(m)[1] for m in METRICS}
        self.history = [h for h in self.history if h["epoch"] != row["epoch"]] + [row]
        self.write()
        shown = ", ".join(f"{m} {v:.2f}%" for m, v in row.get("table", {}).items())
        log.info("epoch %d: %s%s", row["epoch"], row["nb201"], f" ({shown})" if shown else "")

    def write(self) -> None:
        last = self.history[-1]
        write_json(self.out / "derived.json", {"space": self.space.to_dict(), "epoch": last["epoch"],
                                               "arch": {"ops": last["ops"], "nb201": last["nb201"]},
                                               **({"table": last["table"]} if "table" in last else {})})
        write_json(self.out / "history.json", self.history)
        metrics = list(last.get("table", {}))
        write_csv(self.out / "history.csv",
                  [{"epoch": h["epoch"], "arch": h["nb201"], "train_loss": h["train_loss"],
                    **{m: h.get("table", {}).get(m) for m in metrics}} for h in self.history],
                  ["epoch", "arch", "train_loss", *metrics])
        edges = [edge_key(d, s) for d, s in self.space.edges]
        plot_arch_weights(self.history, edges, self.space.ops, self.out / "arch_weights.png", title=self.title)
        plot_search_accuracy(self.history, self.out / "accuracy.png", title=self.title)

    def state(self):
        return self.history

    def load_state(self, state, trainer) -> None:
        self.history = list(state)


class ProgressiveSchedule(Hook):
    """DrNAS's progressive learning: at the end of each stage, keep the best ops per edge, lower the
    partial-channel K by net2wider, and restart the weights' optimiser and its cosine schedule."""

    name = "stage"

    def __init__(self, cfg: DrNASConfig):
        self.cfg = cfg
        self.ends = [sum(cfg.stage_epochs[: s + 1]) for s in range(len(cfg.stage_epochs))]
        self.stage = 0

    def after_epoch(self, trainer, epoch: int) -> None:
        if self.stage + 1 < len(self.ends) and epoch + 1 == self.ends[self.stage]:
            self.stage += 1
            self.enter(trainer.net, self.stage)
            trainer.reset_optimizers()
            log.info("progressive: stage %d, %d ops per edge, partial channels K = %d", self.stage + 1,
                     self.cfg.stage_ops[self.stage], self.cfg.stage_channels[self.stage])

    def enter(self, net, stage: int) -> None:
        keep = self.cfg.stage_ops[stage]
        kept_now = int(net.mask.sum(1).min())
        if keep < kept_now:
            net.prune(keep)
        if self.cfg.stage_channels[stage] < net.partial_channels:
            net.widen(self.cfg.stage_channels[stage])

    def state(self):
        return {"stage": self.stage}

    def load_state(self, state, trainer) -> None:
        # Reshape the net to its stage; the checkpoint's weights and mask then load over it.
        self.stage = state["stage"]
        for stage in range(1, self.stage + 1):
            if self.cfg.stage_channels[stage] < trainer.net.partial_channels:
                trainer.net.widen(self.cfg.stage_channels[stage])


def run_drnas(space: CellSpace, data, cfg: DrNASConfig, out: Path, *, resume: bool = False, device="cpu",
              amp: bool | None = None, progress: bool = True, table=None, seed: int = 0,
              checkpoint_every: int = 1000) -> dict:
    """A DrNAS (or DARTS) search; returns a summary (also written to ``out/summary.json``)."""
    from stnas.supernet.mixed import MixedCellNet

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    ckpt = out / "search.ckpt"
    amp = use_amp(device, amp)
    settings = {"method": asdict(cfg), "data": {k: v for k, v in data.describe().items()
                                                 if k in ("batch_size", "image_size", "seed", "train_images")}}
    start_run(out, {"space": space.to_dict(), **settings, "data": data.describe(),
                    "benchmark": str(table.path) if table is not None else None}, [ckpt], resume)
    torch.manual_seed(seed)
    k0 = cfg.stage_channels[0] if cfg.progressive else 1
    net = MixedCellNet(space, weighting=cfg.weighting, partial_channels=k0, simplify=cfg.simplify).to(device)
    train_cfg = cfg.trainer_config()
    hooks: list[Hook] = [EpochOutputs(space, out, table, title=f"{cfg.title} on {space.name}")]
    schedule = ProgressiveSchedule(cfg) if cfg.progressive else None
    if schedule is not None:
        hooks.insert(0, schedule)
    trainer = DifferentiableTrainer(net, data.epoch, data.steps_per_epoch, train_cfg,
                                    penalty=kl_penalty(cfg.kl_scale) if cfg.regularizer == "kl" else None,
                                    settings=settings, identity={"space": space.to_dict()}, hooks=hooks,
                                    checkpoint=ckpt, checkpoint_every=checkpoint_every, device=device,
                                    progress=progress, channels_last=search_channels_last(device), amp=amp)
    if resume:
        trainer.resume()
    log.info("%s on %s: %d epochs x %d steps (batch %d), %s", cfg.title, space.name, cfg.epochs,
             data.steps_per_epoch, data.batch_size, "bf16 autocast" if amp else "fp32")
    trainer.train()
    history = trainer.hook("history").history
    last = history[-1]
    summary = {"method": "drnas" if cfg.weighting == "dirichlet" else "darts", "space": space.name, "epochs": cfg.epochs,
               "derived": {"nb201": last["nb201"], "ops": last["ops"]}, "table": last.get("table"),
               "out": str(out)}
    write_json(out / "summary.json", summary)
    return summary


# ---------------------------------------------------------------------- the methods behind `stnas search`

# Without --data: the demo cell space (C = 8, one cell per stage) on the built-in digits, sized to finish
# within minutes on two CPU cores. With --data: the paper's settings.
DEMO_EPOCHS = 30




class _Bilevel(Method):
    weighting = ""
    demo_space, data_space = "nb201-demo", "nb201"

    def add_arguments(self, g) -> None:
        g.add_argument("--epochs", type=positive(int), default=None,
                       help=f"search epochs (default: 100 with --data, as the paper; {DEMO_EPOCHS} on the demo data)")
        g.add_argument("--lr", type=positive(float), default=0.025,
                       help="weights: SGD learning rate, cosine to --lr-min (default: 0.025)")
        g.add_argument("--lr-min", type=non_negative, default=0.001, help="weights: final learning rate (default: 0.001)")
        g.add_argument("--weight-decay", type=non_negative, default=3e-4, help="weights: weight decay (default: 3e-4)")
        g.add_argument("--grad-clip", type=non_negative, default=5.0,
                       help="weights: max gradient norm, 0 for none (default: 5)")
        g.add_argument("--arch-lr", type=positive(float), default=3e-4,
                       help="architecture: Adam learning rate, betas (0.5, 0.999) (default: 3e-4)")
        g.add_argument("--arch-weight-decay", type=non_negative, default=1e-3,
                       help="architecture: Adam weight decay, DrNAS's L2 regulariser (default: 1e-3)")
        g.add_argument("--benchmark", type=Path, default=None,
                       help="NAS-Bench-201 table (nats_bench.csv): report the derived cell's test accuracies "
                            "after every epoch")
        add_checkpoint_every_argument(g, 1000, each_epoch=True)
        add_simplify_argument(g)

    def config(self, args, ctx: RunContext) -> DrNASConfig:
        demo = ctx.data is None
        epochs = args.epochs or (DEMO_EPOCHS if demo else 100)
        train = DifferentiableConfig(epochs=epochs, lr=args.lr, lr_min=min(args.lr_min, args.lr),
                                     weight_decay=args.weight_decay, grad_clip=args.grad_clip, arch_lr=args.arch_lr,
                                     arch_weight_decay=args.arch_weight_decay, seed=ctx.seed)
        extra = self.extra_config(args)
        if extra.get("progressive") and args.epochs:  # --epochs splits evenly over the stages
            extra["stage_epochs"] = (max(1, args.epochs // 2), max(1, args.epochs - args.epochs // 2))
        elif extra.get("progressive") and demo:
            extra["stage_epochs"] = (DEMO_EPOCHS // 2, DEMO_EPOCHS - DEMO_EPOCHS // 2)
            extra["stage_arch_from"] = 3
        return DrNASConfig(weighting=self.weighting, batch_size=ctx.batch_size or 64, simplify=args.simplify,
                           train=train, **extra)

    def extra_config(self, args) -> dict:
        return {}

    def check(self, args, ctx: RunContext) -> None:
        if args.benchmark is not None and not Path(args.benchmark).is_file():
            raise ValueError(f"--benchmark {args.benchmark} does not exist (expected NAS-Bench-201's table, "
                             "nats_bench.csv)")
        self.config(args, ctx)  # option errors before any data is read

    def run(self, args, ctx: RunContext) -> dict:
        from stnas.benchmarks import NB201Table, check_table_space
        from stnas.data import data_root
        from stnas.data.bilevel import BilevelData

        space = Space.load(ctx.space or (self.demo_space if ctx.data is None else self.data_space))
        if not isinstance(space, CellSpace):
            raise ValueError(f"--method {self.name} searches cell spaces (nb201, nb201-demo); {space.name!r} is a "
                             f"{space.kind!r} space (try --method stnas)")
        cfg = self.config(args, ctx)
        table = None
        if args.benchmark is not None:
            check_table_space(space)
            table = NB201Table.load(args.benchmark)
        dev = ctx.device
        amp = use_amp(dev, ctx.amp)
        if ctx.world > 1:
            raise ValueError(f"--method {self.name} runs in one process; distributed runs are ST-NAS's")
        if ctx.data is None:
            log.info("no --data: the demo space %s on the built-in demo dataset", space.name)
        data = BilevelData(data_root(ctx.data), space.resolution, cfg.batch_size, seed=ctx.seed,
                           channels_last=search_channels_last(dev), dtype=torch.bfloat16 if amp else torch.float32,
                           backend=ctx.loader, num_threads=ctx.threads, device=dev if dev.type == "cuda" else None)
        if data.num_classes != space.num_classes:
            raise ValueError(f"the data has {data.num_classes} classes but space {space.name!r} classifies into "
                             f"{space.num_classes}; use a space file with num_classes: {data.num_classes}")
        return run_drnas(space, data, cfg, ctx.out, resume=ctx.resume, device=dev, amp=ctx.amp,
                         progress=ctx.progress, table=table, seed=ctx.seed, checkpoint_every=args.checkpoint_every)

    def report(self, summary: dict, ctx: RunContext) -> None:
        line = f"derived cell after {summary['epochs']} epochs: {summary['derived']['nb201']}"
        if summary.get("table"):
            line += " (NAS-Bench-201 test: " + ", ".join(f"{m} {v:.2f}%" for m, v in summary["table"].items()) + ")"
        print(line)
        print(f"retrain it with: stnas retrain {ctx.out / 'derived.json'}")


@register
class DrNAS(_Bilevel):
    name = "drnas"
    weighting = "dirichlet"
    summary = ("DrNAS (Chen et al., ICLR 2021): Dirichlet architecture weights, first-order bilevel search on "
               "NAS-Bench-201 cells")

    def add_arguments(self, g) -> None:
        super().add_arguments(g)
        g.add_argument("--regularizer", choices=["l2", "kl"], default="l2",
                       help="l2: Adam weight decay on beta (default, as the paper's code); kl: also "
                            "--kl-scale * KL(Dir(elu(beta)+1) || Dir(1)) in the architecture loss")
        g.add_argument("--kl-scale", type=positive(float), default=1e-3, help="scale of the KL term (default: 1e-3)")
        g.add_argument("--progressive", action="store_true",
                       help="progressive learning: partial channels K=4 with 5 ops, then K=2 with the best 3 ops "
                            "per edge, half of the epochs each")

    def extra_config(self, args) -> dict:
        return {"regularizer": args.regularizer, "kl_scale": args.kl_scale, "progressive": args.progressive}


@register
class DARTS(_Bilevel):
    name = "darts"
    weighting = "softmax"
    summary = "DARTS first order (Liu et al., ICLR 2019): softmax architecture weights, the DrNAS trainer"
