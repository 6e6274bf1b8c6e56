"""Rank metrics (stnas.evaluate.rank) against scipy.stats and hand-computed cases, a search's scores.csv
ranked against a small NAS-Bench-201 table written here, and the rank scatter plot."""
import csv
import json
import math
import time
import warnings

import numpy as np
import pytest

from stnas.benchmarks import BenchmarkError, NB201Table
from stnas.evaluate.rank import (average_ranks, kendall_tau, rank_report, rank_scores_csv, regret, spearman_rho,
                                 top_k_overlap)
from stnas.spaces import CellArch

TABLE_HEADER = ["CIFAR10TestAccuracy200Epochs", "CIFAR100TestAccuracy200Epochs", "ImageNetTestAccuracy200Epochs",
                "ArchitectureString", "UniqueString"]
ARCHS = [CellArch((op,) * 6) for op in ("nor_conv_3x3", "nor_conv_1x1", "skip_connect", "avg_pool_3x3")]
C10 = [93.5, 90.1, 80.2, 85.0]


def _inputs(rng, n, ties):
    if ties:  # few distinct values: many ties in each list and jointly
        return rng.integers(0, 4, n).astype(float), rng.integers(0, 6, n).astype(float)
    a = rng.normal(size=n)
    return a, 0.5 * a + rng.normal(size=n)


def _same(x, y, tol=1e-12):
    return (math.isnan(x) and math.isnan(y)) or abs(x - y) <= tol


# ---------------------------------------------------------------------- against scipy

@pytest.mark.parametrize("n", [2, 3, 59, 1000])
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_correlations_match_scipy(n, ties):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(n + 7 * ties)
    for _ in range(10 if n < 1000 else 3):
        a, b = _inputs(rng, n, ties)
        with warnings.catch_warnings():  # scipy warns on constant input, the NaN case compared here
            warnings.simplefilter("ignore")
            want_tau, want_rho = stats.kendalltau(a, b).statistic, stats.spearmanr(a, b).statistic
        assert _same(kendall_tau(a, b), float(want_tau)), (a, b)
        assert _same(spearman_rho(a, b), float(want_rho)), (a, b)


def test_correlations_of_python_lists_and_ints():
    stats = pytest.importorskip("scipy.stats")
    a, b = [3, 1, 2, 2, 5, 4, 4], [1, 2, 2, 3, 9, 4, 0]
    assert _same(kendall_tau(a, b), float(stats.kendalltau(a, b).statistic))
    assert _same(spearman_rho(a, b), float(stats.spearmanr(a, b).statistic))


def test_average_ranks_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    x = rng.integers(0, 10, 101).astype(float)
    np.testing.assert_array_equal(average_ranks(x), stats.rankdata(x))
    assert average_ranks([]).size == 0


def test_kendall_tau_agrees_with_the_quadratic_definition():
    """The O(n^2) pair count that the first kendall_tau of stnas used, on ties and reversed lists."""
    def slow(a, b):
        c = d = ta = tb = 0
        for i in range(len(a)):
            for j in range(i + 1, len(a)):
                da, db = a[i] - a[j], b[i] - b[j]
                if da == 0 and db == 0:
                    continue
                if da == 0:
                    ta += 1
                elif db == 0:
                    tb += 1
                elif (da > 0) == (db > 0):
                    c += 1
                else:
                    d += 1
        den = math.sqrt((c + d + ta) * (c + d + tb))
        return (c - d) / den if den else math.nan

    rng = np.random.default_rng(5)
    for n in (2, 3, 4, 17, 64, 65):
        a, b = rng.integers(0, 5, n).tolist(), rng.integers(0, 5, n).tolist()
        assert _same(kendall_tau(a, b), slow(a, b))
    assert kendall_tau(range(50), range(50)) == 1.0
    assert kendall_tau(range(50), range(50, 0, -1)) == -1.0


def test_kendall_tau_is_fast_on_the_whole_benchmark():
    rng = np.random.default_rng(0)
    a = rng.normal(size=15625)
    b = a + rng.normal(size=15625)
    t0 = time.perf_counter()
    tau = kendall_tau(a, b)
    assert time.perf_counter() - t0 < 2.0
    assert 0.3 < tau < 0.7


# ---------------------------------------------------------------------- undefined cases

@pytest.mark.parametrize("fn", [kendall_tau, spearman_rho])
def test_undefined_correlations_are_nan(fn):
    assert math.isnan(fn([], []))
    assert math.isnan(fn([1.0], [2.0]))
    assert math.isnan(fn([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))  # constant input
    assert math.isnan(fn([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]))
    assert math.isnan(fn([1.0, float("nan"), 3.0], [1.0, 2.0, 3.0]))
    assert fn([1.0, 2.0], [3.0, 4.0]) == 1.0
    assert fn([1.0, 2.0], [4.0, 3.0]) == -1.0


@pytest.mark.parametrize("fn", [kendall_tau, spearman_rho, regret, rank_report])
def test_lists_of_different_lengths_are_a_value_error(fn):
    with pytest.raises(ValueError, match="differ in length"):
        fn([1.0, 2.0, 3.0], [1.0, 2.0])


def test_rank_report_of_degenerate_input_is_nan_not_a_crash():
    for scores, truth in (([], []), ([1.0], [50.0]), ([2.0, 2.0, 2.0], [1.0, 2.0, 3.0])):
        report = rank_report(scores, truth)
        assert report["n"] == len(scores)
        assert math.isnan(report["kendall_tau"]) and math.isnan(report["spearman_rho"])
        assert all(math.isnan(report[f"top{k}_overlap"]) for k in (10, 50, 100))
    assert math.isnan(rank_report([], [])["regret"])
    assert rank_report([1.0], [50.0])["regret"] == 0.0


# ---------------------------------------------------------------------- top-k overlap and regret

def test_top_k_overlap_by_hand():
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    truth = [70.0, 90.0, 60.0, 80.0, 50.0]  # true order: 1, 3, 0, 2, 4
    assert top_k_overlap(scores, truth, 1) == 0.0        # predicted {0}, true {1}
    assert top_k_overlap(scores, truth, 2) == 0.5        # {0, 1} and {1, 3}
    assert top_k_overlap(scores, truth, 3) == 2 / 3      # {0, 1, 2} and {1, 3, 0}
    assert top_k_overlap(scores, truth, 4) == 1.0        # {0, 1, 2, 3} and {1, 3, 0, 2}
    assert top_k_overlap(scores, truth, 5) == 1.0
    assert math.isnan(top_k_overlap(scores, truth, 6))   # k > n
    assert top_k_overlap(truth, truth, 2) == 1.0
    with pytest.raises(ValueError, match="positive integer"):
        top_k_overlap(scores, truth, 0)


def test_top_k_ties_go_to_the_earlier_item_and_nan_ranks_last():
    assert top_k_overlap([1.0, 1.0, 0.0], [0.0, 9.0, 5.0], 1) == 0.0  # the tie picks item 0, the truth item 1
    assert top_k_overlap([float("nan"), 0.1, 0.2], [9.0, 1.0, 2.0], 2) == 0.5  # NaN never in the top 2


def test_regret_by_hand():
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    truth = [70.0, 90.0, 60.0, 80.0, 50.0]
    assert regret(scores, truth) == 70.0 - 90.0
    assert regret([0.1, 0.3, 0.2], [1.0, 9.0, 3.0]) == 0.0
    assert regret([0.3, 0.3, 0.2], [1.0, 9.0, 3.0]) == -8.0   # the tie picks item 0
    assert regret([float("nan"), 0.1], [9.0, 4.0]) == -5.0    # a NaN score is never picked
    assert math.isnan(regret([float("nan")] * 2, [1.0, 2.0]))


def test_rank_report_keys_and_values():
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    truth = [70.0, 90.0, 60.0, 80.0, 50.0]
    report = rank_report(scores, truth, ks=(1, 2, 10))
    assert list(report) == ["n", "kendall_tau", "spearman_rho", "top1_overlap", "top2_overlap", "top10_overlap",
                            "regret", "picked_truth", "best_truth"]
    assert report["n"] == 5
    assert report["kendall_tau"] == kendall_tau(scores, truth)
    assert report["top2_overlap"] == 0.5 and math.isnan(report["top10_overlap"])
    assert report["regret"] == -20.0 and report["picked_truth"] == 70.0 and report["best_truth"] == 90.0
    json.dumps(report)  # plain numbers: the report is written as JSON


# ---------------------------------------------------------------------- scores.csv against a table

@pytest.fixture
def table_csv(tmp_path):
    path = tmp_path / "nb201.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(TABLE_HEADER)
        for arch, acc in zip(ARCHS, C10):
            w.writerow([acc, acc - 20, acc - 50, arch.to_nb201(), f"u{arch.ops[0]}"])
    return path


def _write(path, header, rows):
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_rank_scores_csv_of_a_search_scores_file(tmp_path, table_csv):
    """The columns of stnas search's scores.csv; the arch as its JSON."""
    scores = [0.80, 0.75, 0.40, 0.60]
    rows = [[s, 1000, 10, json.dumps([s]), json.dumps(a.to_dict())] for a, s in zip(ARCHS, scores)]
    path = _write(tmp_path / "scores.csv", ["score", "madds", "params", "snapshot_accuracies", "arch"], rows)
    report, pairs = rank_scores_csv(path, table_csv)
    assert pairs == list(zip(scores, C10))
    assert report["n"] == 4 and report["kendall_tau"] == 1.0 and report["spearman_rho"] == 1.0
    assert report["regret"] == 0.0
    assert report["metric"] == "cifar10" and report["score_column"] == "score" and report["arch_column"] == "arch"
    # another metric, the table given as an NB201Table
    report100, pairs100 = rank_scores_csv(path, NB201Table.load(table_csv), metric="cifar100")
    assert [t for _, t in pairs100] == [acc - 20 for acc in C10]


def test_rank_scores_csv_with_arch_strings_and_named_columns(tmp_path, table_csv):
    rows = [[a.to_nb201(), s, -s] for a, s in zip(ARCHS, [1.0, 2.0, 3.0, 4.0])]
    path = _write(tmp_path / "s.csv", ["nb201", "mean", "other"], rows)
    report, pairs = rank_scores_csv(path, table_csv)  # defaults: `mean` for the score, `nb201` for the arch
    assert report["score_column"] == "mean" and report["arch_column"] == "nb201"
    assert [s for s, _ in pairs] == [1.0, 2.0, 3.0, 4.0]
    report2, pairs2 = rank_scores_csv(path, table_csv, score_column="other", arch_column="nb201")
    assert [s for s, _ in pairs2] == [-1.0, -2.0, -3.0, -4.0]
    assert report2["kendall_tau"] == -report["kendall_tau"]
    # an arch string given as a JSON string
    path3 = _write(tmp_path / "s3.csv", ["arch", "score"], [[json.dumps(a.to_nb201()), 1.0] for a in ARCHS[:2]])
    assert [t for _, t in rank_scores_csv(path3, table_csv)[1]] == C10[:2]


def test_rank_scores_csv_errors(tmp_path, table_csv):
    good = ARCHS[0].to_nb201()
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"empty\.csv is empty"):
        rank_scores_csv(empty, table_csv)
    header_only = _write(tmp_path / "header.csv", ["arch", "score"], [])
    with pytest.raises(ValueError, match=r"header\.csv has a header but no rows"):
        rank_scores_csv(header_only, table_csv)
    no_score = _write(tmp_path / "noscore.csv", ["arch", "acc"], [[good, 1.0]])
    with pytest.raises(ValueError, match=r"noscore\.csv, line 1: no score column.*header has arch, acc"):
        rank_scores_csv(no_score, table_csv)
    with pytest.raises(ValueError, match=r"line 1: no score column 'foo'"):
        rank_scores_csv(no_score, table_csv, score_column="foo")
    no_arch = _write(tmp_path / "noarch.csv", ["genotype", "score"], [[good, 1.0]])
    with pytest.raises(ValueError, match=r"noarch\.csv, line 1: no architecture column"):
        rank_scores_csv(no_arch, table_csv)
    unknown = _write(tmp_path / "unknown.csv", ["arch", "score"],
                     [[good, 1.0], [CellArch(("none",) * 6).to_nb201(), 2.0]])
    with pytest.raises(BenchmarkError, match=r"unknown\.csv, line 3: architecture .* is not in the NAS-Bench-201 table"):
        rank_scores_csv(unknown, table_csv)
    bad_arch = _write(tmp_path / "badarch.csv", ["arch", "score"], [[good, 1.0], ["|nor_conv_3x3~1|", 2.0]])
    with pytest.raises(ValueError, match=r"badarch\.csv, line 3: column arch"):
        rank_scores_csv(bad_arch, table_csv)
    bad_json = _write(tmp_path / "badjson.csv", ["arch", "score"], [['{"ops": [', 2.0]])
    with pytest.raises(ValueError, match=r"badjson\.csv, line 2: column arch: not valid JSON"):
        rank_scores_csv(bad_json, table_csv)
    bad_score = _write(tmp_path / "badscore.csv", ["arch", "score"], [[good, "high"]])
    with pytest.raises(ValueError, match=r"badscore\.csv, line 2: column score: 'high' is not a number"):
        rank_scores_csv(bad_score, table_csv)
    with pytest.raises(ValueError, match="does not exist"):
        rank_scores_csv(tmp_path / "missing.csv", table_csv)
    with pytest.raises(BenchmarkError, match="unknown metric"):
        rank_scores_csv(bad_score, table_csv, metric="mnist")
    # every error is one line
    for path in (empty, no_score, unknown, bad_score):
        with pytest.raises(ValueError) as info:
            rank_scores_csv(path, table_csv)
        assert "\n" not in str(info.value)


# ---------------------------------------------------------------------- the plot

def test_plot_rank_scatter_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from stnas.plots import plot_rank_scatter

    rng = np.random.default_rng(1)
    scores = rng.normal(size=40)
    truth = 80 + 5 * scores + rng.normal(size=40)
    report = rank_report(scores, truth)
    path = tmp_path / "rank.png"
    plot_rank_scatter(scores, truth, path, "supernet vs NB201", report)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # NaN metrics (a constant score) and no report given
    flat = tmp_path / "flat.png"
    plot_rank_scatter([1.0, 1.0, 1.0], [50.0, 60.0, 70.0], flat, "constant")
    assert flat.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

