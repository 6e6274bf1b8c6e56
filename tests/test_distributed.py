"""Data-parallel supernet training (DDP, gloo, 2 CPU processes under torchrun): replicas stay
identical, and match one process that takes the same combined batch."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stnas.optim import SGLD
from stnas.methods.stnas import ProxyConfig, arch_of_step
from stnas.spaces import Space
from stnas.supernet import SuperNet

CONFIG = dict(burn_in=4, snapshots=1, snapshot_every=2, lr=0.05, temperature=1.0, momentum=0.9,
              weight_decay=1e-3, seed=5, checkpoint_every=100)
ROOT = Path(__file__).resolve().parents[1]


class TinyShards:
    """48 fixed images; each step's combined batch of 2 x 8 is split between the ranks."""

    total, per_rank = 48, 8

    def __init__(self, rank, world):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(self.total, 3, 32, 32, generator=g)
        self.y = torch.randint(0, 10, (self.total,), generator=g)
        self.rank, self.world = rank, world
        self.steps_per_epoch = self.total // (self.per_rank * world)

    def combined(self, epoch):
        perm = torch.randperm(self.total, generator=torch.Generator().manual_seed(epoch))
        size = self.per_rank * self.world
        for s in range(self.steps_per_epoch):
            idx = perm[s * size:(s + 1) * size]
            yield self.x[idx], self.y[idx]

    def __call__(self, epoch):
        for x, y in self.combined(epoch):
            sl = slice(self.rank * self.per_rank, (self.rank + 1) * self.per_rank)
            yield x[sl], y[sl]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single_process_reference():
    """One process, the same combined batches: each half is its own forward (BatchNorm normalises
    per rank under DDP: batch statistics are not synchronised), the gradients are averaged."""
    cfg = ProxyConfig(**CONFIG)
    data = TinyShards(0, 2)
    torch.manual_seed(0)
    net = SuperNet(Space.load("demo"))
    opt = SGLD([p for p in net.parameters()], lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
               temperature=cfg.temperature, dataset_size=data.total, seed=cfg.seed)
    loss_fn = torch.nn.CrossEntropyLoss()
    step = 0
    net.train()
    while step < cfg.steps:
        for x, y in data.combined(step // data.steps_per_epoch):
            arch = arch_of_step(net.space, cfg.seed, step)
            opt.zero_grad(set_to_none=True)
            loss = sum(loss_fn(net(xh, arch), yh) for xh, yh in zip(x.chunk(2), y.chunk(2))) / 2
            loss.backward()
            opt.step()
            step += 1
            if step == cfg.steps:
                break
    return dict(net.named_parameters())


def test_ddp_replicas_stay_identical_and_match_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for k in rank0:  # identical to the bit: same gradients after all-reduce, same noise, same updates
        assert torch.equal(rank0[k], rank1[k]), k
    threads = torch.get_num_threads()
    # The workers' kernels: another thread count sums conv gradients in another order.
    torch.set_num_threads(1)
    try:
        ref = single_process_reference()
    finally:
        torch.set_num_threads(threads)
    torch.manual_seed(0)  # the initial weights every run above started from
    initial = dict(SuperNet(Space.load("demo")).named_parameters())
    moved = 0
    for k, p in ref.items():
        # Tolerance: the all-reduce sums the two halves' gradients in another order than autograd does
        # in one process; six steps of float32 rounding stay far below 1e-5.
        torch.testing.assert_close(rank0[k], p.detach(), rtol=1e-5, atol=1e-6, msg=k)
        moved += int(not torch.equal(p.detach(), initial[k].detach()))
    assert moved > len(ref) // 4  # training changed the weights: the comparison above is not of two inits


def test_torchrun_search_spreads_scoring_over_ranks_and_matches_one_process(tmp_path):
    """`torchrun --no-python stnas search --device cpu` on 2 gloo processes (on a GPU machine too): rank 0 writes the outputs, and the scores
    the two ranks computed for their halves of the architectures equal a one-process re-scoring of the
    same checkpoint with `stnas evaluate`."""
    import csv
    import json

    from stnas.cli import main
    from tests.conftest import colour_folder

    data = colour_folder(tmp_path / "data", 10, {"train": 16, "val": 4}, size=32, step=25)
    out = tmp_path / "run"
    stnas_cmd = [sys.executable, "-c", "import sys; from stnas.cli import main; sys.exit(main())"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "--no-python", *stnas_cmd, "search", "--space", "demo", "--data", str(data), "--out", str(out),
           "--burn-in", "4", "--snapshots", "2", "--snapshot-every", "2", "--batch-size", "16", "--population", "4",
           "--generations", "1", "--no-progress", "--threads", "1", "--device", "cpu"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("best under") == 1  # printed by rank 0 only
    with (out / "scores.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= 4
    archs = tmp_path / "archs.json"
    archs.write_text(json.dumps([json.loads(row["arch"]) for row in rows]))
    again = tmp_path / "again.csv"
    assert main(["evaluate", "--checkpoint", str(out / "supernet.ckpt"), "--archs", str(archs), "--data", str(data),
                 "--csv", str(again), "--no-progress", "--threads", "1", "--device", "cpu"]) == 0
    with again.open() as f:
        one_process = {row["arch"]: json.loads(row["snapshot_accuracies"]) for row in csv.DictReader(f)}
    for row in rows:
        assert json.loads(row["snapshot_accuracies"]) == pytest.approx(one_process[row["arch"]], abs=1e-9)
