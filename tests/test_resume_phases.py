"""A search stopped anywhere and resumed ends with the outputs of one never stopped (issue 13, item 1).

Each test runs a tiny ST-NAS search (a 512-architecture chain space with dropout, so that training draws
from torch's generator; the PIL loader, whose DataLoader draws from that generator too unless given one
of its own) and stops it with KeyboardInterrupt (what Ctrl-C raises, and SIGTERM during training) at
chosen points of one phase, each stop in a run resumed from the one before; then a last resume runs to
the end. Every file of the output folder is compared with an uninterrupted run's: byte for byte,
checkpoints by content (torch writes a random serialisation id into each file), ``summary.json``
without its ``out`` path, the log left out. Between runs torch's, numpy's and Python's global
generators are reseeded, as a fresh process would find them. DrNAS and GOLD-NAS get one mid-epoch stop
each.
"""
import contextlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import stnas.methods.stnas as stnas_method
from stnas.cli import main
from stnas.data.search import SearchData
from stnas.evaluate.snapshot import SnapshotEvaluator
from stnas.methods.stnas import ProxyConfig, SearchConfig, run_search
from stnas.spaces import Space
from stnas.strategies.evolution import EvolutionConfig
from stnas.train.differentiable import DifferentiableTrainer
from stnas.train.single_path import SinglePathTrainer

SPACE = {"type": "chain", "name": "resume-tiny", "input": {"resolution": 16, "channels": 3}, "num_classes": 4,
         "stem": {"width": 4, "kernel": 3, "stride": 1},
         "stages": [{"blocks": 2, "width": 8, "stride": 2, "ops": ["mb_k3_e3", "skip"],
                     "first_ops": ["mb_k3_e3", "mb_k5_e3"]}] * 2,
         "branch": {"distances": [2, 3], "ops": ["skip"]}, "head": {"width": 16, "dropout": 0.2}}
# 32 training images in batches of 8: 4 steps an epoch; 7 steps, snapshots after steps 5 and 7.
PROXY = dict(burn_in=3, snapshots=2, snapshot_every=2, lr=0.05, temperature=1e-2, checkpoint_every=2, seed=0)


class Killed(BaseException):
    """A stop that no handler sees (as SIGKILL): nothing is saved beyond what was already on disk."""


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convolutions on a shared 2-core machine run far faster on one thread than on two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """4 classes of 16x16 JPEGs whose colour says the class: 8 train and 3 val each (accuracies in
    twelfths, which no decimal rounding keeps)."""
    root = tmp_path_factory.mktemp("resume-data")
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 3)):
        for c in range(4):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(n):
                base = np.array([60 * c, 255 - 60 * c, 128], np.float32)
                img = np.clip(base + rng.normal(0, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / split / f"c{c}" / f"{i}.jpg", quality=90)
    return root


def search(root: Path, out: Path, resume: bool) -> dict:
    """The tiny search, every phase: supernet, scoring, evolution (3 generations), full stability."""
    space = Space.from_dict(SPACE)
    data = SearchData(root, space.resolution, batch_size=8, seed=0, recal_batches=1, backend="pil", num_threads=1)
    cfg = SearchConfig(proxy=ProxyConfig(**PROXY), evolution=EvolutionConfig(population=4, generations=2, parents=2),
                       stability="full", stability_archs=4)
    return run_search(space, data, cfg, out, resume=resume, progress=False)


def contents(out: Path) -> dict:
    """Every output file of ``out`` as compared: bytes; checkpoints as their content; summary.json
    without the folder's path; no log."""
    found = {}
    for p in sorted(out.rglob("*")):
        name = p.relative_to(out).as_posix()
        if not p.is_file() or p.name == "search.log":
            continue
        if p.suffix == ".ckpt":
            found[name] = _plain(torch.load(p, map_location="cpu", weights_only=True))
        elif p.name == "summary.json":
            found[name] = {k: v for k, v in json.loads(p.read_text()).items() if k != "out"}
        else:
            found[name] = p.read_bytes()
    return found


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, torch.Tensor):  # bit for bit: dtype, shape and every byte
        return (str(x.dtype), tuple(x.shape), x.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return x


def assert_same_outputs(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    differ = [name for name in want if got[name] != want[name]]
    assert not differ, f"outputs that differ from the uninterrupted run's: {differ}"


@pytest.fixture(scope="module")
def uninterrupted(images, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "out"
    search(images, out, resume=False)
    return contents(out)


@contextlib.contextmanager
def stop(owner, attr: str, when, error=KeyboardInterrupt):
    """Raise ``error`` in place of the first call of ``owner.attr`` for which ``when(count, *args)``
    holds (``count``: the calls so far, this one included)."""
    original = getattr(owner, attr)
    calls = [0]

    def wrapped(*args, **kwargs):
        calls[0] += 1
        if when(calls[0], *args, **kwargs):
            raise error(f"test stop in {attr}")
        return original(*args, **kwargs)

    setattr(owner, attr, wrapped)
    try:
        yield
    finally:
        setattr(owner, attr, original)


def nth(n):
    return lambda count, *args, **kwargs: count == n


def supernet_step(checkpoint_name: str, step: int):
    """Before the step after ``step`` of the supernet whose checkpoint is ``checkpoint_name``."""
    return lambda count, trainer, batch: trainer.checkpoint.name == checkpoint_name and trainer.step == step


def after_generation(k: int):
    """``evolve`` whose progress callback stops the search once generation ``k`` is scored."""
    original = stnas_method.evolve

    def evolve(space, score, cfg, budget=None, on_generation=None):
        def report(gen, population):
            if on_generation:
                on_generation(gen, population)
            if gen == k:
                raise KeyboardInterrupt(f"test stop after generation {k}")
        return original(space, score, cfg, budget, on_generation=report)

    return _patched(stnas_method, "evolve", evolve)


@contextlib.contextmanager
def _patched(owner, attr, value):
    original = getattr(owner, attr)
    setattr(owner, attr, value)
    try:
        yield
    finally:
        setattr(owner, attr, original)


def stopped_and_resumed(images, out: Path, stops) -> dict:
    """Run the search once per stop, each run resumed from the last and stopped there, then resume to
    the end; the outputs of the last run."""
    for k, make_stop in enumerate(stops):
        with make_stop():
            with pytest.raises((KeyboardInterrupt, Killed), match="test stop"):
                search(images, out, resume=k > 0)
        torch.manual_seed(1000 + k)  # a fresh process's generators are not where the last run left them
        np.random.seed(k)
        random.seed(k)
    search(images, out, resume=True)
    return contents(out)


def test_resume_in_supernet_training(images, uninterrupted, tmp_path):
    main_net = "supernet.ckpt"
    stops = [
        lambda: stop(SinglePathTrainer, "train_step", supernet_step(main_net, 1)),  # mid-epoch, in burn-in
        lambda: stop(SinglePathTrainer, "train_step", supernet_step(main_net, 3), Killed),  # killed: back to step 2
        lambda: stop(SinglePathTrainer, "train_step", supernet_step(main_net, 4)),  # at the epoch's end
        lambda: stop(SinglePathTrainer, "train_step", supernet_step(main_net, 5)),  # after the first snapshot
        lambda: stop(SnapshotEvaluator, "score_many", nth(1)),  # trained, nothing scored yet
    ]
    assert_same_outputs(stopped_and_resumed(images, tmp_path / "out", stops), uninterrupted)


def test_resume_in_scoring(images, uninterrupted, tmp_path):
    # The stability set (4 architectures x 2 snapshots) is scored first, then generation 0.
    stops = [
        lambda: stop(SnapshotEvaluator, "score_snapshot", nth(2)),  # mid-way through the stability set
        lambda: stop(SnapshotEvaluator, "score_many", nth(2)),  # the set in scores.csv, generation 0 not begun
        lambda: stop(SnapshotEvaluator, "score_snapshot", nth(2)),  # mid-way through generation 0
    ]
    assert_same_outputs(stopped_and_resumed(images, tmp_path / "out", stops), uninterrupted)


def test_resume_in_evolution(images, uninterrupted, tmp_path):
    stops = [
        lambda: after_generation(0),
        lambda: after_generation(1),  # the case: stopped after generation 1
        lambda: stop(SnapshotEvaluator, "score_snapshot", nth(2)),  # mid-way through generation 2 (0 and 1 cached)
        lambda: after_generation(2),  # every generation scored, no best_*.json yet
        lambda: stop(stnas_method, "plot_pareto", nth(1)),  # best_*.json and pareto.csv written, no figure
    ]
    assert_same_outputs(stopped_and_resumed(images, tmp_path / "out", stops), uninterrupted)


def test_resume_in_stability_runs(images, uninterrupted, tmp_path):
    # --stability full trains and scores sgld-seed1, sgd-seed0 and sgd-seed1 after the search.
    stops = [
        lambda: stop(stnas_method, "train_proxy", nth(2)),  # search done, no stability run begun
        lambda: stop(SinglePathTrainer, "train_step", supernet_step("sgld-seed1.ckpt", 2)),  # mid-training
        lambda: stop(SnapshotEvaluator, "score_many", lambda n, ev, archs, desc="": desc.startswith("stability")),
        lambda: stop(stnas_method, "train_proxy", nth(3)),  # between two runs
        lambda: stop(SinglePathTrainer, "train_step", supernet_step("sgd-seed1.ckpt", 5)),  # the last run
        lambda: stop(stnas_method, "stability_report", nth(1)),  # every run scored, no stability.json
    ]
    assert_same_outputs(stopped_and_resumed(images, tmp_path / "out", stops), uninterrupted)


# ---------------------------------------------------------------------- loaders and torch's generator

def test_reading_an_epoch_with_the_pil_loader_leaves_the_global_generator_alone(images):
    """A DataLoader without a generator of its own draws its workers' seed from torch's global one when an
    epoch starts; a run resumed mid-epoch starts its epoch at another step, and with dropout (or DrNAS's
    Dirichlet samples) drawing from the same generator, every later step would differ."""
    from stnas.data import make_loader

    loader = make_loader(images, "train", batch_size=8, image_size=16, backend="pil", num_threads=1, seed=0)
    state = torch.get_rng_state()
    assert len(list(loader)) == 4
    assert torch.equal(torch.get_rng_state(), state)


# ---------------------------------------------------------------------- the differentiable methods

CELL = {"type": "cell", "name": "nb201-tiny", "input": {"resolution": 16, "channels": 3}, "num_classes": 4,
        "cell": {"nodes": 4, "ops": ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]},
        "skeleton": {"channels": 4, "cells_per_stage": 1, "stages": 3}}
GOLD = {"type": "darts-gold", "name": "gold-tiny", "input": {"resolution": 16, "channels": 3}, "num_classes": 4,
        "cell": {"ops": ["skip_connect", "sep_conv_3x3"]}, "skeleton": {"channels": 4, "cells": 3, "stem_multiplier": 1}}
METHOD_ARGS = {
    # (space, options, the step after which it is stopped: mid-epoch 1)
    # DrNAS: 16 + 16 images (train and search halves) in batches of 8: 2 steps an epoch; Dirichlet samples
    # from torch's generator on every forward.
    "drnas": (CELL, ["--epochs", "2"], 3),
    # GOLD-NAS: 4 steps an epoch, gates trained from epoch 1, pruned as lambda grows.
    "goldnas": (GOLD, ["--epochs", "3", "--warmup-epochs", "1", "--threshold", "0.45", "--lambda0", "5",
                       "--arch-lr", "0.1", "--stable-epochs", "1"], 5),
}


@pytest.mark.parametrize("method", sorted(METHOD_ARGS))
def test_differentiable_search_resumed_mid_epoch_ends_as_uninterrupted(images, tmp_path, method):
    space, extra, stop_after = METHOD_ARGS[method]
    (tmp_path / "space.json").write_text(json.dumps(space))
    argv = ["search", "--method", method, "--space", str(tmp_path / "space.json"), "--data", str(images),
            "--batch-size", "8", "--loader", "pil", "--threads", "1", "--no-progress", *extra]
    assert main([*argv, "--out", str(tmp_path / "uninterrupted")]) == 0
    out = tmp_path / "resumed"
    with stop(DifferentiableTrainer, "train_step", lambda n, trainer, batch: trainer.step == stop_after):
        assert main([*argv, "--out", str(out)]) == 130
    torch.manual_seed(1000)
    assert main([*argv, "--out", str(out), "--resume"]) == 0
    assert_same_outputs(contents(out), contents(tmp_path / "uninterrupted"))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_resume_restores_the_device_generator(tmp_path):
    """Dropout on a GPU draws from the device's generator, which the checkpoint must carry too."""
    from stnas.methods.stnas import proxy_trainer
    from stnas.supernet import SuperNet

    space = Space.from_dict(SPACE)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 3, 16, 16, generator=g), torch.randint(0, 4, (32,), generator=g)

    def epoch(e):
        perm = torch.randperm(32, generator=torch.Generator().manual_seed(e))
        return [(x[perm[i:i + 8]], y[perm[i:i + 8]]) for i in range(0, 32, 8)]

    def trainer(ckpt=None):
        torch.manual_seed(0)  # the CPU's and every device's generator
        return proxy_trainer(SuperNet(space).cuda(), epoch, 4, 32, ProxyConfig(**PROXY), checkpoint=ckpt,
                             device="cuda", progress=False)

    full = trainer().train()
    first = trainer(tmp_path / "run.ckpt")
    first.train(stop_at=5)
    second = trainer(tmp_path / "run.ckpt")
    assert second.resume()
    second.train()
    for k, v in full.net.state_dict().items():
        assert torch.equal(v, second.net.state_dict()[k]), k
