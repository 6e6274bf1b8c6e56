"""The differentiable trainer and DrNAS/DARTS: one bilevel step against a hand-written first-order step,
the KL term against a closed form and numerical integration, the schedule, exact resume (also across a
progressive stage), the class-balanced halves, and `stnas search --method drnas|darts` on tiny data."""
import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

from stnas.cli import main
from stnas.data import ImageFolderSplit
from stnas.methods.drnas import DrNASConfig, EpochOutputs, ProgressiveSchedule, dirichlet_kl_to_uniform, kl_penalty
from stnas.spaces import CellArch, Space
from stnas.supernet.mixed import MixedCellNet
from stnas.train.differentiable import DifferentiableConfig, DifferentiableTrainer
from tests.conftest import colour_folder

TINY_SPACE = {"type": "cell", "name": "nb201-tiny", "input": {"resolution": 16, "channels": 3}, "num_classes": 4,
              "cell": {"nodes": 4, "ops": ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]},
              "skeleton": {"channels": 4, "cells_per_stage": 1, "stages": 3}}


def tiny_space():
    return Space.from_dict(TINY_SPACE)


class PairData:
    """24 fixed random images per half; epoch e's order is drawn from e alone; batches of 8."""

    def __init__(self, n=24, batch=8, size=16):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(2, n, 3, size, size, generator=g)
        self.y = torch.randint(0, 4, (2, n), generator=g)
        self.batch, self.steps_per_epoch = batch, n // batch

    def __call__(self, epoch):
        perms = [torch.randperm(self.x.shape[1], generator=torch.Generator().manual_seed(100 * epoch + h))
                 for h in range(2)]
        for i in range(self.steps_per_epoch):
            idx = [p[i * self.batch:(i + 1) * self.batch] for p in perms]
            yield (self.x[0, idx[0]], self.y[0, idx[0]]), (self.x[1, idx[1]], self.y[1, idx[1]])


def make_trainer(weighting="softmax", ckpt=None, hooks=(), penalty=None, simplify=None, **cfg):
    torch.manual_seed(0)
    net = MixedCellNet(tiny_space(), weighting=weighting, simplify=simplify)
    data = PairData()
    base = dict(epochs=3, seed=0)
    base.update(cfg)
    return DifferentiableTrainer(net, data, data.steps_per_epoch, DifferentiableConfig(**base), checkpoint=ckpt,
                                 hooks=hooks, penalty=penalty, progress=False)


# ---------------------------------------------------------------------- one step, by hand

@pytest.mark.parametrize("simplify", [None, True])
def test_one_darts_step_equals_a_hand_written_first_order_step(simplify):
    """Architecture step (Adam with L2 weight decay on beta, on the search batch), then the weight step
    (gradient clipped over the weights, SGD with momentum and weight decay) on the training batch,
    written out from the update formulas; float64 throughout so that the comparison is tight. The
    reference differentiates with every parameter requiring grad; the trainer freezes the other set in
    each step (with --simplify the merged conv then takes its mixing weights' gradient from its output)."""
    t = make_trainer("softmax", grad_clip=0.05, simplify=simplify)  # a small clip so that clipping really acts
    t.net.double()
    t.reset_optimizers()
    ref = copy.deepcopy(t.net)
    (x, y), (xs, ys) = next(iter(PairData()(0)))
    x, xs = x.double(), xs.double()
    cfg = t.cfg
    loss_fn = torch.nn.CrossEntropyLoss()

    # -- by hand: the architecture step (Adam's first step: m = (1-b1) g, v = (1-b2) g^2, bias-corrected).
    beta = ref.beta
    g_loss = torch.autograd.grad(loss_fn(ref(xs), ys), beta)[0]
    g = g_loss + cfg.arch_weight_decay * beta.detach()
    b1, b2 = cfg.arch_betas
    m_hat, v_hat = (1 - b1) * g / (1 - b1), (1 - b2) * g * g / (1 - b2)
    new_beta = beta.detach() - cfg.arch_lr * m_hat / (v_hat.sqrt() + 1e-8)
    with torch.no_grad():
        beta.copy_(new_beta)
    # -- by hand: the weight step with the new beta (first order: no unrolling).
    weights = ref.weight_parameters()
    grads = torch.autograd.grad(loss_fn(ref(x), y), weights)
    norm = torch.sqrt(sum((gr * gr).sum() for gr in grads))
    scale = min(1.0, cfg.grad_clip / (float(norm) + 1e-6))
    assert scale < 1  # clipping is exercised
    lr = cfg.lr_at(0)
    expected = [w.detach() - lr * (gr * scale + cfg.weight_decay * w.detach()) for w, gr in zip(weights, grads)]

    t.train_step(((x, y), (xs, ys)))
    assert all(p.requires_grad for p in t.net.parameters())  # the steps' freezing is undone
    assert torch.allclose(t.net.beta, new_beta, rtol=0, atol=1e-12)
    for w, e in zip(t.net.weight_parameters(), expected):
        assert torch.allclose(w, e, rtol=1e-9, atol=1e-12)
    # Each step differentiates its own parameters only: beta holds the architecture step's gradient (the
    # weight step added none), the weights their clipped weight-step gradients.
    assert torch.allclose(t.net.beta.grad, g_loss, rtol=0, atol=1e-12)
    for w, gr in zip(t.net.weight_parameters(), grads):
        assert torch.allclose(w.grad, gr * scale, rtol=1e-9, atol=1e-12)
    # The BN running statistics moved in both forwards, as in the hand-written run.
    for (k, a), b in zip(t.net.state_dict().items(), ref.state_dict().values()):
        if "running" in k:
            assert torch.allclose(a, b, atol=1e-12), k


def test_architecture_steps_wait_for_arch_from_epoch():
    t = make_trainer("softmax", arch_from_epoch=1, epochs=2)
    beta0 = t.net.beta.detach().clone()
    t.train(stop_at=t.steps_per_epoch)
    assert torch.equal(t.net.beta, beta0)
    t.train()
    assert not torch.equal(t.net.beta, beta0)


def test_learning_rate_is_a_cosine_per_stage():
    cfg = DifferentiableConfig(stages=(4, 2), lr=0.1, lr_min=0.01, arch_from_epoch=1)
    assert cfg.epochs == 6
    assert cfg.lr_at(0) == pytest.approx(0.1) and cfg.lr_at(4) == pytest.approx(0.1)
    assert cfg.lr_at(2) == pytest.approx(0.01 + 0.09 * 0.5)
    assert cfg.lr_at(5) == pytest.approx(0.01 + 0.09 * 0.5)
    assert [cfg.arch_active(e) for e in range(6)] == [False, True, True, True, False, True]
    with pytest.raises(ValueError, match="lr_min"):
        DifferentiableConfig(lr=0.01, lr_min=0.1)


# ---------------------------------------------------------------------- the KL term

def test_dirichlet_kl_matches_numerical_integration_for_two_ops():
    """With two ops a Dirichlet is a Beta: KL(Beta(a, b) || Beta(1, 1)) = E[log p] = -H, integrated."""
    integrate = pytest.importorskip("scipy.integrate")
    stats = pytest.importorskip("scipy.stats")
    for a, b in ((0.7, 2.5), (1.0, 1.0), (3.0, 1.3)):
        want = integrate.quad(lambda u: stats.beta.pdf(u, a, b) * stats.beta.logpdf(u, a, b), 0, 1, limit=200)[0]
        got = float(dirichlet_kl_to_uniform(torch.tensor([[a, b]], dtype=torch.float64)))
        assert got == pytest.approx(want, rel=1e-6, abs=1e-9)


def test_dirichlet_kl_matches_torch_for_five_ops_and_its_gradient_flows():
    conc = torch.rand(6, 5, dtype=torch.float64) * 3 + 0.2
    D = torch.distributions
    want = D.kl_divergence(D.Dirichlet(conc), D.Dirichlet(torch.ones_like(conc))).sum()
    assert float(dirichlet_kl_to_uniform(conc)) == pytest.approx(float(want), rel=1e-10)
    torch.manual_seed(0)
    net = MixedCellNet(tiny_space(), weighting="dirichlet")
    with torch.no_grad():
        net.beta.normal_()
    value = kl_penalty(1e-3)(net)
    conc = torch.nn.functional.elu(net.beta.detach().double()) + 1
    assert float(value) == pytest.approx(1e-3 * float(dirichlet_kl_to_uniform(conc)), rel=1e-5)
    value.backward()
    assert net.beta.grad is not None and net.beta.grad.abs().sum() > 0
    net.prune(3)  # after pruning: the KL over the kept ops of each edge only
    kept = net.mask
    want = sum(float(dirichlet_kl_to_uniform(conc[e][kept[e]][None])) for e in range(conc.shape[0]))
    assert float(kl_penalty(1.0)(net)) == pytest.approx(want, rel=1e-5)


# ---------------------------------------------------------------------- resume

def _assert_same_state(a, b):
    for (k, x), y in zip(a.net.state_dict().items(), b.net.state_dict().values()):
        assert torch.equal(x, y), k


@pytest.mark.parametrize("weighting", ["dirichlet", "softmax"])
@pytest.mark.parametrize("stop", [2, 4])  # mid-epoch, and just past an epoch's end
def test_resumed_search_ends_with_the_same_weights_and_history(tmp_path, weighting, stop):
    space = tiny_space()
    full = make_trainer(weighting, hooks=[EpochOutputs(space, tmp_path / "full")])
    full.train()
    ckpt = tmp_path / "run.ckpt"
    first = make_trainer(weighting, ckpt, hooks=[EpochOutputs(space, tmp_path / "part")])
    first.train(stop_at=stop)
    second = make_trainer(weighting, ckpt, hooks=[EpochOutputs(space, tmp_path / "part")])
    assert second.resume() and second.step == stop
    second.train()
    _assert_same_state(full, second)
    assert full.hook("history").history == second.hook("history").history
    assert json.loads((tmp_path / "part" / "derived.json").read_text())["arch"]["nb201"] == \
        full.net.derive().to_nb201()


def test_resume_refuses_other_settings(tmp_path):
    from stnas.io import CheckpointError

    ckpt = tmp_path / "run.ckpt"
    make_trainer("softmax", ckpt).train(stop_at=2)
    with pytest.raises(CheckpointError, match="other settings"):
        make_trainer("softmax", ckpt, lr=0.5).resume()


def test_progressive_stages_prune_widen_and_resume_across_the_boundary(tmp_path):
    space = tiny_space()
    cfg = DrNASConfig(progressive=True, stage_epochs=(1, 1), stage_channels=(2, 1), stage_ops=(5, 3),
                      stage_arch_from=0)

    def trainer(ckpt=None):
        torch.manual_seed(0)
        net = MixedCellNet(space, weighting="dirichlet", partial_channels=2)
        data = PairData()
        return DifferentiableTrainer(net, data, data.steps_per_epoch, cfg.trainer_config(),
                                     hooks=[ProgressiveSchedule(cfg)], checkpoint=ckpt, progress=False)

    full = trainer()
    full.train()
    assert full.net.partial_channels == 1 and full.net.mask.sum(1).tolist() == [3] * 6
    ckpt = tmp_path / "p.ckpt"
    trainer(ckpt).train(stop_at=4)  # inside the second stage
    resumed = trainer(ckpt)
    assert resumed.resume() and resumed.net.partial_channels == 1
    resumed.train()
    _assert_same_state(full, resumed)


# ---------------------------------------------------------------------- data halves

def test_halves_are_class_balanced_disjoint_and_complete(tmp_path):
    for c, n in (("a", 7), ("b", 4), ("c", 1)):
        (tmp_path / "train" / c).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(tmp_path / "train" / c / f"{i}.png")
    split = ImageFolderSplit.scan(tmp_path, "train")
    first, second = split.portion(0, 2), split.portion(1, 2)
    assert set(first.files).isdisjoint(second.files)
    assert sorted(first.files + second.files) == sorted(split.files)
    assert [first.labels.count(k) for k in range(3)] == [3, 2, 0]
    assert [second.labels.count(k) for k in range(3)] == [4, 2, 1]
    with pytest.raises(Exception, match="index"):
        split.portion(2, 2)


# ---------------------------------------------------------------------- the command

@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory):
    """4 classes of 16x16 JPEGs whose colour says the class, 16 train and 2 val each."""
    root = tmp_path_factory.mktemp("cells")
    colour_folder(root, 4, {"train": 16, "val": 2}, size=16, step=60)
    space = root / "space.json"
    space.write_text(json.dumps(TINY_SPACE))
    return root, space


def _tiny_table(path, space):
    """A NAS-Bench-201-format table holding every architecture of the space, accuracy a function of it."""
    from stnas.benchmarks import unique_string

    lines = ["CIFAR10TestAccuracy200Epochs,CIFAR100TestAccuracy200Epochs,ImageNetTestAccuracy200Epochs,"
             "ArchitectureString,UniqueString"]
    for arch in space.enumerate():
        score = 50 + sum(op == "nor_conv_3x3" for op in arch.ops) * 5 + arch.ops.count("skip_connect")
        lines.append(f"{score},{score - 20},{score - 40},{arch.to_nb201()},{unique_string(arch)}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("method", ["drnas", "darts"])
def test_search_command_writes_every_output_and_resumes(tiny_images, tmp_path, method, capsys):
    root, space_file = tiny_images
    table = _tiny_table(tmp_path / "table.csv", tiny_space())
    out = tmp_path / "out"
    argv = ["search", "--method", method, "--space", str(space_file), "--data", str(root), "--out", str(out),
            "--epochs", "2", "--batch-size", "8", "--no-progress", "--threads", "1", "--benchmark", str(table)]
    assert main(argv) == 0
    for name in ("derived.json", "history.csv", "history.json", "arch_weights.png", "accuracy.png", "search.ckpt",
                 "search.log", "config.json", "summary.json"):
        assert (out / name).is_file(), name
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    derived = json.loads((out / "derived.json").read_text())
    arch = CellArch.from_nb201(derived["arch"]["nb201"])
    # The derived cell is the per-edge argmax of the final beta, and its table entry is reported.
    beta = torch.tensor(history[-1]["beta"])
    ops = tiny_space().ops
    assert list(arch.ops) == [ops[i] for i in beta.argmax(1).tolist()]
    want = 50 + arch.ops.count("nor_conv_3x3") * 5 + arch.ops.count("skip_connect")
    assert derived["table"]["cifar10"] == pytest.approx(want)
    rows = np.array(history[-1]["weights"])
    assert np.allclose(rows.sum(1), 1, atol=1e-5)
    # A finished run resumes to nothing new; a fresh run into the same folder is refused.
    assert main(argv + ["--resume"]) == 0
    assert json.loads((out / "history.json").read_text()) == history
    capsys.readouterr()
    assert main(argv) == 2
    assert "--resume" in capsys.readouterr().err
    # The derived architecture retrains through the one builder.
    assert main(["retrain", str(out / "derived.json"), "--data", str(root), "--epochs", "1", "--batch-size", "8",
                 "--out", str(tmp_path / "rt"), "--no-progress", "--threads", "1"]) == 0
    result = json.loads((tmp_path / "rt" / "result.json").read_text())
    assert result["arch"]["nb201"] == arch.to_nb201() and 0 <= result["val_top1"] <= 1


@pytest.mark.parametrize("argv,message", [
    (["--method", "drnas", "--space", "demo"], "searches cell spaces"),
    (["--method", "stnas", "--space", "nb201-demo", "--benchmark", "/nonexistent.csv"], "does not exist"),
    (["--method", "darts", "--regularizer", "kl"], "unrecognized arguments"),
    (["--method", "drnas", "--benchmark", "/nonexistent.csv"], "does not exist"),
    (["--method", "nosuch"], "invalid choice"),
])
def test_bad_search_options_give_one_clear_error(argv, message, tmp_path, capsys):
    try:
        rc = main(["search", *argv, "--out", str(tmp_path / "o"), "--no-progress"])
    except SystemExit as e:  # argparse's own errors exit with 2
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_every_method_is_listed_in_search_help(capsys):
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    text = capsys.readouterr().out
    assert all(name in text for name in ("stnas", "drnas", "darts"))


def test_rank_command_scores_a_csv_against_the_table(tmp_path, capsys):
    """`stnas rank`: Kendall's tau of a scores CSV against the table, against scipy's on the same pairs."""
    stats = pytest.importorskip("scipy.stats")
    space = tiny_space()
    table = _tiny_table(tmp_path / "table.csv", space)
    rng = np.random.default_rng(1)
    archs = list(space.enumerate())[::97]
    truth = [50 + a.ops.count("nor_conv_3x3") * 5 + a.ops.count("skip_connect") for a in archs]
    scores = [t + rng.normal(0, 3) for t in truth]
    lines = ["score,arch"] + [f"{s:.4f},{a.to_nb201()}" for s, a in zip(scores, archs)]
    (tmp_path / "scores.csv").write_text("\n".join(lines) + "\n")
    assert main(["rank", str(tmp_path / "scores.csv"), "--benchmark", str(table), "--out", str(tmp_path / "r")]) == 0
    report = json.loads((tmp_path / "r" / "rank.json").read_text())
    assert report["n"] == len(archs)
    assert report["kendall_tau"] == pytest.approx(stats.kendalltau(scores, truth).statistic, abs=1e-9)
    assert (tmp_path / "r" / "rank.png").read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "bad.csv").write_text("score,arch\n1.0,|nor_conv_3x3~0|+|bogus~0|none~1|+|none~0|none~1|none~2|\n")
    capsys.readouterr()
    assert main(["rank", str(tmp_path / "bad.csv"), "--benchmark", str(table)]) == 2
    err = capsys.readouterr().err
    assert "bad.csv" in err and "Traceback" not in err


def test_progressive_search_from_the_command_line(tiny_images, tmp_path):
    """--progressive: K = 4 with 5 ops, then the best 3 per edge at K = 2; the derived cell is one of the
    kept ops of every edge, and a resume of the finished run changes nothing."""
    root, space_file = tiny_images
    out = tmp_path / "prog"
    argv = ["search", "--method", "drnas", "--progressive", "--space", str(space_file), "--data", str(root),
            "--out", str(out), "--epochs", "2", "--batch-size", "8", "--no-progress", "--threads", "1"]
    assert main(argv) == 0
    history = json.loads((out / "history.json").read_text())
    weights = np.array(history[-1]["weights"])
    assert ((weights > 0).sum(1) == 3).all()  # 3 ops kept per edge in the second stage
    ops = tiny_space().ops
    for e, op in enumerate(history[-1]["ops"]):
        assert weights[e][ops.index(op)] > 0
    from stnas.io import load_checkpoint

    ck = load_checkpoint(out / "search.ckpt", kind="supernet")
    assert ck["stage"] == {"stage": 1}
    assert main(argv + ["--resume"]) == 0
    assert json.loads((out / "history.json").read_text()) == history
