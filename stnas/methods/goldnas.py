"""GOLD-NAS (Bi, Xie, Chen, Wei, Tian, "GOLD-NAS: Gradual, One-Level, Differentiable", arXiv 2007.03331):
one-level search of per-op sigmoid gates under a resource term whose weight varies, with gradual pruning;
one search gives a Pareto front.

What is the paper's (its abstract; the method section is not public to us) and what is ours is in
``docs/goldnas.md``. In short:

- the paper's: the relaxed DARTS space (any ops per edge, every cell its own architecture, > 10^160
  architectures); one-level optimisation (weights and gates on the same batch); a resource constraint
  (FLOPs, optionally params) whose weight grows so that weak ops are pruned out gradually; every
  architecture that stays stable for a while along the way is logged, which gives a Pareto front.
- ours: the gate is sigmoid(alpha) on the op's output, alpha starts at ``gate_init``; the resource term is
  ``lambda * (w_f * E[MAdds] / MAdds_all + w_p * E[params] / params_all)`` (E over the gates, normalised
  by the cost of every gated op, so lambda is unitless); the schedule below; the front's accuracy is the
  supernet's held-out accuracy (or NAS-Bench-201's table accuracy on the cell space).

The schedule (:class:`GoldSchedule`, after every epoch):

0. an architecture that has held (no prune) for ``stable_epochs`` epochs is recorded (once) with its
   MAdds, params and accuracy, and written as a retrainable architecture file; pruning waits for that.
1. then (after the warm-up) ``n`` = the unpruned ops whose gate is below ``threshold``; all of them are
   pruned for good.
2. lambda: ``n < min_prune`` (too few: the pressure is too weak) -> ``lambda *= lambda_grow``; ``n >
   max_prune`` (too many: the pressure is too strong, the front would jump) -> ``lambda *=
   lambda_shrink``; otherwise unchanged (``max_prune`` = ``max_prune_frac`` of the gated ops, at least
   1). lambda starts at ``lambda0`` when the warm-up ends. Shrinking after a burst lets the gates settle,
   so the architecture stays unchanged for a while and is recorded; then lambda grows again.
3. when the architecture's MAdds reach ``budget_madds`` (or its params ``budget_params``), pruning stops;
   the search ends once that last architecture is recorded.

Outputs in ``out``: ``front.csv`` (the non-dominated recorded architectures), ``recorded.csv`` /
``recorded.json`` (every recorded one), ``archs/arch_NN.json`` (``stnas retrain`` takes them),
``front.png``, ``trajectory.csv`` / ``trajectory.png`` (lambda, pruned count and MAdds per epoch),
``search.ckpt`` (exact resume), ``config.json``, ``summary.json``, ``search.log``.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from stnas.io import start_run, write_csv, write_json
from stnas.methods.base import (Method, RunContext, add_checkpoint_every_argument, add_simplify_argument, count,
                                non_negative, positive, register)
from stnas.runtime import autocast, search_channels_last, use_amp
from stnas.spaces import Budget, CellSpace, Space
from stnas.spaces.budget import format_count
from stnas.spaces.darts_cell import DartsGoldSpace
from stnas.train.base import Hook
from stnas.train.differentiable import DifferentiableConfig, DifferentiableTrainer

log = logging.getLogger("stnas.search")


@dataclass
class GoldConfig:
    gate_init: float = 0.0            # initial gate logit: sigmoid(0) = 0.5
    threshold: float = 0.05           # a gate below this prunes its op
    lambda0: float = 2.0              # lambda when the warm-up ends
    lambda_grow: float = 2.0          # lambda *= this after an epoch that pruned fewer than min_prune ops
    lambda_shrink: float = 0.5        # lambda *= this after an epoch with more than max_prune candidates
    min_prune: int = 1
    max_prune_frac: float = 0.05      # more candidates than this fraction of the gated ops shrink lambda
    stable_epochs: int = 2            # an architecture unchanged this long is recorded
    flops_weight: float = 1.0         # weights of E[MAdds] and E[params] in the resource term
    params_weight: float = 0.0
    budget_madds: float | None = None  # stop pruning at this cost (the bottom of the front)
    budget_params: float | None = None
    warmup_epochs: int = 1            # weights only, no gate steps, no resource term
    eval_images: int | None = None    # held-out images for the front's accuracy (None: all of val/)
    batch_size: int = 64
    simplify: bool = False            # TopoNAS's module sharing / merged edges (stnas.supernet.toponas)
    train: DifferentiableConfig = field(default_factory=lambda: DifferentiableConfig(
        bilevel=False, arch_lr=0.05, arch_betas=(0.9, 0.999), arch_weight_decay=0.0))

    def __post_init__(self):
        if isinstance(self.train, dict):
            self.train = DifferentiableConfig(**self.train)
        if self.train.bilevel:
            raise ValueError("GOLD-NAS is one-level: its trainer config needs bilevel=False")
        if not 0 < self.threshold < 1:
            raise ValueError(f"--threshold is a gate value in (0, 1), got {self.threshold}")
        if not self.lambda0 > 0:
            raise ValueError(f"--lambda0 must be > 0, got {self.lambda0}")
        if not self.lambda_grow > 1:
            raise ValueError(f"--lambda-grow must be > 1, got {self.lambda_grow}")
        if not 0 < self.lambda_shrink < 1:
            raise ValueError(f"--lambda-shrink must be in (0, 1), got {self.lambda_shrink}")
        if not 0 < self.max_prune_frac <= 1:
            raise ValueError(f"--max-prune-frac must be in (0, 1], got {self.max_prune_frac}")
        if self.min_prune < 1 or self.stable_epochs < 1 or self.warmup_epochs < 0:
            raise ValueError("min_prune and stable_epochs must be >= 1, warmup_epochs >= 0")
        if self.flops_weight < 0 or self.params_weight < 0 or self.flops_weight + self.params_weight <= 0:
            raise ValueError("the resource term needs flops_weight and/or params_weight > 0 (both >= 0)")
        if self.warmup_epochs >= self.train.epochs:
            raise ValueError(f"--warmup-epochs {self.warmup_epochs} leaves no search epoch of {self.train.epochs}")
        if self.train.arch_from_epoch != self.warmup_epochs:
            self.train = DifferentiableConfig(**{**asdict(self.train), "arch_from_epoch": self.warmup_epochs})

    def max_prune(self, gated: int) -> int:
        return max(1, math.ceil(self.max_prune_frac * gated))


def next_lambda(lam: float, below: int, cfg: GoldConfig, gated: int) -> float:
    """The schedule's rule 2: grow while too few ops fall below the threshold, shrink when too many do."""
    if below < cfg.min_prune:
        return lam * cfg.lambda_grow
    if below > cfg.max_prune(gated):
        return lam * cfg.lambda_shrink
    return lam


def pareto_front(entries: list[dict], keys=(("madds", -1), ("params", -1), ("accuracy", 1))) -> list[dict]:
    """The entries no other entry dominates (at least as good in every key, better in one); a key's sign
    says whether higher (+1) or lower (-1) is better. Kept in their order."""
    def better_or_equal(a, b):
        return all(s * a[k] >= s * b[k] for k, s in keys)

    def strictly(a, b):
        return any(s * a[k] > s * b[k] for k, s in keys)

    return [e for e in entries if not any(better_or_equal(f, e) and strictly(f, e) for f in entries if f is not e)]


def resource_penalty(schedule: "GoldSchedule", cfg: GoldConfig):
    """``lambda * (w_f * E[MAdds] / MAdds_all + w_p * E[params] / params_all)``, lambda read from the
    schedule at every step (it changes between epochs)."""
    def penalty(net) -> torch.Tensor:
        madds, params = net.expected_cost()
        scale_m, scale_p = net.cost_scale
        term = cfg.flops_weight * madds / max(scale_m, 1.0)
        if cfg.params_weight:
            term = term + cfg.params_weight * params / max(scale_p, 1.0)
        return schedule.lam * term
    return penalty


class GoldSchedule(Hook):
    """GOLD-NAS's prune schedule, lambda schedule and front recording (see the module's docstring)."""

    name = "gold"

    def __init__(self, space, cfg: GoldConfig, out: Path, score, title: str = "", plots: bool = True):
        self.space, self.cfg, self.out, self.score, self.title = space, cfg, Path(out), score, title
        self.plots = plots  # redraw the figures after every epoch (tests turn it off: PNGs cost time)
        self.lam = cfg.lambda0   # unused during the warm-up (no gate steps, no resource term)
        self.trajectory: list[dict] = []
        self.recorded: list[dict] = []
        self.stable = 0          # epochs the current architecture has stayed unchanged
        self.frozen = False      # the budget is reached: no more pruning
        self.done = False

    # ---------------------------------------------------------------- the architecture now

    def describe(self, net) -> dict:
        """The current architecture, its cost and (for a cell space) its subset."""
        arch = net.derive()
        madds, params = self.space.cost(arch)
        row = {"arch": arch.to_dict(), "madds": madds, "params": params}
        if hasattr(net, "subset"):  # NAS-Bench-201: the table's cell is the reduction; keep what was computed
            row["subset"] = net.subset()
            row["subset_madds"], row["subset_params"] = net.subset_cost()
        return row

    def after_epoch(self, trainer, epoch: int) -> None:
        from stnas.methods.drnas import epoch_loss

        net, cfg = trainer.net, self.cfg
        gated = net.kept_count() + net.pruned_count()
        self.stable += 1  # this epoch trained the architecture left by the last prune
        held = self.describe(net)
        # 1. Record the architecture once it has held for stable_epochs epochs (before it is pruned further,
        #    so its accuracy is that of the weights that trained with it).
        known = {json_key(r["arch"]) for r in self.recorded}
        if self.stable >= cfg.stable_epochs and json_key(held["arch"]) not in known:
            self.record(net, held, epoch)
            if self.frozen:
                self.done = True
        # 2. Once it is recorded (and the warm-up is over), prune every candidate and adapt lambda. Pruning
        #    waits while an architecture holds: a prune in every epoch would leave nothing stable to record.
        below, pruned_now = 0, []
        searching = epoch >= cfg.warmup_epochs  # this epoch took gate steps
        if searching and not self.frozen and self.stable >= cfg.stable_epochs:
            below = net.below(cfg.threshold)
            # Every candidate goes (a cap would leave a backlog that keeps the architecture moving); too
            # many shrink lambda instead.
            pruned_now = net.prune(cfg.threshold) if below else []
            self.lam = next_lambda(self.lam, below, cfg, gated)
        now = self.describe(net) if pruned_now else held
        if pruned_now:
            self.stable = 0
        reached = ((cfg.budget_madds is not None and now["madds"] <= cfg.budget_madds)
                   or (cfg.budget_params is not None and now["params"] <= cfg.budget_params))
        if reached and not self.frozen:
            self.frozen = True
            log.info("epoch %d: the budget is reached (%s MAdds, %s params): pruning stops", epoch + 1,
                     format_count(now["madds"]), format_count(now["params"]))
            if json_key(now["arch"]) in {json_key(r["arch"]) for r in self.recorded}:
                self.done = True  # the architecture under the budget is already on record
        expected_m = net.expected_cost()[0].detach()
        self.trajectory.append({"epoch": epoch + 1, "lambda": self.lam, "kept": net.kept_count(),
                                "pruned": net.pruned_count(), "pruned_now": len(pruned_now), "below": below,
                                "madds": now["madds"], "params": now["params"],
                                "expected_madds": round(float(expected_m) + self.space.fixed_cost().madds),
                                "train_loss": epoch_loss(trainer.losses, epoch, trainer.steps_per_epoch)})
        self.write()

    def record(self, net, now: dict, epoch: int) -> None:
        accuracy = self.score(net)
        entry = {"id": len(self.recorded), "epoch": epoch + 1, "madds": now["madds"], "params": now["params"],
                 "accuracy": accuracy, "lambda": self.lam, "kept": net.kept_count(), **now}
        entry["file"] = f"archs/arch_{entry['id']:02d}.json"
        self.recorded.append(entry)
        write_json(self.out / entry["file"], {"space": self.space.to_dict(), "arch": now["arch"],
                                               "madds": now["madds"], "params": now["params"],
                                               "accuracy": accuracy, "epoch": epoch + 1})
        log.info("epoch %d: recorded architecture %d: %s MAdds, %s params, accuracy %.2f%%", epoch + 1,
                 entry["id"], format_count(now["madds"]), format_count(now["params"]), accuracy)

    # ---------------------------------------------------------------- outputs

    def front(self) -> list[dict]:
        return pareto_front(self.recorded)

    def write(self) -> None:
        from stnas.plots import plot_gold_front, plot_gold_trajectory

        cols = ["epoch", "lambda", "kept", "pruned", "pruned_now", "below", "madds", "params", "expected_madds",
                "train_loss"]
        write_csv(self.out / "trajectory.csv", self.trajectory, cols)
        write_json(self.out / "recorded.json", self.recorded)
        front = self.front()
        on_front = {e["id"] for e in front}
        cols = ["id", "epoch", "madds", "params", "accuracy", "lambda", "kept", "file"]
        write_csv(self.out / "recorded.csv", [{**{k: e[k] for k in cols}, "on_front": e["id"] in on_front}
                                              for e in self.recorded], cols + ["on_front"])
        write_csv(self.out / "front.csv", [{k: e[k] for k in cols} for e in front], cols)
        if not self.plots:
            return
        plot_gold_trajectory(self.trajectory, self.out / "trajectory.png", title=self.title)
        if self.recorded:
            plot_gold_front(self.recorded, front, self.out / "front.png", title=self.title,
                            accuracy_label=getattr(self.score, "label", "accuracy (%)"))

    def state(self):
        return {"lam": self.lam, "trajectory": self.trajectory, "recorded": self.recorded, "stable": self.stable,
                "frozen": self.frozen, "done": self.done}

    def load_state(self, state, trainer) -> None:
        self.lam, self.stable = state["lam"], state["stable"]
        self.trajectory, self.recorded = list(state["trajectory"]), list(state["recorded"])
        self.frozen, self.done = state["frozen"], state["done"]


def json_key(arch: dict) -> str:
    import json

    return json.dumps(arch, sort_keys=True)


# ---------------------------------------------------------------------- scoring the recorded architectures

class HeldOutAccuracy:
    """The supernet's top-1 (percent) on the held-out batches, as it is (gates included), in eval mode
    with its BatchNorm statistics recomputed on ``recal_batches`` first (ops pruned along the way leave
    statistics of networks it no longer is: a demo run scored 10% in eval mode where train-mode BN gave
    47%). The statistics and the global RNG are put back after, so scoring never changes the run."""

    label = "supernet held-out top-1 (%)"

    def __init__(self, batches, device, amp: bool = False, recal_batches=None):
        self.batches, self.device, self.amp, self.recal_batches = batches, device, amp, recal_batches

    @torch.no_grad()
    def __call__(self, net) -> float:
        from stnas.supernet.bn import recalibrated

        recal = [x.to(self.device) for x in self.recal_batches()] if self.recal_batches is not None else []
        with torch.random.fork_rng(devices=[]), autocast(self.device, self.amp), recalibrated(net, recal):
            correct = seen = 0
            for x, y in self.batches():
                pred = net(x.to(self.device)).argmax(1)
                correct += int((pred == y.to(self.device)).sum())
                seen += y.numel()
        return round(100.0 * correct / max(seen, 1), 4)


class TableAccuracy:
    """NAS-Bench-201's test accuracy of the derived cell (each edge's subset reduced to its strongest op)."""

    def __init__(self, table, metric: str = "cifar10"):
        self.table, self.metric = table, table.check_metric(metric) if hasattr(table, "check_metric") else metric
        self.label = f"NAS-Bench-201 {metric} test (%)"

    def __call__(self, net) -> float:
        return float(self.table.lookup(net.derive(), self.metric))


# ---------------------------------------------------------------------- the search

def run_goldnas(space, data, cfg: GoldConfig, out: Path, *, resume: bool = False, device="cpu",
                amp: bool | None = None, progress: bool = True, table=None, seed: int = 0,
                checkpoint_every: int = 1000, score=None) -> dict:
    """A GOLD-NAS search; returns a summary (also written to ``out/summary.json``). ``data``: a
    :class:`~stnas.data.search.SearchData` (or anything with ``train_epoch``, ``steps_per_epoch``,
    ``eval_batches``, ``describe``); ``score``: how a recorded architecture's accuracy is measured
    (default: the table with ``table``, else the supernet's held-out accuracy)."""
    from stnas.supernet.gated import gated_net

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    ckpt = out / "search.ckpt"
    amp = use_amp(device, amp)
    described = data.describe()
    settings = {"method": asdict(cfg), "data": {k: v for k, v in described.items()
                                                 if k in ("batch_size", "image_size", "seed", "train_images")}}
    start_run(out, {"space": space.to_dict(), **settings, "data": described,
                    "benchmark": str(getattr(table, "path", "")) if table is not None else None}, [ckpt], resume)
    torch.manual_seed(seed)
    net = gated_net(space, cfg.gate_init, simplify=cfg.simplify).to(device)
    if score is None:
        score = TableAccuracy(table) if table is not None else HeldOutAccuracy(lambda: data.eval_batches(device),
                                                                               device, amp,
                                                                               lambda: data.recal_batches(device))
    title = f"GOLD-NAS on {space.name}"
    schedule = GoldSchedule(space, cfg, out, score, title=title)

    def one_level_batches(epoch):  # one level: no search half, the trainer reads the first item only
        return ((batch, None) for batch in data.train_epoch(epoch))

    trainer = DifferentiableTrainer(net, one_level_batches, data.steps_per_epoch, cfg.train,
                                    penalty=resource_penalty(schedule, cfg), settings=settings,
                                    identity={"space": space.to_dict()}, hooks=[schedule], checkpoint=ckpt,
                                    checkpoint_every=checkpoint_every, device=device, progress=progress,
                                    channels_last=search_channels_last(device), amp=amp)
    if resume:
        trainer.resume()
    log.info("%s: %d gated ops, %d epochs x %d steps (batch %d), %s", title, net.kept_count() + net.pruned_count(),
             cfg.train.epochs, data.steps_per_epoch, cfg.batch_size, "bf16 autocast" if amp else "fp32")
    spe = data.steps_per_epoch
    # Epoch by epoch, so that the search can end once the budget's architecture is recorded.
    while trainer.step < trainer.total_steps and not schedule.done:
        trainer.train(stop_at=(trainer.step // spe + 1) * spe)
    if trainer.step < trainer.total_steps:
        trainer.save()
    front = schedule.front()
    summary = {"method": "goldnas", "space": space.name, "epochs_run": trainer.step // spe,
               "epochs": cfg.train.epochs, "budget_reached": schedule.frozen, "recorded": len(schedule.recorded),
               "front": [{k: e[k] for k in ("id", "epoch", "madds", "params", "accuracy", "file")} for e in front],
               "final": schedule.describe(net) | {"kept": net.kept_count(), "pruned": net.pruned_count()},
               "out": str(out)}
    summary["final"].pop("subset", None)
    write_json(out / "summary.json", summary)
    return summary


# ---------------------------------------------------------------------- the method behind `stnas search`

# Without --data: the demo space (C = 8, 3 cells) on the built-in digits, sized for <= 5 minutes on two
# CPU cores. With --data: the full space and our CIFAR-scale schedule.
DEMO_EPOCHS = 14
DATA_EPOCHS = 60





@register
class GOLDNAS(Method):
    name = "goldnas"
    summary = ("GOLD-NAS (Bi et al., arXiv 2007.03331): one-level search of per-op sigmoid gates with a "
               "resource term and gradual pruning; a Pareto front from one search (darts-gold or NAS-Bench-201)")

    def add_arguments(self, g) -> None:
        d = GoldConfig()
        g.add_argument("--epochs", type=positive(int), default=None,
                       help=f"search epochs at most (default: {DATA_EPOCHS} with --data, {DEMO_EPOCHS} on the demo)")
        g.add_argument("--budget-madds", type=count, default=None,
                       help="stop pruning at this many MAdds, e.g. 300M (the bottom of the front; default: none)")
        g.add_argument("--budget-params", type=count, default=None, help="stop pruning at this many parameters")
        g.add_argument("--threshold", type=positive(float), default=d.threshold,
                       help=f"a gate below this prunes its op for good (default: {d.threshold})")
        g.add_argument("--lambda0", type=positive(float), default=d.lambda0,
                       help=f"weight of the resource term when the warm-up ends (default: {d.lambda0})")
        g.add_argument("--lambda-grow", type=positive(float), default=d.lambda_grow,
                       help=f"lambda *= this after an epoch with fewer than --min-prune candidates (default: {d.lambda_grow})")
        g.add_argument("--lambda-shrink", type=positive(float), default=d.lambda_shrink,
                       help=f"lambda *= this after an epoch with more candidates than --max-prune-frac allows "
                            f"(default: {d.lambda_shrink})")
        g.add_argument("--min-prune", type=positive(int), default=d.min_prune,
                       help=f"fewer candidates than this in an epoch grow lambda (default: {d.min_prune})")
        g.add_argument("--max-prune-frac", type=positive(float), default=d.max_prune_frac,
                       help=f"more prune candidates in an epoch than this fraction of the gated ops shrink lambda "
                            f"(default: {d.max_prune_frac})")
        g.add_argument("--stable-epochs", type=positive(int), default=d.stable_epochs,
                       help=f"an architecture unchanged this many epochs is recorded (default: {d.stable_epochs})")
        g.add_argument("--warmup-epochs", type=int, default=None,
                       help="epochs of weights only before gates and the resource term (default: 1 on the demo, "
                            "5 with --data)")
        g.add_argument("--params-weight", type=non_negative, default=0.0,
                       help="weight of E[params] beside E[MAdds] (weight 1) in the resource term (default: 0)")
        g.add_argument("--gate-init", type=float, default=d.gate_init,
                       help=f"initial gate logit (default: {d.gate_init}: gates of 0.5)")
        g.add_argument("--lr", type=positive(float), default=0.025, help="weights: SGD lr, cosine (default: 0.025)")
        g.add_argument("--arch-lr", type=positive(float), default=d.train.arch_lr,
                       help=f"gates: Adam learning rate (default: {d.train.arch_lr})")
        g.add_argument("--eval-images", type=positive(int), default=None,
                       help="held-out images for the front's accuracy (default: all of val/)")
        g.add_argument("--benchmark", type=Path, default=None,
                       help="NAS-Bench-201 table (nats_bench.csv): search the nb201 cell space and score the "
                            "front with the table")
        add_checkpoint_every_argument(g, 1000, each_epoch=True)
        add_simplify_argument(g)

    def config(self, args, ctx: RunContext) -> GoldConfig:
        demo = ctx.data is None
        epochs = args.epochs or (DEMO_EPOCHS if demo else DATA_EPOCHS)
        warmup = args.warmup_epochs if args.warmup_epochs is not None else min(1 if demo else 5, epochs - 1)
        if warmup < 0:
            raise ValueError(f"--warmup-epochs must be >= 0, got {warmup}")
        d = GoldConfig()
        train = DifferentiableConfig(epochs=epochs, lr=args.lr, lr_min=min(0.001, args.lr), bilevel=False,
                                     arch_lr=args.arch_lr, arch_betas=d.train.arch_betas, arch_weight_decay=0.0,
                                     arch_from_epoch=warmup, seed=ctx.seed)
        return GoldConfig(gate_init=args.gate_init, threshold=args.threshold, lambda0=args.lambda0,
                          lambda_grow=args.lambda_grow, lambda_shrink=args.lambda_shrink, min_prune=args.min_prune,
                          max_prune_frac=args.max_prune_frac, stable_epochs=args.stable_epochs,
                          params_weight=args.params_weight, budget_madds=args.budget_madds,
                          budget_params=args.budget_params, warmup_epochs=warmup, eval_images=args.eval_images,
                          batch_size=ctx.batch_size or 64, simplify=args.simplify, train=train)

    def space_of(self, args, ctx: RunContext):
        demo = ctx.data is None
        name = ctx.space or (("nb201-demo" if demo else "nb201") if args.benchmark is not None
                             else ("darts-gold-demo" if demo else "darts-gold"))
        space = Space.load(name)
        if not isinstance(space, (DartsGoldSpace, CellSpace)):
            raise ValueError(f"--method goldnas searches darts-gold and cell (NAS-Bench-201) spaces; {space.name!r} "
                             f"is a {space.kind!r} space")
        if args.benchmark is not None and not isinstance(space, CellSpace):
            raise ValueError(f"--benchmark is NAS-Bench-201's table: it needs a cell space (nb201), not {space.name!r}")
        if isinstance(space, CellSpace) and "none" not in space.ops:
            raise ValueError(f"--method goldnas on a cell space needs 'none' among its ops (an edge whose ops are "
                             f"all pruned is none); {space.name!r} has {list(space.ops)}")
        return space

    def check(self, args, ctx: RunContext) -> None:
        if args.benchmark is not None and not Path(args.benchmark).is_file():
            raise ValueError(f"--benchmark {args.benchmark} does not exist (expected NAS-Bench-201's table, "
                             "nats_bench.csv)")
        cfg = self.config(args, ctx)
        space = self.space_of(args, ctx)
        for warning in Budget(cfg.budget_madds, cfg.budget_params).check(space):  # below the space: an error
            log.warning("%s", warning)
        if ctx.world > 1:
            raise ValueError("--method goldnas runs in one process; distributed runs are ST-NAS's")

    def run(self, args, ctx: RunContext) -> dict:
        from stnas.benchmarks import NB201Table, check_table_space
        from stnas.data import data_root
        from stnas.data.search import SearchData

        space = self.space_of(args, ctx)
        cfg = self.config(args, ctx)
        table = None
        if args.benchmark is not None:
            check_table_space(space)
            table = NB201Table.load(args.benchmark)
        dev = ctx.device
        amp = use_amp(dev, ctx.amp)
        if ctx.data is None:
            log.info("no --data: the demo space %s on the built-in demo dataset", space.name)
        data = SearchData(data_root(ctx.data), space.resolution, cfg.batch_size, seed=ctx.seed, recal_batches=4,
                          eval_images=cfg.eval_images, channels_last=search_channels_last(dev),
                          dtype=torch.bfloat16 if amp else torch.float32, backend=ctx.loader,
                          num_threads=ctx.threads, device=dev if dev.type == "cuda" else None)
        if data.num_classes != space.num_classes:
            raise ValueError(f"the data has {data.num_classes} classes but space {space.name!r} classifies into "
                             f"{space.num_classes}; use a space file with num_classes: {data.num_classes}")
        return run_goldnas(space, data, cfg, ctx.out, resume=ctx.resume, device=dev, amp=ctx.amp,
                           progress=ctx.progress, table=table, seed=ctx.seed, checkpoint_every=args.checkpoint_every)

    def report(self, summary: dict, ctx: RunContext) -> None:
        print(f"GOLD-NAS on {summary['space']}: {summary['recorded']} architectures recorded in "
              f"{summary['epochs_run']} epochs, {len(summary['front'])} on the Pareto front:")
        for e in summary["front"]:
            print(f"  {e['file']}: {format_count(e['madds'])} MAdds, {format_count(e['params'])} params, "
                  f"accuracy {e['accuracy']:.2f}%")
        if summary["front"]:
            print(f"retrain one with: stnas retrain {Path(ctx.out) / summary['front'][-1]['file']}")
