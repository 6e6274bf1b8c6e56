"""bench/bench_toponas.py end to end on a small space: the step rows a GPU run relies on (every mode, the
AutoDL-style baseline, FLOPs, memory, ratios) and what they must show whatever the machine's speed."""
from __future__ import annotations

import json

import pytest

from bench import bench_toponas

MODES = ("plain", "unmerged", "merged", "merged-nokn", "exact")


@pytest.fixture(scope="module")
def step_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "toponas.json"
    png = out.with_suffix(".png")
    bench_toponas.main(["--device", "cpu", "--space", "nb201-demo", "--batch", "4", "--parts", "skip_pool,step",
                        "--warmup", "1", "--reps", "2", "--out", str(out), "--plot", str(png)])
    data = json.loads(out.read_text())
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data["_path"] = str(out)
    return {r["mode"]: r for r in data["rows"] if r["part"] == "step"}, data


def test_every_step_mode_runs_and_is_timed_with_its_ratios(step_rows):
    rows, data = step_rows
    assert tuple(rows) == MODES
    for mode, r in rows.items():
        assert "error" not in r, (mode, r.get("error"))
        assert r["reps"] == 2 and r["median_ms"] > 0 and r["step_gflop"] > 0
        assert r["speedup_vs_unmerged"] == pytest.approx(rows["unmerged"]["median_ms"] / r["median_ms"])
        assert r["speedup_vs_plain"] == pytest.approx(rows["plain"]["median_ms"] / r["median_ms"])
    assert data["config"]["step_floor"]["flops"].startswith("torch.utils.flop_counter")


def test_the_simplified_step_computes_less_and_saves_less_than_the_unmerged_one(step_rows):
    """Counts, not times: the merged step skips the 1x1 convs and, in the architecture step, the 3x3
    weight gradient (MixedConv); the exact configuration keeps autograd through the mixed kernel, so it
    pays that weight gradient. Saved activations: plain > unmerged > merged > exact."""
    rows, _ = step_rows
    gflop = {m: r["step_gflop"] for m, r in rows.items()}
    assert gflop["merged"] == pytest.approx(gflop["merged-nokn"])
    assert gflop["merged"] < gflop["unmerged"] < gflop["plain"]
    assert gflop["exact"] > gflop["merged"]
    mib = {m: r["saved_activation_mib"] for m, r in rows.items()}
    assert mib["plain"] > mib["unmerged"] > mib["merged"] > mib["exact"]


def test_an_unknown_mode_is_refused_in_one_line(tmp_path):
    with pytest.raises(SystemExit, match="unknown mode 'fused'"):
        bench_toponas.main(["--device", "cpu", "--modes", "unmerged,fused", "--out", str(tmp_path / "x.json")])


def test_the_skip_pool_part_times_every_impl_that_runs_here_against_eager(step_rows):
    _, data = step_rows
    rows = [r for r in data["rows"] if r["part"] == "skip_pool"]
    assert {r["channels"] for r in rows} == {8, 16, 32}  # nb201-demo's three stage widths
    for r in rows:
        if r["impl"] == "triton":  # the CPU runs Triton only as its interpreter: not timed
            assert "skipped" in r["error"]
            continue
        assert "error" not in r, r
        assert r["floor_bytes"] == 5 * 4 * 4 * r["channels"] * r["size"] ** 2  # 5 fp32 tensors of batch 4
        assert r["speedup_vs_eager"] > 0 and 0 < r["frac_copy_bw"]


def test_replot_draws_an_earlier_run_and_refuses_what_it_cannot_read(step_rows, tmp_path):
    _, data = step_rows
    png = tmp_path / "again.png"
    bench_toponas.main(["--replot", data["_path"], "--plot", str(png)])
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit, match="needs --plot"):
        bench_toponas.main(["--replot", data["_path"]])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SystemExit, match="cannot read"):
        bench_toponas.main(["--replot", str(bad), "--plot", str(png)])
