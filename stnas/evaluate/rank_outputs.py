"""The rank report of a scores file against NAS-Bench-201, as files: ``rank.json`` and ``rank.png``. One
function, used by ``stnas rank`` and by a search given ``--benchmark``, so both write the same report.

The report is :func:`stnas.evaluate.rank.rank_scores_csv`'s (Kendall tau, Spearman rho, top-k overlap
for k = 10, 50, 100, regret) plus the overlap of the top 5% and top 10%: ``top5pct_overlap`` and
``top10pct_overlap``, with the k they used (``top5pct_k``: ``max(1, round(0.05 n))``).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from stnas.evaluate.rank import rank_scores_csv, top_k_overlap

FRACTIONS = (0.05, 0.10)


def fraction_key(fraction: float) -> str:
    """``top5pct`` for 0.05."""
    return f"top{round(100 * fraction):d}pct"


def add_fraction_overlaps(report: dict, scores: Sequence[float], truth: Sequence[float],
                          fractions: Sequence[float] = FRACTIONS) -> dict:
    """Add ``top{p}pct_overlap`` and ``top{p}pct_k`` for every fraction to ``report`` (in place; the
    existing keys stay). k = max(1, round(fraction * n))."""
    n = len(scores)
    for f in fractions:
        if not 0 < f <= 1:
            raise ValueError(f"a top-fraction must be in (0, 1], got {f}")
        k = max(1, round(f * n))
        report[f"{fraction_key(f)}_k"] = k
        report[f"{fraction_key(f)}_overlap"] = top_k_overlap(scores, truth, k) if n else float("nan")
    return report


def write_rank_report(scores_csv, table, out, metric: str = "cifar10", score_column: str | None = None,
                      title: str | None = None) -> dict:
    """Rank ``scores_csv`` against ``table`` (an NB201Table or its path) on ``metric``; write
    ``out/rank.json`` and ``out/rank.png`` (score against truth); return the report."""
    from stnas.io import write_json
    from stnas.plots import plot_rank_scatter

    scores_csv, out = Path(scores_csv), Path(out)
    report, pairs = rank_scores_csv(scores_csv, table, metric=metric, score_column=score_column)
    scores, truth = [p[0] for p in pairs], [p[1] for p in pairs]
    add_fraction_overlaps(report, scores, truth)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "rank.json", report)
    plot_rank_scatter(scores, truth, out / "rank.png", title=title or f"{scores_csv.name} vs NAS-Bench-201 {metric}",
                      report=report)
    return report
