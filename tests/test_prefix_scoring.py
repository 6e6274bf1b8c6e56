"""Scoring many architectures with shared stage prefixes (stnas.evaluate.prefix) against each
architecture recalibrated and run on its own, written here from nn.BatchNorm2d's definition."""
import copy
import random

import pytest
import torch
from torch import nn

from stnas.evaluate.prefix import PrefixScorer
from stnas.evaluate.snapshot import SnapshotEvaluator
from stnas.spaces import Arch, CellArch, Space
from stnas.supernet import CellPathNet, ChainNet
from tests.test_single_path_cell import ARCHS, _perturb_bn, tiny_space


def chain_space() -> Space:
    data = Space.load("demo").to_dict()
    data["head"]["dropout"] = 0.3  # the scorer must keep dropout off while BN recalibrates
    return Space.from_dict(data)


def with_op(space, arch: Arch, layer: int, rng) -> Arch:
    """``arch`` with another op at stem edge ``layer``: the same prefix up to it."""
    others = [o for o in space.stem_edges[layer].ops if o != arch.ops[layer]]
    return Arch(arch.ops[:layer] + (rng.choice(others),) + arch.ops[layer + 1:], arch.branches)


def chain_archs(space, seed=0):
    """Random architectures, variants of the first that differ from some layer on or in one branch, and a
    duplicate: every kind of sharing."""
    rng = random.Random(seed)
    base = space.sample(rng)
    archs = [base, space.sample(rng), space.sample(rng)]
    archs += [with_op(space, base, k, rng) for k in (1, 3, len(space.stem_edges) - 1)]
    b = next(i for i, e in enumerate(space.branch_edges) if e.dst > 2)
    flipped = list(base.branches)
    flipped[b] = None if flipped[b] is not None else space.branch_edges[b].ops[0]
    archs += [Arch(base.ops, tuple(flipped)), base]
    return archs


def reference_logits(net, arch, recal, evals):
    """Each architecture alone: every BatchNorm reset, its statistics the cumulative mean over the
    recalibration batches in training mode (the rest of the net in eval mode), then the held-out
    batches in eval mode."""
    net = copy.deepcopy(net)
    net.eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
            m.train()
    with torch.no_grad():
        for x in recal:
            net(x, arch)
        net.eval()
        return [net(x, arch) for x in evals]


def scored_logits(net, archs, recal, evals, share=True):
    scorer = PrefixScorer(net, archs, share=share)
    scorer.recalibrate(recal)
    got = {}
    scorer.forward(evals, lambda idx, logits, i: [got.setdefault((a, i), logits.clone()) for a in idx])
    return scorer, [[got[a, i] for i in range(len(evals))] for a in range(len(archs))]


def _bn_state(net):
    return [(m, {k: b for k, b in m._buffers.items()}, {k: b.clone() for k, b in m._buffers.items()}, m.momentum,
             m.training) for m in net.modules() if isinstance(m, nn.BatchNorm2d)]


def _assert_bn_state_unchanged(before):
    for m, objects, values, momentum, training in before:
        assert all(m._buffers[k] is objects[k] for k in objects)  # the module's own tensors are back ...
        assert all(torch.equal(m._buffers[k], values[k]) for k in values)  # ... and untouched
        assert m.momentum == momentum and m.training == training


@pytest.mark.parametrize("kind", ["chain", "cell"])
def test_shared_prefix_scores_equal_each_architecture_alone_in_float64(kind):
    torch.manual_seed(0)
    if kind == "chain":
        space = chain_space()
        net, archs, size = ChainNet(space), chain_archs(space), 32
    else:
        net, size = CellPathNet(tiny_space()), 16
        archs = [CellArch.from_nb201(a) for a in ARCHS] + [CellArch.from_nb201(ARCHS[0])]
    _perturb_bn(net)
    net = net.double().train()
    g = torch.Generator().manual_seed(1)
    recal = [torch.randn(n, 3, size, size, generator=g, dtype=torch.float64) for n in (5, 3, 7)]
    evals = [torch.randn(n, 3, size, size, generator=g, dtype=torch.float64) for n in (4, 6)]
    before = _bn_state(net)
    scorer, got = scored_logits(net, archs, recal, evals)
    _assert_bn_state_unchanged(before)
    assert net.training
    for arch, logits in zip(archs, got):
        want = reference_logits(net, arch, recal, evals)
        for a, b in zip(logits, want):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # Distinct results: a scorer that gave every architecture the same statistics would fail here.
    assert not torch.allclose(got[0][0], got[1][0])
    if kind == "chain":
        # Shared: the stem once per batch for all of them, the duplicate never on its own.
        stages = len(net.stages(archs[0]))
        assert scorer.stage_runs < (len(archs) - 2) * stages * (len(recal) + len(evals))


def test_the_stem_runs_once_per_batch_when_shared_and_per_architecture_when_not():
    torch.manual_seed(0)
    space = chain_space()
    net = ChainNet(space)
    archs = chain_archs(space, seed=3)
    calls = []
    net.stem.register_forward_hook(lambda m, i, o: calls.append(1))
    batches = [torch.randn(4, 3, 32, 32) for _ in range(3)]
    for share, per_batch in [(True, 1), (False, len(archs))]:
        calls.clear()
        _, logits = scored_logits(net, archs, batches[:2], batches[2:], share=share)
        assert len(calls) == per_batch * 3
    shared = scored_logits(net, archs, batches[:2], batches[2:])[1]
    alone = scored_logits(net, archs, batches[:2], batches[2:], share=False)[1]
    for a, b in zip(shared, alone):  # the same float32 computations: bit for bit
        assert torch.equal(a[0], b[0])


def test_a_net_without_stages_is_scored_whole():
    """Any single-path net with forward(x, arch) and active_modules(arch) scores, sharing nothing."""
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = ChainNet(chain_space())

        def forward(self, x, arch):
            return self.net(x, arch)

        def active_modules(self, arch):
            return self.net.active_modules(arch)

    torch.manual_seed(0)
    plain = Plain().double()
    _perturb_bn(plain)
    archs = chain_archs(plain.net.space)[:3]
    recal = [torch.randn(4, 3, 32, 32, dtype=torch.float64) for _ in range(2)]
    evals = [torch.randn(3, 3, 32, 32, dtype=torch.float64)]
    _, got = scored_logits(plain, archs, recal, evals)
    for arch, logits in zip(archs, got):
        torch.testing.assert_close(logits[0], reference_logits(plain, arch, recal, evals)[0], rtol=1e-12, atol=1e-12)


def test_snapshot_evaluator_accuracies_are_the_same_shared_or_not():
    torch.manual_seed(0)
    space = chain_space()
    net = ChainNet(space)
    _perturb_bn(net)
    snaps = []
    for s in range(2):
        for p in net.parameters():
            p.data.add_(0.05 * torch.randn_like(p))
        snaps.append({k: v.clone() for k, v in net.state_dict().items()})
    x, y = torch.randn(24, 3, 32, 32), torch.randint(0, 10, (24,))
    archs = chain_archs(space, seed=5)
    kw = dict(recal_batches=[x[:8], x[8:16]], eval_batches=[(x[:12], y[:12]), (x[12:], y[12:])], progress=False)
    shared = SnapshotEvaluator(net, snaps, **kw).score_many(archs)
    alone = SnapshotEvaluator(net, snaps, share=False, **kw).score_many(archs)
    assert shared == alone
    # Against the definition: the fraction of the 24 images each architecture gets right, per snapshot.
    for k, snap in enumerate(snaps):
        net.load_state_dict(snap)
        for a, arch in enumerate(archs):
            logits = reference_logits(net, arch, kw["recal_batches"], [x[:12], x[12:]])
            want = sum(int((lg.argmax(1) == t).sum()) for lg, t in zip(logits, (y[:12], y[12:]))) / 24
            assert shared[a][k] == want
    assert shared[0] == shared[-1]  # the duplicate
