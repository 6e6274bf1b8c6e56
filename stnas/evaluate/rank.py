"""Rank metrics: how well a search's scores order architectures against a benchmark's ground truth.

All metrics take two equally long 1-D sequences of numbers (a score and the true accuracy per
architecture) and are numpy only, vectorised, and O(n log n): fit for all 15,625 cells of NAS-Bench-201.
A metric that is undefined for its input (fewer than two items, a constant list, a NaN anywhere in a
correlation, a k larger than the list) is NaN, never an exception; lists of different lengths are a
ValueError.

    >>> report, pairs = rank_scores_csv("runs/nb201/scores.csv", "../shared/data/nb201/nats_bench.csv")
    >>> report["kendall_tau"], report["top10_overlap"], report["regret"]

:func:`kendall_tau` is Kendall's tau-b and :func:`spearman_rho` Spearman's rho with average ranks for
ties, both as scipy.stats computes them (``kendalltau``, ``spearmanr``); scipy is not needed.
"""
from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stnas.benchmarks.nb201 import BenchmarkError, NB201Table
from stnas.spaces.cell import CellArch
from stnas.spaces.errors import SpaceError

SCORE_COLUMNS = ("score", "mean")  # the score column when none is named, first found
ARCH_COLUMNS = ("arch", "nb201")   # the architecture column when none is named, first found
DEFAULT_KS = (10, 50, 100)

__all__ = ["kendall_tau", "spearman_rho", "top_k_overlap", "regret", "rank_report", "rank_scores_csv",
           "average_ranks"]


# ---------------------------------------------------------------------- inputs

def _vector(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of numbers, got an array of shape {a.shape}")
    return a


def _pair(a, b, what: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = _vector(a, f"{what}: first list"), _vector(b, f"{what}: second list")
    if a.shape != b.shape:
        raise ValueError(f"{what}: the two lists differ in length ({a.size} and {b.size})")
    return a, b


# ---------------------------------------------------------------------- ranks

def _dense_ranks(a: np.ndarray) -> np.ndarray:
    """0-based dense ranks (equal values share one rank, ranks are consecutive)."""
    _, inverse = np.unique(a, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64)


def average_ranks(x) -> np.ndarray:
    """1-based ranks, ties given the mean of the ranks they span (scipy.stats.rankdata 'average')."""
    a = _vector(x, "average_ranks")
    n = a.size
    if n == 0:
        return np.empty(0)
    order = np.argsort(a, kind="mergesort")
    s = a[order]
    new = np.r_[True, s[1:] != s[:-1]]
    dense = np.empty(n, dtype=np.int64)
    dense[order] = np.cumsum(new)                        # 1-based dense rank of every item
    bounds = np.r_[np.flatnonzero(new), n]               # start of every group of equal values, then n
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)  # mean of the 1-based positions start+1..end


def _tied_pairs(ranks: np.ndarray) -> int:
    """Pairs with equal values: sum over groups of c (c - 1) / 2."""
    counts = np.bincount(ranks)
    return int((counts * (counts - 1) // 2).sum())


def _inversions(y: np.ndarray) -> int:
    """Pairs i < j with y[i] > y[j] (strictly), for non-negative integer ``y``: a bottom-up merge sort,
    one vectorised pass per level (O(n log^2 n) element operations in numpy, no Python loop per item)."""
    n = y.size
    if n < 2:
        return 0
    vals = y.astype(np.int64)
    span = int(vals.max()) + 1  # keys block * span + value keep every block's values apart, in order
    idx = np.arange(n, dtype=np.int64)
    total, w = 0, 1
    while w < n:
        block = idx // (2 * w)
        left = (idx % (2 * w)) < w
        keys = block * span + vals  # each half-block is sorted, so the left halves are sorted globally
        lkeys = keys[left]
        rkeys, rblock = keys[~left], block[~left]
        # A right half exists only when its left half is full (w items): left items > v = w - items <= v.
        not_greater = (np.searchsorted(lkeys, rkeys, side="right")
                       - np.searchsorted(lkeys, rblock * span, side="left"))
        total += int((w - not_greater).sum())
        vals = np.sort(keys, kind="stable") - block * span  # merge: the blocks keep their places
        w *= 2
    return total


# ---------------------------------------------------------------------- correlations

def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b between two score lists (ties handled as in scipy.stats.kendalltau), in
    O(n log n): (concordant - discordant) / sqrt((n0 - ties_a) (n0 - ties_b)) with n0 = n (n - 1) / 2.
    NaN when fewer than two items, when either list is constant, or when either holds a NaN."""
    x, y = _pair(a, b, "kendall_tau")
    n = x.size
    if n < 2 or np.isnan(x).any() or np.isnan(y).any():
        return math.nan
    rx, ry = _dense_ranks(x), _dense_ranks(y)
    total = n * (n - 1) // 2
    ties_x, ties_y = _tied_pairs(rx), _tied_pairs(ry)
    if ties_x == total or ties_y == total:
        return math.nan
    order = np.lexsort((ry, rx))  # by x, then y: pairs tied in x are never inversions of y
    rx, ry = rx[order], ry[order]
    joint = np.flatnonzero(np.r_[True, (rx[1:] != rx[:-1]) | (ry[1:] != ry[:-1]), True])
    c = np.diff(joint)
    ties_xy = int((c * (c - 1) // 2).sum())
    discordant = _inversions(ry)
    # concordant - discordant = (pairs tied in neither) - 2 * discordant
    con_minus_dis = total - ties_x - ties_y + ties_xy - 2 * discordant
    tau = con_minus_dis / math.sqrt(total - ties_x) / math.sqrt(total - ties_y)
    return float(min(1.0, max(-1.0, tau)))


def spearman_rho(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho: the Pearson correlation of the average ranks (as scipy.stats.spearmanr). NaN
    when fewer than two items, when either list is constant, or when either holds a NaN."""
    x, y = _pair(a, b, "spearman_rho")
    if x.size < 2 or np.isnan(x).any() or np.isnan(y).any():
        return math.nan
    rx, ry = average_ranks(x), average_ranks(y)
    rx -= rx.mean()
    ry -= ry.mean()
    sx, sy = float(rx @ rx), float(ry @ ry)
    if sx == 0.0 or sy == 0.0:
        return math.nan
    return float(min(1.0, max(-1.0, float(rx @ ry) / math.sqrt(sx * sy))))


# ---------------------------------------------------------------------- the search's pick

def _top(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values; NaN counts as the lowest, ties go to the earlier item."""
    keyed = np.where(np.isnan(values), -np.inf, values)
    order = np.lexsort((np.arange(values.size), -keyed))  # descending value, then ascending position
    return order[:k]


def top_k_overlap(scores: Sequence[float], truth: Sequence[float], k: int) -> float:
    """The fraction of the true top-k (by ``truth``) that is in the predicted top-k (by ``scores``): 1
    when the search's k best are the benchmark's k best. Ties at the cut go to the earlier item (file
    order), NaN ranks lowest. NaN when k > n; k must be a positive integer."""
    s, t = _pair(scores, truth, "top_k_overlap")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"top_k_overlap: k must be a positive integer, got {k!r}")
    k = int(k)
    if k > s.size:
        return math.nan
    found = np.intersect1d(_top(s, k), _top(t, k), assume_unique=True)
    return found.size / k


def regret(scores: Sequence[float], truth: Sequence[float]) -> float:
    """The truth of the best-scored item minus the best truth (so <= 0, and 0 when the search picks
    the benchmark's best): ``truth[argmax(scores)] - max(truth)``, in the truth's unit (percentage
    points of accuracy for NAS-Bench-201). Ties in the score go to the earlier item; NaN scores are never
    picked and NaN truths are ignored for the maximum. NaN when empty, or when every score or the picked
    item's truth is NaN."""
    s, t = _pair(scores, truth, "regret")
    if s.size == 0 or np.isnan(s).all() or np.isnan(t).all():
        return math.nan
    picked = t[int(_top(s, 1)[0])]
    return float(picked - np.nanmax(t))


def rank_report(scores: Sequence[float], truth: Sequence[float], ks: Sequence[int] = DEFAULT_KS) -> dict:
    """Every metric of this module in one dict: ``n``, ``kendall_tau``, ``spearman_rho``, ``top{k}_overlap``
    for every k of ``ks``, ``regret``, and the truths behind the regret: ``picked_truth`` (the truth of the
    best-scored item) and ``best_truth``. Undefined metrics are NaN."""
    s, t = _pair(scores, truth, "rank_report")
    report: dict = {"n": int(s.size), "kendall_tau": kendall_tau(s, t), "spearman_rho": spearman_rho(s, t)}
    for k in ks:
        report[f"top{int(k)}_overlap"] = top_k_overlap(s, t, int(k))
    report["regret"] = regret(s, t)
    defined = s.size and not np.isnan(s).all() and not np.isnan(t).all()
    report["picked_truth"] = float(t[int(_top(s, 1)[0])]) if defined else math.nan
    report["best_truth"] = float(np.nanmax(t)) if defined else math.nan
    return report


# ---------------------------------------------------------------------- a search's scores against the table

def _parse_arch(text: str) -> CellArch:
    """An NB201 arch string, or JSON: an object ``{"ops": [...]}`` / ``{"nb201": "..."}`` (what ``stnas
    search`` writes) or a JSON string holding an arch string."""
    text = text.strip()
    if text[:1] in ("{", '"'):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpaceError(f"not valid JSON ({e})") from None
        if isinstance(data, str):
            return CellArch.from_nb201(data)
        return CellArch.from_dict(data)
    return CellArch.from_nb201(text)


def _pick_column(header: list[str], wanted: str | None, defaults: Sequence[str], what: str, path: Path) -> str:
    if wanted is not None:
        if wanted not in header:
            raise ValueError(f"{path}, line 1: no {what} column {wanted!r} (the header has {', '.join(header)})")
        return wanted
    for name in defaults:
        if name in header:
            return name
    raise ValueError(f"{path}, line 1: no {what} column: expected one of {', '.join(defaults)} or name it "
                     f"(the header has {', '.join(header)})")


def rank_scores_csv(scores_csv, table, metric: str = "cifar10", score_column: str | None = None,
                    arch_column: str | None = None, ks: Sequence[int] = DEFAULT_KS):
    """Rank a search's scores against NAS-Bench-201's table.

    ``scores_csv``: a CSV with a header (``scores.csv`` of ``stnas search``: columns ``score, madds,
    params, snapshot_accuracies, arch``), one architecture per row, in column ``arch_column`` (default:
    ``arch``, else ``nb201``) as an NB201 arch string or as JSON, and its score in ``score_column``
    (default: ``score``, else ``mean``). ``table``: an :class:`NB201Table` or the path of its CSV.

    Returns ``(report, pairs)``: :func:`rank_report` of the scores against the table's accuracy (percent)
    on ``metric`` plus ``scores_csv``, ``table``, ``metric``, ``score_column`` and ``arch_column``, and
    ``pairs``, the (score, truth) of every row in file order. A missing file or column, an empty file,
    a score that is not a number or an arch that is not one is a ValueError naming the file (and line);
    an arch that the table lacks, a BenchmarkError naming both files and the line.
    """
    path = Path(scores_csv)
    table = table if isinstance(table, NB201Table) else NB201Table.load(table)
    table.check_metric(metric)
    if not path.is_file():
        raise ValueError(f"scores file {path} does not exist" if not path.exists() else f"scores file {path} "
                         "is not a file")
    pairs: list[tuple[float, float]] = []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise ValueError(f"scores file {path} is empty (no header line)")
            header = [h.strip() for h in header]
            score_col = _pick_column(header, score_column, SCORE_COLUMNS, "score", path)
            arch_col = _pick_column(header, arch_column, ARCH_COLUMNS, "architecture", path)
            si, ai = header.index(score_col), header.index(arch_col)
            for row in reader:
                line = reader.line_num
                if not row or not any(cell.strip() for cell in row):
                    continue  # a blank line
                if len(row) != len(header):
                    raise ValueError(f"{path}, line {line}: {len(row)} field(s), the header has {len(header)}")
                try:
                    score = float(row[si])
                except ValueError:
                    raise ValueError(f"{path}, line {line}: column {score_col}: {row[si]!r} is not a number") from None
                try:
                    arch = _parse_arch(row[ai])
                except SpaceError as e:
                    raise ValueError(f"{path}, line {line}: column {arch_col}: {e}") from None
                if arch not in table:
                    raise BenchmarkError(f"{path}, line {line}: architecture {arch} is not in the NAS-Bench-201 "
                                         f"table {table.path} ({len(table)} rows)")
                pairs.append((score, table.lookup(arch, metric)))
    except UnicodeDecodeError as e:
        raise ValueError(f"scores file {path}: not a UTF-8 text file ({e})") from None
    except csv.Error as e:
        raise ValueError(f"scores file {path}: not a readable CSV file ({e})") from None
    if not pairs:
        raise ValueError(f"scores file {path} has a header but no rows")
    scores, truth = zip(*pairs)
    report = rank_report(scores, truth, ks)
    report.update({"scores_csv": str(path), "table": str(table.path), "metric": metric,
                   "score_column": score_col, "arch_column": arch_col})
    return report, pairs
