"""Every figure stnas writes, in one place: a function per figure, data in, a PNG out.

Figures are drawn on rank 0 only, with matplotlib's Agg backend (no screen needed).
"""
from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from stnas.runtime import is_main


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path, rect=None) -> None:
    """Write the figure atomically (a PNG is never half-written) and free it."""
    from stnas.io import atomic_write

    fig.tight_layout(**({} if rect is None else {"rect": rect}))
    atomic_write(path, lambda f: fig.savefig(f, format="png"), binary=True)
    _pyplot().close(fig)


def _finish(fig, ax, path, xlabel: str, ylabel: str, title: str, legend: str = "lower right") -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc=legend)
    _save(fig, path)


def plot_pareto(candidates: Sequence, front: Sequence, budgets: Sequence[float], path: Path,
                title: str = "") -> None:
    if not is_main():
        return
    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    ax.scatter([c.madds / 1e6 for c in candidates], [100 * c.score for c in candidates], s=12, alpha=0.45,
               color="tab:blue", label=f"scored ({len(candidates)})")
    ax.plot([c.madds / 1e6 for c in front], [100 * c.score for c in front], "-o", color="tab:red", ms=4,
            label="Pareto front")
    for k, b in enumerate(budgets):
        ax.axvline(b / 1e6, color="grey", ls="--", lw=1, label="MAdds budget" if k == 0 else None)
    _finish(fig, ax, path, "MAdds (M)", "proxy score: held-out top-1 (%)", title)


def plot_stability(report: dict, path: Path) -> bool:
    """One panel per optimiser trained with two seeds: each architecture's score under one seed against
    the other (bars: the spread across snapshots), Kendall's tau in the title. False when no optimiser
    has two seeds (nothing is written)."""
    pairs = report["seed_pairs"]
    if not pairs or not is_main():
        return False
    plt = _pyplot()

    fig, axes = plt.subplots(1, len(pairs), figsize=(4.2 * len(pairs), 4.0), dpi=120, squeeze=False)
    for ax, (opt, (a, b)) in zip(axes[0], sorted(pairs.items(), key=lambda kv: (kv[0] != "sgld", kv[0]))):
        ra, rb = report["runs"][a], report["runs"][b]
        xs, ys = [100 * v for v in ra["scores"]], [100 * v for v in rb["scores"]]
        xerr = [100 * statistics.pstdev(v) for v in ra["snapshot_accuracies"]]
        yerr = [100 * statistics.pstdev(v) for v in rb["snapshot_accuracies"]]
        ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt="o", ms=4, alpha=0.7, elinewidth=0.8,
                    label="an architecture; bars: std. across snapshots")
        # The axes hold the bars too, not only the points.
        lo = min([x - e for x, e in zip(xs, xerr)] + [y - e for y, e in zip(ys, yerr)]) - 1
        hi = max([x + e for x, e in zip(xs, xerr)] + [y + e for y, e in zip(ys, yerr)]) + 1
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel(f"score, {a} (%)")
        ax.set_ylabel(f"score, {b} (%)")
        ax.set_title(f"{opt.upper()}: Kendall tau between seeds {report['kendall_tau_between_seeds'][opt]:.2f}")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=7)
    _save(fig, path)
    return True


def plot_history(history, path: Path) -> None:
    """Training loss and validation top-1 per epoch of a retraining run."""
    if not history or not is_main():
        return
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    ep = [h["epoch"] for h in history]
    ax.plot(ep, [h["train_loss"] for h in history], "-o", ms=3, color="tab:blue", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss")
    ax2 = ax.twinx()
    ax2.plot(ep, [100 * h["val_top1"] for h in history], "-s", ms=3, color="tab:red", label="val top-1")
    ax2.set_ylabel("val top-1 (%)")
    fig.legend(loc="upper center", ncol=2)
    _save(fig, path)


def plot_rank_scatter(scores: Sequence[float], truth: Sequence[float], path: Path, title: str = "",
                      report: dict | None = None) -> None:
    """Each architecture's search score against its benchmark-table accuracy, the best-scored one in
    red, Kendall's tau and Spearman's rho (from ``report``, a :func:`stnas.evaluate.rank.rank_report`;
    computed when None) in a corner."""
    if not is_main():
        return
    if report is None:
        from stnas.evaluate.rank import rank_report

        report = rank_report(scores, truth)
    plt = _pyplot()

    def num(key: str) -> str:
        value = report.get(key)
        return "n/a" if value is None or value != value else f"{value:.3f}"  # value != value: NaN

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    xs, ys = list(scores), list(truth)
    ax.scatter(xs, ys, s=10, alpha=0.45, color="tab:blue", label=f"architectures ({len(xs)})")
    finite = [k for k, x in enumerate(xs) if x == x]
    if finite:
        best = max(finite, key=lambda k: (xs[k], -k))  # the first of the best scores, as rank.regret picks
        ax.scatter([xs[best]], [ys[best]], s=36, color="tab:red", zorder=3, label="best scored")
    lines = [f"Kendall tau = {num('kendall_tau')}", f"Spearman rho = {num('spearman_rho')}"]
    if "regret" in report:
        lines.append(f"regret = {num('regret')}")
    ax.text(0.02, 0.98, "\n".join(lines), transform=ax.transAxes, va="top", ha="left", fontsize=9,
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8, "edgecolor": "0.7"})
    _finish(fig, ax, path, "search score", "benchmark test accuracy (%)", title)


def plot_search_accuracy(history: Sequence[dict], path: Path, title: str = "") -> bool:
    """The derived architecture's benchmark accuracies per epoch of a differentiable search (one line per
    metric), with the table's optimum dashed. ``history`` rows: ``{"epoch", "table": {metric: acc},
    "optimum": {metric: acc}}``. False (nothing written) when no row has table accuracies."""
    rows = [h for h in history if h.get("table")]
    if not rows or not is_main():
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=120)
    for k, metric in enumerate(rows[0]["table"]):
        color = f"C{k}"
        ax.plot([h["epoch"] for h in rows], [h["table"][metric] for h in rows], "-o", ms=3, color=color,
                label=metric)
        best = rows[-1].get("optimum", {}).get(metric)
        if best is not None:
            ax.axhline(best, color=color, ls="--", lw=0.8)
    _finish(fig, ax, path, "epoch", "test accuracy of the derived cell (%)",
            title or "derived architecture per epoch (dashed: the table's best)")
    return True


def plot_arch_weights(history: Sequence[dict], edges: Sequence[str], ops: Sequence[str], path: Path,
                      title: str = "") -> bool:
    """One panel per edge: the expected weight of every op per epoch (``history`` rows hold
    ``"epoch"`` and ``"weights"``, an edges x ops list)."""
    rows = [h for h in history if h.get("weights") is not None]
    if not rows or not is_main():
        return False
    plt = _pyplot()
    cols = min(3, len(edges))
    nrows = -(-len(edges) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 2.7 * nrows), dpi=120, squeeze=False, sharey=True)
    epochs = [h["epoch"] for h in rows]
    for e, name in enumerate(edges):
        ax = axes[e // cols][e % cols]
        for o, op in enumerate(ops):
            ax.plot(epochs, [h["weights"][e][o] for h in rows], lw=1.4, color=f"C{o}", label=op)
        ax.set_title(f"edge {name}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.set_xlabel("epoch", fontsize=8)
    for e in range(len(edges), nrows * cols):
        axes[e // cols][e % cols].axis("off")
    axes[0][0].set_ylabel("op weight")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(ops), fontsize=8)
    fig.suptitle(title or "architecture weights per edge", fontsize=10)
    _save(fig, path, rect=(0, 0.07, 1, 0.95))
    return True


def plot_gold_front(recorded: Sequence[dict], front: Sequence[dict], path: Path, title: str = "",
                    accuracy_label: str = "accuracy (%)") -> None:
    """Accuracy against MAdds of every recorded architecture, the front joined in red, each point labelled
    with its id and parameter count."""
    if not recorded or not is_main():
        return
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    ax.scatter([e["madds"] / 1e6 for e in recorded], [e["accuracy"] for e in recorded], s=18, alpha=0.6,
               color="tab:blue", label=f"recorded ({len(recorded)})")
    pts = sorted(front, key=lambda e: e["madds"])
    ax.plot([e["madds"] / 1e6 for e in pts], [e["accuracy"] for e in pts], "-o", color="tab:red", ms=4,
            label=f"Pareto front ({len(pts)})")
    for e in recorded:
        ax.annotate(f"{e['id']}: {e['params'] / 1e6:.3g}M p", (e["madds"] / 1e6, e["accuracy"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    _finish(fig, ax, path, "MAdds (M)", accuracy_label, title or "GOLD-NAS: architectures along the search")


def plot_gold_trajectory(trajectory: Sequence[dict], path: Path, title: str = "") -> None:
    """Per epoch: lambda (log scale) and the pruned-op count; MAdds of the current architecture below."""
    if not trajectory or not is_main():
        return
    plt = _pyplot()
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(6.4, 5.2), dpi=120, sharex=True)
    ep = [t["epoch"] for t in trajectory]
    ax.plot(ep, [t["lambda"] for t in trajectory], "-o", ms=3, color="tab:purple", label="lambda")
    ax.set_yscale("log")
    ax.set_ylabel("lambda")
    ax2 = ax.twinx()
    ax2.plot(ep, [t["pruned"] for t in trajectory], "-s", ms=3, color="tab:orange", label="pruned ops")
    ax2.set_ylabel("pruned ops")
    ax.grid(alpha=0.3)
    ax.set_title(title or "GOLD-NAS: lambda and pruning per epoch")
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(lines, [h.get_label() for h in lines], loc="upper left", fontsize=8)
    bx.plot(ep, [t["madds"] / 1e6 for t in trajectory], "-o", ms=3, color="tab:blue", label="architecture")
    bx.plot(ep, [t["expected_madds"] / 1e6 for t in trajectory], "--", color="tab:green",
            label="expected (gates)")
    bx.set_xlabel("epoch")
    bx.set_ylabel("MAdds (M)")
    bx.grid(alpha=0.3)
    bx.legend(loc="upper right", fontsize=8)
    _save(fig, path)


def plot_crnas_stages(rows: Sequence[dict], reference: Sequence[int], chosen: Sequence[int], metric: str,
                      path: Path, title: str = "") -> None:
    """CR-NAS's stage step: every scored allocation's score, best first (``rows``: ``{"blocks",
    "score"}``), the chosen allocation in red and the original one in grey."""
    if not rows or not is_main():
        return
    plt = _pyplot()
    rows = sorted(rows, key=lambda r: -r["score"])
    fig, ax = plt.subplots(figsize=(max(5.0, 0.35 * len(rows) + 2), 3.6), dpi=120)
    colours = ["tab:red" if tuple(r["blocks"]) == tuple(chosen) else
               "tab:gray" if tuple(r["blocks"]) == tuple(reference) else "tab:blue" for r in rows]
    ax.bar(range(len(rows)), [r["score"] for r in rows], color=colours)
    ax.set_xticks(range(len(rows)), ["-".join(map(str, r["blocks"])) for r in rows], rotation=90, fontsize=7)
    ax.set_xlabel("blocks per stage")
    ax.set_ylabel(metric)
    ax.set_title(f"{title}\nred: chosen, gray: original {'-'.join(map(str, reference))}", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    _save(fig, path)


def plot_crnas_beam(rows: Sequence[dict], metric: str, path: Path, title: str = "") -> None:
    """CR-NAS's spatial step: the score of every beam after each block's dilation is fixed (``rows``:
    ``{"block", "rank", "score"}``)."""
    if not rows or not is_main():
        return
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=120)
    for rank in sorted({r["rank"] for r in rows}):
        pts = [(r["block"], r["score"]) for r in rows if r["rank"] == rank]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", ms=3, label=f"beam {rank + 1}")
    _finish(fig, ax, path, "blocks whose dilation is fixed (the rest drawn per batch)", metric,
            title or "CR-NAS: spatial step (beam search)")


def plot_step_modes(rows: Sequence[dict], path: Path, title: str = "") -> bool:
    """One bar per search-step mode (bench/bench_toponas.py's step rows): time per step (left, each bar
    labelled with its speed-up against ``unmerged``) and activation memory saved for backward (right,
    labelled with the ratio). False when no row has a time."""
    rows = [r for r in rows if r.get("median_ms") is not None]
    if not rows or not is_main():
        return False
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 3.8), dpi=120)
    names = [r["mode"] for r in rows]
    colours = ["tab:gray" if n == "plain" else "tab:blue" if n == "unmerged" else "tab:green" for n in names]
    time_key = "cpu_ms" if all("cpu_ms" in r for r in rows) else "median_ms"
    times = [r[time_key] / 1e3 for r in rows]
    bars = left.bar(names, times, color=colours)
    for bar, r in zip(bars, rows):
        if r.get("speedup_vs_unmerged") is not None:
            left.annotate(f"{r['speedup_vs_unmerged']:.2f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                          ha="center", va="bottom", fontsize=8)
    left.set_ylabel("s per step" + (" (process CPU time)" if time_key == "cpu_ms" else ""))
    left.set_title("time per step (x: speed-up vs unmerged)")
    mib = [r.get("saved_activation_mib", 0.0) for r in rows]
    bars = right.bar(names, mib, color=colours)
    for bar, r in zip(bars, rows):
        if r.get("memory_vs_unmerged") is not None:
            right.annotate(f"{r['memory_vs_unmerged']:.2f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                           ha="center", va="bottom", fontsize=8)
    right.set_ylabel("MiB saved for backward")
    right.set_title("activation memory (ratio to unmerged)")
    for ax in (left, right):
        ax.grid(axis="y", alpha=0.3)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(title or "TopoNAS --simplify: one DrNAS search step per mode")
    _save(fig, path, rect=(0, 0, 1, 0.95))
    return True
