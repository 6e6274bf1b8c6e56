"""ST-NAS end to end: train the supernet (SGLD proxy), score architectures over its snapshots, evolve
under each budget, and write the results.

Outputs in ``out``:
    supernet.ckpt          the supernet, its optimiser and snapshots (resumable, safe to load)
    scores.csv             every architecture scored: MAdds, params, mean score, per-snapshot accuracy
    best_<budget>.json     the best architecture under each MAdds budget
    pareto.csv, pareto.png the Pareto front (MAdds against score) of everything scored
    stability.json         the ranking-stability report
    stability.png          with --stability full: each architecture's score under one seed against another
"""
from __future__ import annotations

import csv
import json
import logging
import os
import random
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from stnas.search.evolution import Candidate, EvolutionConfig, best_under, evolve, pareto_front
from stnas.search.proxy import ProxyConfig, ProxyEvaluator, SupernetTrainer, _rank_world, kendall_tau, use_amp
from stnas.spaces import Arch, Space
from stnas.supernet import SuperNet

log = logging.getLogger("stnas.search")


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


def budget_name(budget: float) -> str:
    return f"{budget / 1e6:.3g}M"


# ---------------------------------------------------------------------- score cache (scores.csv)

class ScoreTable:
    """Per-snapshot accuracies of every architecture scored so far, mirrored to a CSV after each
    batch of new scores so that an interrupted search loses no evaluation."""

    def __init__(self, space: Space, path: Path | None):
        self.space, self.path = space, path
        self.rows: dict[Arch, list[float]] = {}
        if path is not None and path.is_file():
            with path.open(newline="") as f:
                for row in csv.DictReader(f):
                    arch = space.validate(Arch.from_json(row["arch"]))
                    self.rows[arch] = [float(v) for v in json.loads(row["snapshot_accuracies"])]

    def score(self, arch: Arch) -> float:
        return statistics.fmean(self.rows[arch])

    def add(self, archs: Sequence[Arch], accs: Sequence[list[float]]) -> None:
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
                         "snapshot_accuracies": json.dumps([round(v, 6) for v in self.rows[a]]),
                         "arch": a.to_json()})
        _write_csv(self.path, rows, ["score", "madds", "params", "snapshot_accuracies", "arch"])


def _is_main() -> bool:
    """Rank 0 writes the outputs of a distributed run; every rank computes them alike."""
    return _rank_world()[0] == 0


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    if not _is_main():
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", newline="") as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def _write_json(path: Path, data) -> None:
    if not _is_main():
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------- the search

def train_proxy(space: Space, data, proxy: ProxyConfig, checkpoint: Path | None, resume: bool,
                device: torch.device, progress: bool = True, amp: bool = False):
    """Train (or resume) a supernet; returns (net, snapshots)."""
    torch.manual_seed(proxy.seed)
    net = SuperNet(space).to(device)
    if data.channels_last:  # weights too, so every convolution runs NHWC end to end
        net = net.to(memory_format=torch.channels_last)
    trainer = SupernetTrainer(net, data.train_epoch, data.steps_per_epoch, data.train_size, proxy,
                              checkpoint=checkpoint, device=device, progress=progress,
                              channels_last=data.channels_last, amp=amp)
    if checkpoint is not None and checkpoint.exists() and not resume:
        raise FileExistsError(f"{checkpoint} exists: pass --resume to continue that run, or choose another --out")
    if resume:
        trainer.resume()
    snapshots = trainer.train()
    return net, snapshots


def stability_report(space: Space, table_by_run: dict[str, list[list[float]]], archs: Sequence[Arch]) -> dict:
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
               device: torch.device | str = "cpu", progress: bool = True) -> dict:
    """The whole search; returns a summary (also written to ``out/summary.json``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    budgets = list(cfg.budgets_madds) or default_budgets(space)
    for b in budgets:
        space.check_budget(b, cfg.budget_params)
    proxy = cfg.proxy
    settings = {k: v for k, v in data.describe().items() if k in ("batch_size", "image_size", "recal_batches",
                                                                   "eval_images", "seed")}
    proxy = ProxyConfig(**{**asdict(proxy), "dataset_size": proxy.dataset_size or data.train_size, "data": settings})
    _write_json(out / "config.json", {"space": space.to_dict(), "proxy": asdict(proxy),
                                      "evolution": asdict(cfg.evolution), "budgets_madds": budgets,
                                      "budget_params": cfg.budget_params, "stability": cfg.stability,
                                      "data": data.describe()})

    amp = use_amp(device, cfg.amp)
    log.info("training the supernet: %d steps (%s), %d snapshots%s", proxy.steps, proxy.optimizer, proxy.snapshots,
             ", bf16 autocast" if amp else "")
    net, snapshots = train_proxy(space, data, proxy, out / "supernet.ckpt", resume, device, progress, amp)
    evaluator = ProxyEvaluator(net, snapshots, data.recal_batches(device), data.eval_batches(device), progress,
                               amp=amp)
    table = ScoreTable(space, out / "scores.csv")

    def score(archs: Sequence[Arch]) -> list[float]:
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

        found = evolve(space, score, cfg.evolution, b, cfg.budget_params, on_generation=report)
        winner = best_under(found, b, cfg.budget_params)
        entry = {"space": space.name, "budget_madds": b, "budget_params": cfg.budget_params,
                 "madds": winner.madds, "params": winner.params, "score": winner.score,
                 "snapshot_accuracies": table.rows[winner.arch], "arch": winner.arch.to_dict()}
        _write_json(out / f"best_{budget_name(b)}.json", entry)
        best[budget_name(b)] = entry

    everything = [Candidate(a, *space.cost(a), table.score(a)) for a in table.rows]
    front = pareto_front(everything)
    _write_csv(out / "pareto.csv", [{"madds": c.madds, "params": c.params, "score": f"{c.score:.6f}",
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
                oeval = ProxyEvaluator(onet, osnaps, data.recal_batches(device), data.eval_batches(device), progress,
                                       amp=amp)
                runs[name] = oeval.score_many(stab_archs, desc=f"stability {name}")
    stab = stability_report(space, runs, stab_archs)
    _write_json(out / "stability.json", stab)
    plot_stability(stab, out / "stability.png")

    summary = {"space": space.name, "evaluated": len(table.rows), "best": best,
               "pareto_size": len(front), "kendall_tau_between_seeds": stab["kendall_tau_between_seeds"],
               "out": str(out)}
    _write_json(out / "summary.json", summary)
    return summary


def plot_pareto(candidates: Sequence[Candidate], front: Sequence[Candidate], budgets: Sequence[float], path: Path,
                title: str = "") -> None:
    if not _is_main():
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    ax.scatter([c.madds / 1e6 for c in candidates], [100 * c.score for c in candidates], s=12, alpha=0.45,
               color="tab:blue", label=f"scored ({len(candidates)})")
    ax.plot([c.madds / 1e6 for c in front], [100 * c.score for c in front], "-o", color="tab:red", ms=4,
            label="Pareto front")
    for b in budgets:
        ax.axvline(b / 1e6, color="grey", ls="--", lw=1)
    ax.set_xlabel("MAdds (M)")
    ax.set_ylabel("proxy score: held-out top-1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_stability(report: dict, path: Path) -> bool:
    """One panel per optimiser trained with two seeds: each architecture's score under one seed against
    the other (bars: the spread across snapshots), Kendall's tau in the title. False when no optimiser
    has two seeds (nothing is written)."""
    pairs = report["seed_pairs"]
    if not pairs or not _is_main():
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(pairs), figsize=(4.2 * len(pairs), 4.0), dpi=120, squeeze=False)
    for ax, (opt, (a, b)) in zip(axes[0], sorted(pairs.items(), key=lambda kv: (kv[0] != "sgld", kv[0]))):
        ra, rb = report["runs"][a], report["runs"][b]
        xs, ys = [100 * v for v in ra["scores"]], [100 * v for v in rb["scores"]]
        xerr = [100 * statistics.pstdev(v) for v in ra["snapshot_accuracies"]]
        yerr = [100 * statistics.pstdev(v) for v in rb["snapshot_accuracies"]]
        ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt="o", ms=4, alpha=0.7, elinewidth=0.8)
        lo, hi = min(xs + ys) - 1, max(xs + ys) + 1
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel(f"score, {a} (%)")
        ax.set_ylabel(f"score, {b} (%)")
        ax.set_title(f"{opt.upper()}: Kendall tau between seeds {report['kendall_tau_between_seeds'][opt]:.2f}")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def score_archs(checkpoint: Path, archs: Sequence[Arch], data, device, progress: bool = True,
                amp: bool | None = None) -> list[list[float]]:
    """Per-snapshot accuracies of ``archs`` with the supernet of a search's checkpoint (bf16 autocast
    on CUDA devices unless ``amp`` says otherwise)."""
    from stnas.search.checkpoint import load_checkpoint

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
    ev = ProxyEvaluator(net, ck["snapshots"], data.recal_batches(device), data.eval_batches(device), progress,
                        amp=use_amp(device, amp))
    return ev.score_many(list(archs))
