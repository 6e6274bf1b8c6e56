"""The single-path supernet of a cell space (CellPathNet), ST-NAS on cell spaces from the command line,
`stnas rank --scores`, the top-fraction overlaps, and the rank study on tiny data."""
import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from stnas.cli import main
from stnas.evaluate.rank import top_k_overlap
from stnas.evaluate.rank_outputs import add_fraction_overlaps
from stnas.spaces import CellArch, Space
from stnas.supernet import CellPathNet, ChainNet, SuperNet, inherit, recalibrate_bn
from stnas.supernet.cell_blocks import CellNet
from tests.conftest import colour_folder

TINY_SPACE = {"type": "cell", "name": "nb201-tiny", "input": {"resolution": 16, "channels": 3}, "num_classes": 4,
              "cell": {"nodes": 4, "ops": ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]},
              "skeleton": {"channels": 4, "cells_per_stage": 1, "stages": 3}}
# Every kind of node: a zero node read by a conv, a node with several inputs, skip and pooling.
ARCHS = ["|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_3x3~2|",
         "|none~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|none~0|none~1|nor_conv_3x3~2|",
         "|avg_pool_3x3~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|none~1|none~2|"]


def tiny_space():
    return Space.from_dict(TINY_SPACE)


def _perturb_bn(net: nn.Module, seed: int = 0) -> None:
    """Running statistics and affine parameters away from their initial values, so a copy that misses
    them shows."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g))


def test_supernet_dispatches_on_the_space_kind():
    assert isinstance(SuperNet(tiny_space()), CellPathNet)
    assert isinstance(SuperNet("demo"), ChainNet)
    assert isinstance(SuperNet("nb201-demo"), CellPathNet)


def test_cell_supernet_has_the_standalone_module_names_and_affine_bn():
    space = tiny_space()
    net = CellPathNet(space)
    keys = set(net.state_dict())
    for text in ARCHS:
        assert set(CellNet(space, text).state_dict()) <= keys
    assert "body.stage1_cell0.edges.2<-1.nor_conv_3x3.conv.weight" in keys
    assert all(m.affine for m in net.modules() if isinstance(m, nn.BatchNorm2d))


@pytest.mark.parametrize("text", ARCHS)
def test_inactive_ops_are_never_called_and_get_no_gradient(text):
    space = tiny_space()
    torch.manual_seed(0)
    net = CellPathNet(space)
    arch = space.arch_from_nb201(text)
    active = {id(m) for m in net.active_modules(arch)}
    called = set()
    hooks = [m.register_forward_hook(lambda mod, i, o: called.add(id(mod)))
             for cell in net.body.children() if hasattr(cell, "edges")
             for ops in cell.edges.values() for m in ops.values()]
    net(torch.randn(2, 3, 16, 16), arch).sum().backward()
    for h in hooks:
        h.remove()
    for cell in (c for c in net.body.children() if hasattr(c, "edges")):
        for key, ops in cell.edges.items():
            dst, src = (int(v) for v in key.split("<-"))
            for op, mod in ops.items():
                on = op == arch.op(dst, src) and op != "none"
                assert (id(mod) in called) == on == (id(mod) in active), (key, op)
                for p in mod.parameters():
                    assert (p.grad is not None) == on, (key, op)
    # Everything outside the cells is shared by every architecture and trains at every step.
    for part in (net.stem, net.head, net.body.reduce1, net.body.reduce2):
        assert all(p.grad is not None for p in part.parameters())


@pytest.mark.parametrize("text", ARCHS)
def test_forward_equals_the_standalone_model_with_inherited_weights(text):
    space = tiny_space()
    torch.manual_seed(1)
    net = CellPathNet(space)
    _perturb_bn(net)
    arch = space.arch_from_nb201(text)
    model = inherit(CellNet(space, arch), net)
    x = torch.randn(4, 3, 16, 16)
    net.eval(), model.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x, arch), model(x), rtol=1e-5, atol=1e-6)
    # After recalibration for the architecture, the inherited model carries the recalibrated statistics.
    batches = [torch.randn(8, 3, 16, 16) for _ in range(2)]
    recalibrate_bn(net, arch, batches)
    model = inherit(CellNet(space, arch), net).eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x, arch), model(x), rtol=1e-5, atol=1e-6)
    # ... which are the standalone model's own exact statistics over the same batches.
    fresh = inherit(CellNet(space, arch), CellPathNet(space)).train()
    fresh.load_state_dict(model.state_dict())
    for m in fresh.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        for b in batches:
            fresh(b)
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        if "running" in k:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=k)


def test_forward_refuses_a_foreign_architecture():
    net = CellPathNet(tiny_space())
    with pytest.raises(ValueError, match="architecture"):
        net(torch.randn(1, 3, 16, 16))
    with pytest.raises(Exception, match="candidate"):
        net(torch.randn(1, 3, 16, 16), CellArch(("conv_5x5",) * 6))


def test_cell_arch_json_round_trip():
    arch = tiny_space().arch_from_nb201(ARCHS[0])
    assert CellArch.from_json(arch.to_json()) == arch
    assert json.loads(arch.to_json()) == {"ops": list(arch.ops), "nb201": ARCHS[0]}


def test_fraction_overlaps_keep_the_report_and_add_top5_and_top10_percent():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=200)
    scores = truth + rng.normal(0, 0.5, 200)
    report = add_fraction_overlaps({"n": 200, "top10_overlap": 0.5}, scores, truth)
    assert report["top10_overlap"] == 0.5 and report["top5pct_k"] == 10 and report["top10pct_k"] == 20
    assert report["top5pct_overlap"] == top_k_overlap(scores, truth, 10)
    assert report["top10pct_overlap"] == top_k_overlap(scores, truth, 20)
    assert add_fraction_overlaps({}, [1.0, 2.0], [2.0, 1.0])["top5pct_k"] == 1


# ---------------------------------------------------------------------- the command and the study

@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory):
    """4 classes of 16x16 JPEGs whose colour says the class, 16 train and 2 val each, and the space file."""
    root = tmp_path_factory.mktemp("cells")
    colour_folder(root, 4, {"train": 16, "val": 2}, size=16, step=60)
    space = root / "space.json"
    space.write_text(json.dumps(TINY_SPACE))
    return root, space


def truth_of(arch) -> float:
    return 50 + arch.ops.count("nor_conv_3x3") * 5 + arch.ops.count("skip_connect")


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory):
    """A NAS-Bench-201-format table of every architecture of the tiny space, accuracy a function of it."""
    from stnas.benchmarks import unique_string

    path = tmp_path_factory.mktemp("table") / "table.csv"
    lines = ["CIFAR10TestAccuracy200Epochs,CIFAR100TestAccuracy200Epochs,ImageNetTestAccuracy200Epochs,"
             "ArchitectureString,UniqueString"]
    for arch in tiny_space().enumerate():
        s = truth_of(arch)
        lines.append(f"{s},{s - 20},{s - 40},{arch.to_nb201()},{unique_string(arch)}")
    path.write_text("\n".join(lines) + "\n")
    return path


TINY = ["--burn-in", "4", "--snapshots", "2", "--snapshot-every", "2", "--batch-size", "8", "--population", "4",
        "--generations", "1", "--no-progress", "--threads", "1"]


@pytest.fixture(scope="module")
def cell_search(tiny_images, tiny_table, tmp_path_factory):
    root, space_file = tiny_images
    out = tmp_path_factory.mktemp("cellsearch") / "out"
    rc = main(["search", "--method", "stnas", "--space", str(space_file), "--data", str(root), "--out", str(out),
               "--benchmark", str(tiny_table), *TINY])
    assert rc == 0
    return out


def test_stnas_search_on_a_cell_space_writes_scores_best_and_rank(cell_search, tiny_table):
    out = cell_search
    for name in ("supernet.ckpt", "scores.csv", "pareto.csv", "pareto.png", "stability.json", "summary.json",
                 "rank.json", "rank.png"):
        assert (out / name).is_file(), name
    space = tiny_space()
    rows = list(csv.DictReader((out / "scores.csv").open()))
    archs = [space.arch_from_dict(json.loads(r["arch"])) for r in rows]
    assert len(archs) >= 4 and all(json.loads(r["arch"])["nb201"] == a.to_nb201() for r, a in zip(rows, archs))
    assert all(len(json.loads(r["snapshot_accuracies"])) == 2 for r in rows)
    best = json.loads(next(out.glob("best_*.json")).read_text())
    assert best["madds"] <= best["budget_madds"] and isinstance(best["arch"]["nb201"], str)
    rank = json.loads((out / "rank.json").read_text())
    assert rank["n"] == len(rows) and {"kendall_tau", "top5pct_overlap", "top10pct_overlap", "regret"} <= set(rank)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rank"]["kendall_tau"] == rank["kendall_tau"] or np.isnan(rank["kendall_tau"])
    # The same report from `stnas rank --scores`.
    assert main(["rank", "--scores", str(out / "scores.csv"), "--benchmark", str(tiny_table),
                 "--out", str(out / "again")]) == 0
    again = json.loads((out / "again" / "rank.json").read_text())
    assert {k: v for k, v in again.items() if k != "scores_csv"} == {k: v for k, v in rank.items() if k != "scores_csv"}


def test_rank_needs_one_scores_file(tmp_path, tiny_table, capsys):
    archs = list(tiny_space().enumerate())[::211]
    lines = ["score,arch"] + [f"{truth_of(a) + k % 3},{a.to_nb201()}" for k, a in enumerate(archs)]
    (tmp_path / "s.csv").write_text("\n".join(lines) + "\n")
    assert main(["rank", "--scores", str(tmp_path / "s.csv"), "--benchmark", str(tiny_table)]) == 0
    report = json.loads((tmp_path / "rank.json").read_text())
    assert report["n"] == len(archs) and report["top10pct_k"] == max(1, round(0.1 * len(archs)))
    assert "top10_overlap" in report  # the integer ks stay
    capsys.readouterr()
    assert main(["rank", "--benchmark", str(tiny_table)]) == 2
    assert "give the scores CSV" in capsys.readouterr().err
    assert main(["rank", str(tmp_path / "s.csv"), "--scores", str(tmp_path / "other.csv"),
                 "--benchmark", str(tiny_table)]) == 2
    assert "give one" in capsys.readouterr().err


def test_benchmark_option_is_checked_before_the_search(tmp_path, tiny_table, capsys):
    assert main(["search", "--method", "stnas", "--space", "demo", "--benchmark", str(tiny_table),
                 "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "cell" in capsys.readouterr().err
    assert main(["search", "--method", "stnas", "--space", "nb201-demo", "--benchmark", str(tmp_path / "no.csv"),
                 "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_rank_study_runs_on_tiny_data(tiny_images, tiny_table, tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import rank_study

    root, space_file = tiny_images
    out = tmp_path / "study"
    result = rank_study.main(["--benchmark", str(tiny_table), "--data", str(root), "--space", str(space_file),
                              "--archs", "5", "--seeds", "0", "1", "--steps", "6", "--snapshots", "2",
                              "--snapshot-every", "2", "--batch-size", "8", "--device", "cpu", "--threads", "1",
                              "--out", str(out)])
    saved = json.loads((out / "rank_study.json").read_text())
    assert set(saved["runs"]) == {"sgld-seed0", "sgd-seed0", "sgld-seed1", "sgd-seed1"}
    space = tiny_space()
    archs = [space.arch_from_nb201(t) for t in saved["architectures"]]
    assert len(set(archs)) == 5 and saved["truth"] == [truth_of(a) for a in archs]
    for name, run in saved["runs"].items():
        assert len(run["scores"]) == 5 and len(run["kendall_tau_per_snapshot"]) == 2
        assert (out / f"scatter_{name}.png").read_bytes()[:4] == b"\x89PNG"
    for opt in ("sgld", "sgd"):
        s = saved["by_optimizer"][opt]
        assert len(s["kendall_tau_vs_table"]) == 2 and len(s["kendall_tau_between_seeds"]) == 1
    assert "kendall_tau_gain_vs_table" in saved["sgld_vs_sgd"]
    # The draw of architectures is seeded; a seed's two runs share the schedule, only the optimiser differs.
    assert rank_study.sample_archs(space, 5, 0) == archs
    proxy = result["config"]["proxy"]
    assert proxy["sgd-seed0"]["temperature"] == 0.0 < proxy["sgld-seed0"]["temperature"]
    assert {k: v for k, v in proxy["sgd-seed0"].items() if k not in ("optimizer", "temperature")} == \
        {k: v for k, v in proxy["sgld-seed0"].items() if k not in ("optimizer", "temperature")}
