"""GOLD-NAS (arXiv 2007.03331): the darts-gold space and its costs, the gated supernets (gate gradients
against a float64 autograd reference, the expected-cost term against a hand count, pruned ops never
called), the lambda schedule, the Pareto front, exact resume, and `stnas search --method goldnas` on
tiny data (with `stnas retrain` of a recorded architecture)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from stnas.cli import main
from stnas.methods.goldnas import GoldConfig, GoldSchedule, next_lambda, pareto_front, resource_penalty
from stnas.spaces import Space, SpaceError
from stnas.spaces.darts_cell import EDGES, DartsGoldSpace, GoldArch
from stnas.supernet.darts_blocks import DartsGoldNet, build_darts_gold
from stnas.supernet.gated import GatedCellNet, GatedNB201Net
from stnas.train.differentiable import DifferentiableConfig, DifferentiableTrainer
from tests.conftest import colour_folder

TINY = {"type": "darts-gold", "name": "gold-tiny", "input": {"resolution": 8, "channels": 3}, "num_classes": 4,
        "cell": {"ops": ["skip_connect", "sep_conv_3x3"]}, "skeleton": {"channels": 4, "cells": 3, "stem_multiplier": 1}}
NB201_TINY = {"type": "cell", "name": "nb201-tiny", "input": {"resolution": 8, "channels": 3}, "num_classes": 4,
              "cell": {"nodes": 4, "ops": ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]},
              "skeleton": {"channels": 4, "cells_per_stage": 1, "stages": 3}}


def tiny():
    return Space.from_dict(TINY)


# ---------------------------------------------------------------------- the space

def test_space_counts_decisions_and_round_trips():
    space = tiny()
    assert len(EDGES) == 14 and space.reduction_cells == (1, 2)
    assert len(space.decisions()) == 3 * 14 * 2 and space.count_architectures() == 2 ** 84
    assert Space.load("darts-gold").count_architectures() == 2 ** 560 > 10 ** 160
    assert Space.from_dict(json.loads(json.dumps(space.to_dict()))) == space
    import random

    arch = space.sample(random.Random(0))
    again = space.arch_from_dict(json.loads(json.dumps({"space": space.to_dict(), "arch": arch.to_dict()})))
    assert again == arch and space.genes(again) == space.genes(arch)
    with pytest.raises(SpaceError, match=r"arch.cells\[0\]\[3\]: 'max_pool_3x3' is not a candidate"):
        space.validate(GoldArch((((),) * 3 + (("max_pool_3x3",),) + ((),) * 10,) * 3))
    with pytest.raises(SpaceError, match="not a darts-gold candidate"):
        Space.from_dict({**TINY, "cell": {"ops": ["nor_conv_3x3"]}})


@pytest.mark.parametrize("seed", [0, 1])
def test_analytic_cost_equals_the_standalone_model_counted_with_hooks(seed):
    import random

    space = tiny()
    arch = space.sample(random.Random(seed))
    net = DartsGoldNet(space, arch)
    madds = [0]

    def hook(m, i, o):
        if isinstance(m, torch.nn.Conv2d):
            madds[0] += m.weight.numel() * o.shape[2] * o.shape[3]
        elif isinstance(m, torch.nn.Linear):
            madds[0] += m.weight.numel()

    for m in net.modules():
        m.register_forward_hook(hook)
    net(torch.randn(1, 3, 8, 8))
    assert space.cost(arch) == (madds[0], sum(p.numel() for p in net.parameters()))


# ---------------------------------------------------------------------- gates

def _reference_forward(net: GatedCellNet, x):
    """The gated supernet written out as plain sums: node = sum over kept (edge, op) of gate * op(src)."""
    g = torch.sigmoid(net.alpha)
    s0 = s1 = net.stem(x)
    for c, cell in enumerate(net.cells):
        states = [cell.pre0(s0), cell.pre1(s1)]
        for dst in range(2, 6):
            total = None
            for e, (d, src) in enumerate(EDGES):
                for o, op in enumerate(net.space.ops):
                    if d == dst and net.mask[c, e, o]:
                        y = g[c, e, o] * cell.edges[f"{d}<-{src}"][op](states[src])
                        total = y if total is None else total + y
            states.append(cell.zero_node(states[1]) if total is None else total)
        s0, s1 = s1, torch.cat(states[2:], 1)
    return net.classifier(s1.mean((2, 3)))


def test_gate_gradients_match_float64_autograd_of_the_plain_sum():
    torch.manual_seed(0)
    net = GatedCellNet(tiny()).double()
    with torch.no_grad():
        net.alpha.normal_()
    keep = torch.rand(net.mask.shape, generator=torch.Generator().manual_seed(1)) > 0.3
    net.prune_mask(keep)
    x, y = torch.randn(4, 3, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 3])
    params = [net.alpha] + net.weight_parameters()
    loss = torch.nn.functional.cross_entropy(net(x), y)
    got = torch.autograd.grad(loss, params, allow_unused=True)
    want = torch.autograd.grad(torch.nn.functional.cross_entropy(_reference_forward(net, x), y), params,
                               allow_unused=True)
    assert torch.allclose(got[0], want[0], rtol=1e-9, atol=1e-12)
    assert got[0][~net.mask].abs().max() == 0  # pruned gates get no gradient
    for a, b in zip(got[1:], want[1:]):
        assert (a is None) == (b is None) or (a is None and b.abs().max() == 0)
        if a is not None and b is not None:
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)


def test_a_pruned_op_is_never_called_and_gets_no_gradient():
    torch.manual_seed(0)
    net = GatedCellNet(tiny())
    victim = net.cells[1].edges["3<-0"]["sep_conv_3x3"]
    calls = []
    victim.register_forward_hook(lambda m, i, o: calls.append(1))
    with torch.no_grad():
        net.alpha[1, EDGES.index((3, 0)), 1] = -10.0  # gate ~ 4.5e-5
    assert net.prune(0.05) == [(1, EDGES.index((3, 0)), 1)]
    for p in victim.parameters():  # poison: a call would turn the loss into NaN
        p.data.fill_(float("nan"))
    loss = torch.nn.functional.cross_entropy(net(torch.randn(2, 3, 8, 8)), torch.tensor([0, 1]))
    loss.backward()
    assert not calls and torch.isfinite(loss)
    assert all(p.grad is None for p in victim.parameters())
    assert net.alpha.grad[1, EDGES.index((3, 0)), 1] == 0
    assert "sep_conv_3x3" not in net.derive().cells[1][EDGES.index((3, 0))]


def test_expected_cost_equals_a_hand_count():
    space = tiny()
    net = GatedCellNet(space, gate_init=0.0)  # every gate 0.5
    # Cell 0 (normal, C = 4, 8 px): sep_conv_3x3 = 2 x (dw 9*4 + pw 4*4) weights per pixel = 104 * 64
    # MAdds, params 2 x (36 + 16 + 8) = 120; skip is the identity (free). Reduction cells (C = 8, 16, strided
    # edges from the inputs) are counted by the space; we check cell 0 by hand and the rest against it.
    assert space.op_cost(0, 0, "sep_conv_3x3") == (104 * 64, 120)
    assert space.op_cost(0, 0, "skip_connect") == (0, 0)
    # Cell 1 reduces 8 px -> 4 px at C = 8: an input edge's skip is a factorized reduce 2 x (8*4) weights
    # at 16 pixels + BN(8).
    assert space.op_cost(1, 0, "skip_connect") == (2 * 8 * 4 * 16, 2 * 8 * 4 + 16)
    total = sum(space.op_cost(c, e, op)[0] for c in range(3) for e in range(14) for op in space.ops)
    madds, params = (v.detach() for v in net.expected_cost())
    assert float(madds) == pytest.approx(0.5 * total)
    # Prune one op: it leaves the sum; with every gate 1 the term is the architecture's cost minus the fixed part.
    with torch.no_grad():
        net.alpha.fill_(30.0)
        net.alpha[0, 0, 1] = -30.0
    net.prune(0.05)
    arch = net.derive()
    m, p = (v.detach() for v in net.expected_cost())
    fixed = space.fixed_cost()
    assert float(m) == pytest.approx(space.cost(arch).madds - fixed.madds)
    assert float(p) == pytest.approx(space.cost(arch).params - fixed.params)
    # The resource term's gradient: lambda * cost / scale * g (1 - g) per gate.
    net2 = GatedCellNet(space)
    sched = GoldSchedule(space, GoldConfig(lambda0=2.0, train=DifferentiableConfig(bilevel=False, epochs=3)), "/tmp", None)
    resource_penalty(sched, sched.cfg)(net2).backward()
    scale = net2.cost_scale[0]
    assert float(net2.alpha.grad[0, 0, 1]) == pytest.approx(2.0 * 104 * 64 / scale * 0.25, rel=1e-5)


def test_nb201_gated_net_reduces_each_subset_to_its_strongest_op():
    space = Space.from_dict(NB201_TINY)
    torch.manual_seed(0)
    net = GatedNB201Net(space)
    ops = space.ops
    with torch.no_grad():
        net.alpha.fill_(0.0)
        net.alpha[:, ops.index("nor_conv_3x3")] = 2.0  # strongest everywhere
        net.alpha[0, :] = -10.0                        # edge 0: every gated op goes
    pruned = net.prune(0.05)
    assert len(pruned) == 4 and net.mask[0, ops.index("none")]  # none is never pruned
    arch = net.derive()
    assert arch.ops[0] == "none" and set(arch.ops[1:]) == {"nor_conv_3x3"}
    assert net.subset()[0] == [] and len(net.subset()[1]) == 4
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 4)
    m = net.expected_cost()[0].detach()
    assert float(m) > 0 and net.subset_cost()[0] >= space.cost(arch).madds


# ---------------------------------------------------------------------- schedule and front

def test_lambda_grows_while_too_few_are_pruned_and_shrinks_when_too_many():
    cfg = GoldConfig(lambda_grow=2.0, lambda_shrink=0.5, min_prune=2, max_prune_frac=0.1,
                     train=DifferentiableConfig(bilevel=False, epochs=3))
    assert cfg.max_prune(84) == 9 and cfg.max_prune(3) == 1
    assert next_lambda(1.0, 0, cfg, 84) == 2.0 and next_lambda(1.0, 1, cfg, 84) == 2.0
    assert next_lambda(1.0, 2, cfg, 84) == 1.0 and next_lambda(1.0, 9, cfg, 84) == 1.0
    assert next_lambda(1.0, 10, cfg, 84) == 0.5
    with pytest.raises(ValueError, match="one-level"):
        GoldConfig(train=DifferentiableConfig(bilevel=True))
    with pytest.raises(ValueError, match="lambda-grow"):
        GoldConfig(lambda_grow=0.9, train=DifferentiableConfig(bilevel=False))


def test_prune_takes_at_most_max_count_weakest_first():
    net = GatedCellNet(tiny())
    with torch.no_grad():
        net.alpha.fill_(5.0)
        net.alpha[0, 0, 0], net.alpha[2, 5, 1], net.alpha[1, 3, 0] = -6.0, -9.0, -4.0
    assert net.below(0.05) == 3
    assert net.prune(0.05, max_count=2) == [(2, 5, 1), (0, 0, 0)]
    assert net.pruned_count() == 2 and net.below(0.05) == 1
    with pytest.raises(ValueError, match="threshold"):
        net.prune(1.5)


def test_every_front_entry_is_non_dominated_and_every_other_is_dominated():
    rng = np.random.default_rng(0)
    entries = [{"id": i, "madds": int(rng.integers(1, 50)), "params": int(rng.integers(1, 50)),
                "accuracy": float(rng.integers(50, 60))} for i in range(60)]
    front = pareto_front(entries)

    def dominates(a, b):
        ge = a["madds"] <= b["madds"] and a["params"] <= b["params"] and a["accuracy"] >= b["accuracy"]
        return ge and (a["madds"] < b["madds"] or a["params"] < b["params"] or a["accuracy"] > b["accuracy"])

    ids = {e["id"] for e in front}
    assert front and all(not any(dominates(f, e) for f in entries) for e in front)
    assert all(any(dominates(f, e) for f in entries) for e in entries if e["id"] not in ids)


# ---------------------------------------------------------------------- training and resume

class TinyData:
    """16 fixed random images, batches of 8; epoch e's order is a function of e alone."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 4, (16,), generator=g)
        self.steps_per_epoch = 2

    def __call__(self, epoch):
        p = torch.randperm(16, generator=torch.Generator().manual_seed(epoch))
        for i in range(2):
            idx = p[i * 8:(i + 1) * 8]
            yield (self.x[idx], self.y[idx]), None

    def eval_batches(self):
        return [(self.x, self.y)]


def make_run(out, ckpt=None):
    from stnas.methods.goldnas import HeldOutAccuracy

    torch.manual_seed(0)
    space = tiny()
    # Aggressive settings so that 6 tiny epochs prune, grow lambda and record several architectures.
    cfg = GoldConfig(threshold=0.3, lambda0=2.0, gate_init=-0.75, stable_epochs=1, warmup_epochs=1, max_prune_frac=0.25,
                     train=DifferentiableConfig(bilevel=False, epochs=5, arch_lr=0.1, arch_weight_decay=0.0))
    net = GatedCellNet(space, cfg.gate_init)
    data = TinyData()
    sched = GoldSchedule(space, cfg, out, HeldOutAccuracy(data.eval_batches, torch.device("cpu")), plots=False)
    t = DifferentiableTrainer(net, data, data.steps_per_epoch, cfg.train, penalty=resource_penalty(sched, cfg),
                              hooks=[sched], checkpoint=ckpt, progress=False)
    return t, sched


def test_resumed_search_ends_with_the_same_weights_gates_mask_and_front(tmp_path):
    full, fs = make_run(tmp_path / "full")
    full.train()
    assert full.net.pruned_count() > 0 and len(fs.recorded) >= 1 and len({t["lambda"] for t in fs.trajectory}) > 1
    for stop in (3, 6):  # mid-epoch, and just after a prune
        ckpt = tmp_path / f"run{stop}.ckpt"
        first, _ = make_run(tmp_path / f"part{stop}", ckpt)
        first.train(stop_at=stop)
        second, ss = make_run(tmp_path / f"part{stop}", ckpt)
        assert second.resume() and second.step == stop
        second.train()
        for (k, a), b in zip(full.net.state_dict().items(), second.net.state_dict().values()):
            assert torch.equal(a, b), k
        assert fs.recorded == ss.recorded and fs.trajectory == ss.trajectory
        assert [e["id"] for e in fs.front()] == [int(r["id"]) for r in _csv(tmp_path / f"part{stop}" / "front.csv")]


def _csv(path):
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------- the command

@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory):
    """4 classes of 8x8 JPEGs whose colour says the class, 8 train and 2 val each."""
    root = tmp_path_factory.mktemp("gold")
    colour_folder(root, 4, {"train": 8, "val": 2}, size=8, step=60)
    space = root / "space.json"
    space.write_text(json.dumps(TINY))
    return root, space


def test_search_command_writes_the_front_and_an_architecture_retrains(tiny_images, tmp_path, monkeypatch, capsys):
    root, space_file = tiny_images
    out = tmp_path / "out"
    argv = ["search", "--method", "goldnas", "--space", str(space_file), "--data", str(root), "--out", str(out),
            "--epochs", "4", "--warmup-epochs", "1", "--batch-size", "8", "--no-progress", "--threads", "1",
            "--threshold", "0.45", "--lambda0", "5", "--arch-lr", "0.1", "--stable-epochs", "1"]
    assert main(argv) == 0
    for name in ("front.csv", "front.png", "recorded.csv", "recorded.json", "trajectory.csv", "trajectory.png",
                 "search.ckpt", "search.log", "config.json", "summary.json"):
        assert (out / name).is_file(), name
    recorded = json.loads((out / "recorded.json").read_text())
    front = _csv(out / "front.csv")
    assert recorded and front
    for r in front:  # every front entry is non-dominated among the recorded ones
        r = {k: float(r[k]) for k in ("madds", "params", "accuracy")}
        assert not any(e["madds"] <= r["madds"] and e["params"] <= r["params"] and e["accuracy"] >= r["accuracy"]
                       and (e["madds"], e["params"], e["accuracy"]) != (r["madds"], r["params"], r["accuracy"])
                       for e in recorded)
    space = tiny()
    arch_file = out / front[-1]["file"]
    arch = space.arch_from_dict(json.loads(arch_file.read_text()))
    assert space.cost(arch).madds == int(front[-1]["madds"])
    # A finished run resumes to nothing new; a fresh run into the same folder is refused.
    assert main(argv + ["--resume"]) == 0
    assert json.loads((out / "recorded.json").read_text()) == recorded
    capsys.readouterr()
    assert main(argv) == 2 and "--resume" in capsys.readouterr().err
    # stnas retrain of a recorded architecture (the darts-gold dispatch of stnas.supernet.build, patched in
    # here until standalone.py carries it).
    import stnas.train.retrain as rt

    original = rt.build
    monkeypatch.setattr(rt, "build", lambda a, s=None: build_darts_gold(a, s) if isinstance(Space.load(s), DartsGoldSpace)
                        else original(a, s))
    assert main(["retrain", str(arch_file), "--data", str(root), "--epochs", "1", "--batch-size", "8",
                 "--out", str(tmp_path / "rt"), "--no-progress", "--threads", "1"]) == 0
    result = json.loads((tmp_path / "rt" / "result.json").read_text())
    assert result["madds"] == space.cost(arch).madds


@pytest.mark.parametrize("argv,message", [
    (["--space", "demo"], "searches darts-gold and cell"),
    (["--budget-madds", "1k"], "below the smallest architecture"),
    (["--benchmark", "/nonexistent.csv"], "does not exist"),
    (["--threshold", "2"], "threshold"),
])
def test_bad_goldnas_options_give_one_clear_error(argv, message, tmp_path, capsys):
    try:
        rc = main(["search", "--method", "goldnas", *argv, "--out", str(tmp_path / "o"), "--no-progress"])
    except SystemExit as e:
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_search_on_nb201_scores_the_strongest_op_cell_with_the_table(tmp_path):
    """--benchmark: the NAS-Bench-201 cell space, each recorded cell's accuracy is its table entry."""
    from test_differentiable import TINY_SPACE, _tiny_table, tiny_space

    rng = np.random.default_rng(1)
    root = tmp_path / "data"
    for split, n in (("train", 8), ("val", 2)):
        for c in range(4):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / split / f"c{c}" / f"{i}.jpg")
    (tmp_path / "space.json").write_text(json.dumps(TINY_SPACE))
    table = _tiny_table(tmp_path / "table.csv", tiny_space())
    out = tmp_path / "out"
    assert main(["search", "--method", "goldnas", "--space", str(tmp_path / "space.json"), "--data", str(root),
                 "--benchmark", str(table), "--out", str(out), "--epochs", "3", "--batch-size", "8", "--no-progress",
                 "--threads", "1", "--threshold", "0.45", "--lambda0", "5", "--arch-lr", "0.1",
                 "--stable-epochs", "1"]) == 0
    from stnas.spaces import CellArch

    for entry in json.loads((out / "recorded.json").read_text()):
        arch = CellArch.from_dict(entry["arch"])
        assert entry["accuracy"] == pytest.approx(50 + 5 * arch.ops.count("nor_conv_3x3") + arch.ops.count("skip_connect"))
        assert (entry["madds"], entry["params"]) == tuple(tiny_space().cost(arch))
