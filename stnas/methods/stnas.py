"""ST-NAS (Guo et al., ECCV 2020) end to end. The proxy: a supernet trained with one uniformly sampled architecture per step, its shared
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

Outputs in ``out``:
    supernet.ckpt          the supernet, its optimiser and snapshots (resumable, safe to load)
    scores.csv             every architecture scored: MAdds, params, mean score, per-snapshot accuracy
    best_<budget>.json     the best architecture under each MAdds budget
    pareto.csv, pareto.png the Pareto front (MAdds against score) of everything scored
    stability.json         the ranking-stability report
    stability.png          with --stability full: each architecture's score under one seed against another
    rank.json, rank.png    with --benchmark (cell spaces): scores.csv against NAS-Bench-201's table, as
                           ``stnas rank`` reports it

Chain spaces get :class:`~stnas.supernet.ChainNet`, cell spaces (NAS-Bench-201)
:class:`~stnas.supernet.CellPathNet`: one op per edge per step, uniform over the cell ops; everything
else (SGLD, snapshots, scores, evolution under an MAdds budget) is the same code.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import random
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

from stnas.evaluate.rank import kendall_tau
from stnas.evaluate.snapshot import SnapshotEvaluator
from stnas.io import CheckpointError, load_checkpoint, start_run, write_csv, write_json
from stnas.methods.base import (Method, RunContext, add_checkpoint_every_argument, count,
                                non_negative, non_negative_int, positive, register)
from stnas.optim import SGLD
from stnas.plots import plot_pareto, plot_stability
from stnas.runtime import search_channels_last, use_amp
from stnas.spaces import Budget, CellSpace, Space
from stnas.spaces.budget import format_count
from stnas.strategies.evolution import Candidate, EvolutionConfig, best_under, evolve, pareto_front
from stnas.supernet import SuperNet
from stnas.train.base import Hook
from stnas.train.single_path import SinglePathTrainer

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


def arch_of_step(space, seed: int, step: int):
    """The architecture trained at ``step``: uniform, and a function of (seed, step) alone."""
    return space.sample(random.Random(f"{seed}:{step}"))


def make_optimizer(net: nn.Module, cfg: ProxyConfig, dataset_size: int) -> torch.optim.Optimizer:
    params = [p for p in net.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return SGLD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                temperature=cfg.temperature, dataset_size=dataset_size, seed=cfg.seed)


class Snapshots(Hook):
    """K copies of the shared weights (on the CPU), taken after the steps ``cfg.snapshot_steps()``."""

    name = "snapshots"

    def __init__(self, steps: Iterable[int]):
        self.at = set(steps)
        self.snapshots: list[dict[str, torch.Tensor]] = []

    def after_step(self, trainer) -> None:
        if trainer.step in self.at:
            self.snapshots.append({k: v.detach().to("cpu", copy=True) for k, v in trainer.net.state_dict().items()})

    def state(self):
        return self.snapshots

    def load_state(self, state, trainer) -> None:
        self.snapshots = list(state)


# How often checkpoints are written does not change the result: a resume may change it.
_RESUMABLE_CHANGES = ("checkpoint_every",)


def proxy_trainer(net: nn.Module, train_epoch: Callable[[int], Iterable[Batch]], steps_per_epoch: int,
                  dataset_size: int, cfg: ProxyConfig, checkpoint=None, device=None, progress: bool = True,
                  channels_last: bool = False, amp: bool = False, log_every: int = 20) -> SinglePathTrainer:
    """The ST-NAS supernet trainer: the single-path trainer with uniform architectures of (seed, step),
    the SGLD (or SGD) optimiser and the snapshot hook. ``dataset_size``: training images, N of the SGLD
    noise unless the config sets it."""
    space = net.space
    return SinglePathTrainer(
        net, train_epoch, steps_per_epoch, cfg.steps, make_optimizer(net, cfg, cfg.dataset_size or dataset_size),
        lambda step: arch_of_step(space, cfg.seed, step), settings=asdict(cfg), identity={"space": space.to_dict()},
        resumable=_RESUMABLE_CHANGES, loss_fn=nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing),
        hooks=[Snapshots(cfg.snapshot_steps())], checkpoint=checkpoint, checkpoint_every=cfg.checkpoint_every,
        device=device, progress=progress, channels_last=channels_last, amp=amp, log_every=log_every)


@dataclass
class SearchConfig:
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    evolution: EvolutionConfig = field(default_factory=EvolutionConfig)
    budgets_madds: list[float] = field(default_factory=list)  # empty: the middle of the space's range
    budget_params: float | None = None
    stability: str = "run"     # "run": across this run's snapshots; "full": also 2 seeds x SGLD/SGD
    stability_archs: int = 12  # the fixed set of architectures the stability report ranks
    amp: bool | None = None    # bf16 autocast in training and scoring; None: on CUDA devices only


def default_budgets(space: Space) -> list[float]:
    lo, hi = space.madds_range()
    return [float(round(lo + 0.5 * (hi - lo)))]


# ---------------------------------------------------------------------- score cache (scores.csv)

class ScoreTable:
    """Per-snapshot accuracies of every architecture scored so far, mirrored to a CSV after each
    batch of new scores so that an interrupted search loses no evaluation."""

    def __init__(self, space: Space, path: Path | None):
        self.space, self.path = space, path
        self.rows: dict = {}
        if path is not None and path.is_file():
            with path.open(newline="") as f:
                for line, row in enumerate(csv.DictReader(f), start=2):
                    try:
                        arch = space.arch_from_dict(json.loads(row["arch"]))
                        accs = [float(v) for v in json.loads(row["snapshot_accuracies"])]
                    except (KeyError, TypeError, ValueError) as e:  # SpaceError is a ValueError
                        raise CheckpointError(f"{path}, line {line}: not a score row of space {space.name!r} "
                                              f"({type(e).__name__}: {e}); stnas writes this file whole, so it "
                                              "was changed since: delete it and --resume scores again") from None
                    self.rows[arch] = accs

    def score(self, arch) -> float:
        return statistics.fmean(self.rows[arch])

    def add(self, archs: Sequence, accs: Sequence[list[float]]) -> None:
        for a, s in zip(archs, accs):
            self.rows[a] = list(s)
        self.write()

    def write(self) -> None:
        if self.path is None:
            return
        ranked = sorted(self.rows, key=lambda a: -self.score(a))
        rows = []
        for a in ranked:
            madds, params = self.space.cost(a)
            rows.append({"score": f"{self.score(a):.6f}", "madds": madds, "params": params,
                         "snapshot_accuracies": json.dumps(self.rows[a]),  # exact: a resumed run reads the same floats
                         "arch": a.to_json()})
        write_csv(self.path, rows, ["score", "madds", "params", "snapshot_accuracies", "arch"])


def train_proxy(space: Space, data, proxy: ProxyConfig, checkpoint: Path | None, resume: bool,
                device: torch.device, progress: bool = True, amp: bool = False):
    """Train (or resume) a supernet; returns (net, snapshots)."""
    torch.manual_seed(proxy.seed)
    net = SuperNet(space).to(device)
    if data.channels_last:  # weights too, so every convolution runs NHWC end to end
        net = net.to(memory_format=torch.channels_last)
    trainer = proxy_trainer(net, data.train_epoch, data.steps_per_epoch, data.train_size, proxy,
                            checkpoint=checkpoint, device=device, progress=progress,
                            channels_last=data.channels_last, amp=amp)
    if checkpoint is not None and checkpoint.exists() and not resume:
        raise FileExistsError(f"{checkpoint} exists: pass --resume to continue that run, or choose another --out")
    if resume:
        trainer.resume()
    trainer.train()
    return net, trainer.hook("snapshots").snapshots


def stability_report(space: Space, table_by_run: dict[str, list[list[float]]], archs: Sequence) -> dict:
    """Kendall tau between runs and between snapshots, and the spread of a score across snapshots.

    ``table_by_run`` maps a run name ("sgld-seed0", ...) to the per-snapshot accuracies of ``archs``."""
    report: dict = {"architectures": [a.to_dict() for a in archs], "runs": {}}
    for run, accs in table_by_run.items():
        means = [statistics.fmean(a) for a in accs]
        k = len(accs[0])
        pair_taus = [kendall_tau([a[i] for a in accs], [a[j] for a in accs]) for i in range(k) for j in range(i + 1, k)]
        spreads = [statistics.pstdev(a) for a in accs]
        report["runs"][run] = {
            "scores": means,
            "snapshot_accuracies": accs,
            "mean_score_spread_across_snapshots": statistics.fmean(spreads),
            "max_score_spread_across_snapshots": max(spreads),
            "mean_kendall_tau_between_snapshots": statistics.fmean(pair_taus) if pair_taus else None,
        }
    by_opt: dict[str, list[str]] = {}
    for run in table_by_run:
        by_opt.setdefault(run.split("-")[0], []).append(run)
    report["seed_pairs"] = {opt: runs[:2] for opt, runs in by_opt.items() if len(runs) >= 2}
    report["kendall_tau_between_seeds"] = {
        opt: kendall_tau(report["runs"][a]["scores"], report["runs"][b]["scores"])
        for opt, (a, b) in report["seed_pairs"].items()}
    return report


def run_search(space: Space, data, cfg: SearchConfig, out: Path, resume: bool = False,
               device: torch.device | str = "cpu", progress: bool = True, benchmark=None,
               metric: str = "cifar10") -> dict:
    """The whole search; returns a summary (also written to ``out/summary.json``). ``benchmark`` (an
    NB201Table, cell spaces): also rank ``scores.csv`` against it on ``metric`` (rank.json, rank.png)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    budgets = list(cfg.budgets_madds) or default_budgets(space)
    for b in budgets:
        for warning in Budget(b, cfg.budget_params).check(space):
            log.warning("%s", warning)
    proxy = cfg.proxy
    settings = {k: v for k, v in data.describe().items() if k in ("batch_size", "image_size", "recal_batches",
                                                                   "eval_images", "seed")}
    proxy = ProxyConfig(**{**asdict(proxy), "dataset_size": proxy.dataset_size or data.train_size, "data": settings})
    start_run(out, {"space": space.to_dict(), "proxy": asdict(proxy), "evolution": asdict(cfg.evolution),
                    "budgets_madds": budgets, "budget_params": cfg.budget_params, "stability": cfg.stability,
                    "data": data.describe(),
                    **({} if benchmark is None else {"benchmark": str(benchmark.path), "metric": metric})},
              [out / "supernet.ckpt"], resume)

    amp = use_amp(device, cfg.amp)
    log.info("training the supernet: %d steps (%s), %d snapshots%s", proxy.steps, proxy.optimizer, proxy.snapshots,
             ", bf16 autocast" if amp else "")
    net, snapshots = train_proxy(space, data, proxy, out / "supernet.ckpt", resume, device, progress, amp)
    evaluator = SnapshotEvaluator(net, snapshots, data.recal_batches(device), data.eval_batches(device), progress,
                               amp=amp)
    table = ScoreTable(space, out / "scores.csv")

    def score(archs: Sequence) -> list[float]:
        new = [a for a in dict.fromkeys(archs) if a not in table.rows]
        if new:
            table.add(new, evaluator.score_many(new, desc=f"scoring {len(new)}"))
        return [table.score(a) for a in archs]

    # The stability set: the same architectures for every seed and optimiser.
    srng = random.Random("stability")
    stab_archs = list(dict.fromkeys(space.sample(srng) for _ in range(cfg.stability_archs)))
    score(stab_archs)

    best: dict[str, dict] = {}
    for b in budgets:
        log.info("evolution under %.2fM MAdds", b / 1e6)

        def report(gen, population, b=b):
            top = population[0]
            log.info("budget %.2fM generation %d: best score %.4f at %.2fM MAdds", b / 1e6, gen, top.score,
                     top.madds / 1e6)

        budget = Budget(b, cfg.budget_params)
        evolve(space, score, cfg.evolution, budget, on_generation=report)
        # The best of everything scored that meets the budget: the evolution's candidates, and also the
        # stability set and earlier budgets' candidates, which cost nothing more to consider.
        winner = best_under([Candidate(a, *space.cost(a), table.score(a)) for a in table.rows], budget)
        entry = {"space": space.name, "budget_madds": b, "budget_params": cfg.budget_params,
                 "madds": winner.madds, "params": winner.params, "score": winner.score,
                 "snapshot_accuracies": table.rows[winner.arch], "arch": winner.arch.to_dict()}
        write_json(out / f"best_{format_count(b)}.json", entry)
        best[format_count(b)] = entry

    everything = [Candidate(a, *space.cost(a), table.score(a)) for a in table.rows]
    front = pareto_front(everything)
    write_csv(out / "pareto.csv", [{"madds": c.madds, "params": c.params, "score": f"{c.score:.6f}",
                                     "arch": c.arch.to_json()} for c in front],
               ["madds", "params", "score", "arch"])
    plot_pareto(everything, front, budgets, out / "pareto.png", title=f"ST-NAS on {space.name} ({proxy.optimizer})")

    runs = {f"{proxy.optimizer}-seed{proxy.seed}": [table.rows[a] for a in stab_archs]}
    if cfg.stability == "full":
        for opt in ("sgld", "sgd"):
            for seed in (proxy.seed, proxy.seed + 1):
                name = f"{opt}-seed{seed}"
                if name in runs:
                    continue
                other = ProxyConfig(**{**asdict(proxy), "optimizer": opt, "seed": seed})
                ckpt = out / "stability" / f"{name}.ckpt"
                ckpt.parent.mkdir(exist_ok=True)
                log.info("stability: training the %s supernet", name)
                onet, osnaps = train_proxy(space, data, other, ckpt, resume and ckpt.exists(), device, progress,
                                           amp)
                oeval = SnapshotEvaluator(onet, osnaps, data.recal_batches(device), data.eval_batches(device), progress,
                                       amp=amp)
                runs[name] = oeval.score_many(stab_archs, desc=f"stability {name}")
    stab = stability_report(space, runs, stab_archs)
    write_json(out / "stability.json", stab)
    plot_stability(stab, out / "stability.png")

    summary = {"space": space.name, "evaluated": len(table.rows), "best": best,
               "pareto_size": len(front), "kendall_tau_between_seeds": stab["kendall_tau_between_seeds"],
               "out": str(out)}
    if benchmark is not None:
        from stnas.evaluate.rank_outputs import write_rank_report

        rank = write_rank_report(out / "scores.csv", benchmark, out, metric=metric,
                                 title=f"ST-NAS ({proxy.optimizer}) on {space.name} vs NAS-Bench-201 {metric}")
        log.info("scores.csv against NAS-Bench-201 %s (%d architectures): Kendall tau %.3f, Spearman rho %.3f, "
                 "top-10%% overlap %.3f, regret %.2f", metric, rank["n"], rank["kendall_tau"], rank["spearman_rho"],
                 rank["top10pct_overlap"], rank["regret"])
        summary["rank"] = {k: rank[k] for k in ("n", "metric", "kendall_tau", "spearman_rho", "top5pct_overlap",
                                                "top10pct_overlap", "regret")}
    write_json(out / "summary.json", summary)
    return summary


def score_archs(checkpoint: Path, archs: Sequence, data, device, progress: bool = True,
                amp: bool | None = None) -> list[list[float]]:
    """Per-snapshot accuracies of ``archs`` with the supernet of a search's checkpoint (bf16 autocast
    on CUDA devices unless ``amp`` says otherwise)."""
    ck = load_checkpoint(checkpoint, kind="supernet")
    space = Space.from_dict(ck["space"], source=str(checkpoint))
    if not ck["snapshots"]:
        raise ValueError(f"{checkpoint}: the supernet has no snapshots yet (its training stopped before burn-in "
                         "ended); finish it with `stnas search --resume`")
    net = SuperNet(space).to(device)
    net.load_state_dict(ck["model"])
    for a in archs:
        space.validate(a)
    device = torch.device(device)
    ev = SnapshotEvaluator(net, ck["snapshots"], data.recal_batches(device), data.eval_batches(device), progress,
                        amp=use_amp(device, amp))
    return ev.score_many(list(archs))


# ---------------------------------------------------------------------- the method behind `stnas search`

# Per-space defaults: the demo must finish within minutes on 2 CPU cores; ImageNet-scale spaces get
# SPOS-like settings.
# ImageNet: the held-out images are decoded once and kept on the GPU so that scoring never waits for
# JPEG decoding; 10,000 of them at 224 px take 3 GB in bf16 (all 50,000 of a SPOS-style split would take
# 15 GB), and a 1% accuracy difference is then 100 images. Demo-size spaces score at most 2,000 held-out
# images (all of the built-in demo's): all 10,000 of CIFAR-10's took 80-97 s a generation on 2 cores.
DEMO_DEFAULTS = dict(batch_size=64, burn_in=330, snapshots=3, snapshot_every=44, lr=0.1, weight_decay=5e-4,
                     temperature=1e-2, population=12, generations=4, eval_images=2000)
IMAGENET_DEFAULTS = dict(batch_size=256, burn_in=50000, snapshots=5, snapshot_every=2000, lr=0.1, weight_decay=4e-5,
                         temperature=1e-3, population=50, generations=20, eval_images=10_000)
# NAS-Bench-201 at its own size (C >= 16) on CIFAR-10: batch 64 as NAS-Bench-201's search code, 20
# epochs of burn-in (50,000 / 64 = 781 steps an epoch), 5 snapshots an epoch apart, NAS-Bench-201's
# training lr 0.1 and wd 5e-4; 10,000 held-out images. Ours, not the paper's (it gives none).
NB201_DEFAULTS = dict(batch_size=64, burn_in=15620, snapshots=5, snapshot_every=781, lr=0.1, weight_decay=5e-4,
                      temperature=1e-2, population=20, generations=10, eval_images=10_000)


def space_defaults(space: Space) -> dict:
    if isinstance(space, CellSpace) and space.channels >= 16:
        return NB201_DEFAULTS
    return DEMO_DEFAULTS if space.resolution <= 64 else IMAGENET_DEFAULTS



# Per-step SGLD noise std sqrt(2 lr T / N) above which the shared weights are mostly noise: the
# defaults give 1e-5 to 1.2e-3; T = 1e12 on the demo trained to weights of 4e29 and chance-level scores.
NOISE_WARN = 0.05


def _class_folders(root) -> int | None:
    train = Path(root).expanduser() / "train"
    if not train.is_dir():
        return None  # the data checks say what is wrong with the folder
    return sum(1 for p in train.iterdir() if p.is_dir() and not p.name.startswith("."))


def space_for_data(root, default: str) -> Space:
    """The built-in chain space for ``--data root`` without ``--space``: ``default`` when it classifies
    into as many classes as ``root/train`` has folders, else the first built-in that does; none: one
    error naming what to pass."""
    from stnas.spaces import builtin_spaces
    from stnas.spaces.chain import ChainSpace

    n = _class_folders(root)
    space = Space.load(default)
    if n is None or n == space.num_classes:
        return space
    fits = [name for name in builtin_spaces() if isinstance(s := Space.load(name), ChainSpace) and s.num_classes == n]
    if not fits:
        raise ValueError(f"--data {root} has {n} classes and no built-in space classifies into {n}: pass --space "
                         f"with a space file that says num_classes: {n} (`stnas space info --space demo` shows one)")
    log.warning("no --space: %s has %d classes, so the search runs on the built-in space %r (pass --space to "
                "choose another)", root, n, fits[0])
    return Space.load(fits[0])


def search_data(ctx: RunContext, space: Space, batch_size: int, seed: int = 0, eval_images: int | None = None):
    """The single-path search's data on ``ctx``'s device: training batches, BN-recalibration batches
    and the held-out set (bf16 under bf16 autocast: half the memory and bytes, the convolutions read bf16
    anyway)."""
    from stnas.data import data_root
    from stnas.data.search import SearchData

    dev = ctx.device
    dtype = torch.bfloat16 if use_amp(dev, ctx.amp) else torch.float32
    if ctx.data is None:
        log.info("no --data: using the built-in demo dataset")
    data = SearchData(data_root(ctx.data), space.resolution, batch_size, seed=seed, eval_images=eval_images,
                      shard_id=ctx.rank, num_shards=ctx.world, channels_last=search_channels_last(dev), dtype=dtype,
                      backend=ctx.loader, num_threads=ctx.threads, device=dev if dev.type == "cuda" else None)
    if data.num_classes != space.num_classes:
        from stnas.spaces import builtin_spaces

        fits = [n for n in builtin_spaces() if getattr(Space.load(n), "num_classes", None) == data.num_classes
                and Space.load(n).kind in ("chain", "cell")]
        hint = f"--space {fits[0]} or " if fits else ""
        raise ValueError(f"the data has {data.num_classes} classes but space {space.name!r} classifies into "
                         f"{space.num_classes}; pass {hint}a space file with num_classes: {data.num_classes}")
    return data


@register
class STNAS(Method):
    name = "stnas"
    summary = ("ST-NAS: SGLD-sampled single-path supernet, snapshot-ensemble scores, evolution under an MAdds "
               "budget (chain spaces: demo, tas, tas-wide, mobilenetv2; cell spaces: nb201-demo, nb201)")
    demo_space, data_space = "demo", "tas"

    def add_arguments(self, g) -> None:
        g.add_argument("--budget-madds", type=count, nargs="+", default=None,
                       help="MAdds budget(s), e.g. 320M 500M (default: the middle of the space's range)")
        g.add_argument("--budget-params", type=count, default=None,
                       help="optional parameter budget, e.g. 5.5M (default: none)")
        g.add_argument("--optimizer", choices=["sgld", "sgd"], default="sgld",
                       help="shared-weight sampler: SGLD (ST-NAS, default) or plain SGD (the baseline)")
        def by_space(key):
            return (f"(default by space: {DEMO_DEFAULTS[key]} demo-size, {NB201_DEFAULTS[key]} NAS-Bench-201, "
                    f"{IMAGENET_DEFAULTS[key]} ImageNet)")

        g.add_argument("--burn-in", type=non_negative_int, default=None,
                       help="supernet training steps before the first snapshot " + by_space("burn_in"))
        g.add_argument("--snapshots", type=positive(int), default=None,
                       help="K, snapshots of the shared weights a score averages over " + by_space("snapshots"))
        g.add_argument("--snapshot-every", type=positive(int), default=None,
                       help="steps between snapshots " + by_space("snapshot_every"))
        g.add_argument("--lr", type=positive(float), default=None,
                       help="learning rate of the shared weights " + by_space("lr"))
        g.add_argument("--momentum", type=non_negative, default=0.9, help="heavy-ball momentum (default: 0.9)")
        g.add_argument("--weight-decay", type=non_negative, default=None,
                       help="weight decay " + by_space("weight_decay"))
        g.add_argument("--temperature", type=non_negative, default=None,
                       help="SGLD temperature T, noise sqrt(2 lr T / N) per step " + by_space("temperature"))
        add_checkpoint_every_argument(g, 100)
        g.add_argument("--population", type=positive(int), default=None,
                       help="evolution population " + by_space("population"))
        g.add_argument("--generations", type=non_negative_int, default=None,
                       help="evolution generations after the first population " + by_space("generations"))
        g.add_argument("--eval-images", type=positive(int), default=None,
                       help="held-out images per score, kept on the device " + by_space("eval_images").replace(
                           "None", "all"))
        g.add_argument("--stability", choices=["run", "full"], default="run",
                       help="run (default): across this run's snapshots; full: also train SGLD and SGD with two "
                            "seeds")
        g.add_argument("--benchmark", type=Path, default=None,
                       help="cell spaces: NAS-Bench-201 table (nats_bench.csv); after scoring, rank scores.csv against "
                            "it (rank.json, rank.png, as `stnas rank`; default: none)")
        g.add_argument("--metric", default="cifar10",
                       help="the table's metric for --benchmark: cifar10 (default), cifar100 or imagenet16-120")

    def _space(self, ctx: RunContext) -> Space:
        if ctx.space is not None:
            return Space.load(ctx.space)
        if ctx.data is None:
            return Space.load(self.demo_space)
        return space_for_data(ctx.data, self.data_space)

    def check(self, args, ctx: RunContext) -> None:
        if args.benchmark is None:
            return
        from stnas.benchmarks import METRICS

        if args.metric not in METRICS:
            raise ValueError(f"--metric {args.metric!r}: the table's metrics are {', '.join(METRICS)}")
        if not Path(args.benchmark).is_file():
            raise ValueError(f"--benchmark {args.benchmark} does not exist (expected NAS-Bench-201's table, "
                             f"nats_bench.csv)")
        space = self._space(ctx)
        if not isinstance(space, CellSpace):
            raise ValueError(f"--benchmark ranks cell architectures against NAS-Bench-201; {space.name!r} is a "
                             f"{space.kind!r} space")
        ref = Space.load("nb201")
        if space.nodes != ref.nodes or tuple(space.ops) != tuple(ref.ops):
            raise ValueError(f"--benchmark: NAS-Bench-201's table answers for cells of {ref.nodes} nodes with ops "
                             f"{list(ref.ops)}; space {space.name!r} differs")

    def configs(self, args, ctx: RunContext, space: Space) -> "SearchConfig":
        d = space_defaults(space)

        def pick(value, key):
            return d[key] if value is None else value

        proxy = ProxyConfig(optimizer=args.optimizer, burn_in=pick(args.burn_in, "burn_in"),
                            snapshots=pick(args.snapshots, "snapshots"),
                            snapshot_every=pick(args.snapshot_every, "snapshot_every"), lr=pick(args.lr, "lr"),
                            momentum=args.momentum, weight_decay=pick(args.weight_decay, "weight_decay"),
                            temperature=pick(args.temperature, "temperature") if args.optimizer == "sgld" else 0.0,
                            seed=ctx.seed, checkpoint_every=args.checkpoint_every)
        population = pick(args.population, "population")
        evo = EvolutionConfig(population=population, generations=pick(args.generations, "generations"),
                              parents=max(1, population // 2), seed=ctx.seed)
        return SearchConfig(proxy=proxy, evolution=evo, budgets_madds=list(args.budget_madds or []),
                            budget_params=args.budget_params, stability=args.stability, amp=ctx.amp)

    def run(self, args, ctx: RunContext) -> dict:
        from stnas.spaces import ChainSpace

        space = self._space(ctx)
        if not isinstance(space, (ChainSpace, CellSpace)):
            raise ValueError(f"--method stnas searches chain and cell spaces; {space.name!r} is a {space.kind!r} "
                             f"space")
        benchmark = None
        if args.benchmark is not None:
            from stnas.benchmarks import NB201Table

            benchmark = NB201Table.load(args.benchmark)
            benchmark.check_metric(args.metric)
        cfg = self.configs(args, ctx, space)
        for b in cfg.budgets_madds:
            Budget(b, cfg.budget_params).check(space)
        d = space_defaults(space)
        data = search_data(ctx, space, ctx.batch_size or d["batch_size"], seed=ctx.seed,
                           eval_images=d["eval_images"] if args.eval_images is None else args.eval_images)
        if isinstance(space, CellSpace):
            shape = f"{space.nodes}-node cell, {len(space.edges)} edges x {len(space.ops)} ops, {len(space.cells)} cells"
        else:
            shape = f"{len(space.stem_edges)} stem edges, {len(space.branch_edges)} branch edges"
        noise = math.sqrt(2 * cfg.proxy.lr * cfg.proxy.temperature / data.train_size)
        if noise > NOISE_WARN:
            log.warning("--temperature %g: the SGLD noise is %.3g per step and weight (sqrt(2 lr T / N) with N = %d), "
                        "more than the weights can carry: expect chance-level scores (the defaults give about "
                        "1e-3 at most)",
                        cfg.proxy.temperature, noise, data.train_size)
        log.info("space %s: %s, %.3g architectures; data %s (%d train images, %s loader); device %s", space.name,
                 shape, space.count_architectures(), data.root, data.train_size, data.backend_used, ctx.device)
        return run_search(space, data, cfg, ctx.out, resume=ctx.resume, device=ctx.device, progress=ctx.progress,
                          benchmark=benchmark, metric=args.metric)

    def report(self, summary: dict, ctx: RunContext) -> None:
        for name, entry in summary["best"].items():
            print(f"best under {name} MAdds: score {entry['score']:.4f}, {entry['madds'] / 1e6:.2f}M MAdds, "
                  f"{entry['params'] / 1e6:.3f}M params -> {ctx.out / ('best_' + name + '.json')}")
        if "rank" in summary:
            r = summary["rank"]
            print(f"against NAS-Bench-201 {r['metric']} ({r['n']} architectures): Kendall tau {r['kendall_tau']:.3f}, "
                  f"Spearman rho {r['spearman_rho']:.3f}, regret {r['regret']:.2f} -> {ctx.out / 'rank.json'}")
