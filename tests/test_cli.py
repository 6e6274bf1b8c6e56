"""The stnas command on tiny data: search, resume, evaluate, export, retrain, space info, bad input."""
import csv
import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

from stnas.cli import main
from stnas.io import load_checkpoint
from stnas.spaces import Arch, Space
from stnas.supernet import build
from tests.conftest import colour_folder

TINY = ["--burn-in", "4", "--snapshots", "2", "--snapshot-every", "2", "--batch-size", "16", "--population", "4",
        "--generations", "1", "--no-progress", "--threads", "2"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """10 classes of 32x32 JPEGs whose colour says the class (learnable), 8 train and 3 val each."""
    return colour_folder(tmp_path_factory.mktemp("tiny"), 10, {"train": 8, "val": 3}, size=32, step=25)


@pytest.fixture(scope="module")
def search_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    budget = Space.load("demo").madds_range()[0] * 1.3
    rc = main(["search", "--space", "demo", "--data", str(tiny_data), "--out", str(out),
               "--budget-madds", f"{budget / 1e6:.4f}M", *TINY])
    assert rc == 0
    return out, budget


def test_search_writes_every_output_within_budget(search_run):
    out, budget = search_run
    for name in ("supernet.ckpt", "scores.csv", "pareto.csv", "pareto.png", "stability.json", "search.log",
                 "config.json", "summary.json"):
        assert (out / name).is_file(), name
    best_files = list(out.glob("best_*.json"))
    assert len(best_files) == 1
    best = json.loads(best_files[0].read_text())
    space = Space.load("demo")
    arch = space.validate(Arch.from_dict(best["arch"]))
    assert space.madds(arch) == best["madds"] <= budget
    with (out / "scores.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= 4 and all(len(json.loads(r["snapshot_accuracies"])) == 2 for r in rows)
    assert max(float(r["score"]) for r in rows if int(r["madds"]) <= budget) == pytest.approx(best["score"], abs=1e-6)
    stab = json.loads((out / "stability.json").read_text())
    run = stab["runs"]["sgld-seed0"]
    assert len(run["scores"]) == len(stab["architectures"]) >= 2
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_of_a_finished_search_retrains_nothing(search_run, tiny_data):
    out, budget = search_run
    before = (out / "scores.csv").read_text()
    rc = main(["search", "--space", "demo", "--data", str(tiny_data), "--out", str(out), "--resume",
               "--budget-madds", f"{budget / 1e6:.4f}M", *TINY])
    assert rc == 0
    assert (out / "scores.csv").read_text() == before


def test_search_refuses_to_overwrite_a_run_without_resume(search_run, tiny_data, capsys):
    out, _ = search_run
    assert main(["search", "--space", "demo", "--data", str(tiny_data), "--out", str(out), *TINY]) == 2
    assert "--resume" in capsys.readouterr().err


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_refused_search_changes_nothing_in_out(search_run, tiny_data, capsys):
    """Refused without --resume, or with --resume and other settings: config.json, the log and every
    other file in --out stay byte for byte what they were (the old code wrote config.json first)."""
    out, budget = search_run
    before = _files(out)
    assert main(["search", "--space", "demo", "--data", str(tiny_data), "--out", str(out), *TINY]) == 2
    assert "--resume" in capsys.readouterr().err
    assert _files(out) == before
    changed = [a if a != "4" else "6" for a in TINY]  # --population 6 (and --burn-in 6)
    assert main(["search", "--space", "demo", "--data", str(tiny_data), "--out", str(out), "--resume",
                 "--budget-madds", f"{budget / 1e6:.4f}M", *changed]) == 2
    err = capsys.readouterr().err
    assert "evolution.population (saved 4, now 6)" in err and "--resume with other settings" in err, err
    assert [line for line in err.splitlines() if "error" in line] == [err.strip().splitlines()[-1]], err
    assert _files(out) == before


def test_evaluate_export_and_retrain(search_run, tiny_data, tmp_path):
    out, _ = search_run
    best = next(out.glob("best_*.json"))
    csv_path = tmp_path / "scores.csv"
    assert main(["evaluate", "--checkpoint", str(out / "supernet.ckpt"), "--archs", str(best), "--data",
                 str(tiny_data), "--csv", str(csv_path), "--no-progress"]) == 0
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 1 and float(rows[0]["score"]) == pytest.approx(json.loads(best.read_text())["score"], abs=1e-6)

    model_path = tmp_path / "model.pt"
    assert main(["export", "--checkpoint", str(out / "supernet.ckpt"), "--arch", str(best), "--data",
                 str(tiny_data), "--out", str(model_path)]) == 0
    ck = load_checkpoint(model_path, kind="model")
    space = Space.from_dict(ck["space"])
    model = build(Arch.from_dict(ck["arch"]), space)
    model.load_state_dict(ck["model"])
    assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)

    rt = tmp_path / "retrain"
    assert main(["retrain", str(best), "--data", str(tiny_data), "--epochs", "2", "--batch-size", "16",
                 "--out", str(rt), "--no-progress"]) == 0
    result = json.loads((rt / "result.json").read_text())
    assert result["epochs"] == 2 and 0 <= result["val_top1"] <= 1
    assert (rt / "curves.png").is_file() and len(list(csv.DictReader((rt / "history.csv").open()))) == 2
    assert json.loads((rt / "config.json").read_text())["retrain"]["epochs"] == 2
    before = _files(rt)
    for extra in ([], ["--resume", "--epochs", "3", "--lr", "0.5"]):  # refused: exists; other settings
        assert main(["retrain", str(best), "--data", str(tiny_data), "--epochs", "2", "--batch-size", "16",
                     "--out", str(rt), "--no-progress", *extra]) == 2
        assert _files(rt) == before


def test_full_stability_report_trains_sgld_and_sgd_with_two_seeds(tiny_data, tmp_path):
    from stnas.evaluate.rank import kendall_tau

    out = tmp_path / "stab"
    assert main(["search", "--space", "demo", "--data", str(tiny_data), "--out", str(out), "--stability", "full",
                 *TINY]) == 0
    stab = json.loads((out / "stability.json").read_text())
    assert set(stab["runs"]) == {"sgld-seed0", "sgld-seed1", "sgd-seed0", "sgd-seed1"}
    for name in ("sgld-seed1", "sgd-seed0", "sgd-seed1"):
        assert (out / "stability" / f"{name}.ckpt").is_file()
    assert (out / "stability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    n = len(stab["architectures"])
    for opt in ("sgld", "sgd"):
        a, b = stab["runs"][f"{opt}-seed0"]["scores"], stab["runs"][f"{opt}-seed1"]["scores"]
        assert len(a) == len(b) == n
        assert stab["kendall_tau_between_seeds"][opt] == pytest.approx(kendall_tau(a, b), nan_ok=True)
    # Two seeds train two different supernets (otherwise the tau above would measure nothing).
    assert stab["runs"]["sgld-seed0"]["snapshot_accuracies"] != stab["runs"]["sgld-seed1"]["snapshot_accuracies"]


def test_space_info_prints_the_counts(capsys):
    assert main(["space", "info", "--space", "tas"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["topologies"] == 2 ** 35 and info["branch_edges"] == 35
    assert info["madds_min"] < info["madds_max"]


@pytest.mark.parametrize("argv,message", [
    (["search", "--space", "nosuch"], "neither a file nor a built-in"),
    (["search", "--space", "demo", "--budget-madds", "1k"], "budget_madds"),
    (["search", "--space", "demo", "--data", "/nonexistent/data"], "does not exist"),
    (["evaluate", "--checkpoint", "/nonexistent.ckpt", "--archs", "x.json"], "does not exist"),
    (["retrain", "/nonexistent/best.json"], "architecture file /nonexistent/best.json does not exist"),
])
def test_bad_input_gives_one_clear_error(argv, message, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path / "o")] if argv[0] == "search" else argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_search_on_data_with_other_classes_is_refused(tmp_path, capsys):
    for split in ("train", "val"):
        for c in range(3):
            (tmp_path / "d" / split / f"c{c}").mkdir(parents=True)
            for i in range(6):
                Image.new("RGB", (32, 32), (c * 60, 0, 0)).save(tmp_path / "d" / split / f"c{c}" / f"{i}.jpg")
    assert main(["search", "--space", "demo", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"),
                 *TINY]) == 2
    assert "3 classes" in capsys.readouterr().err


def test_console_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "stnas.cli", "space", "info", "--space", "demo"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["topologies"] == 2 ** 9


def test_torchrun_with_more_local_ranks_than_gpus_is_refused_before_any_cuda_call(monkeypatch, capsys, tmp_path):
    """Two processes on a one-GPU machine would both take that GPU and fail inside NCCL; the CLI says what
    to do instead. CUDA is faked: the check must come before anything touches a device."""
    import torch.distributed as dist

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda *a: pytest.fail("set_device called"))
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: pytest.fail("joined a process group"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert main(["search", "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "local rank 1" in err and "1 GPU(s)" in err and "--nproc_per_node=1" in err and "--device cpu" in err


def test_cuda_device_under_torchrun_is_the_local_ranks_gpu(monkeypatch):
    from stnas.runtime import device as _device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert _device(None) == torch.device("cuda", 3)
    assert _device("cuda") == torch.device("cuda", 3)
    assert _device("cuda:1") == torch.device("cuda", 1)  # an explicit index is kept
    assert _device("cpu") == torch.device("cpu")
