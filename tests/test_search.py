"""ST-NAS's parts: the proxy trainer (SGLD/SGD, snapshots, checkpoints, resume), evolution, Pareto, tau."""
import math
import random
from dataclasses import asdict

import pytest
import torch

from stnas.optim import SGLD
from stnas.evaluate.rank import kendall_tau
from stnas.evaluate.snapshot import SnapshotEvaluator
from stnas.io import CheckpointError, load_checkpoint, save_checkpoint
from stnas.methods.stnas import ProxyConfig, arch_of_step, proxy_trainer
from stnas.strategies.evolution import Candidate, EvolutionConfig, best_under, evolve, pareto_front
from stnas.spaces import Budget, Space
from stnas.supernet import SuperNet

SPACE = Space.load("demo")


class TinyData:
    """40 fixed random images; epoch e is a permutation drawn from e alone, in batches of 8."""

    def __init__(self, n=40, batch=8):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 32, 32, generator=g)
        self.y = torch.randint(0, 10, (n,), generator=g)
        self.batch, self.steps_per_epoch, self.size = batch, n // batch, n

    def __call__(self, epoch):
        perm = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(1000 + epoch))
        for i in range(self.steps_per_epoch):
            idx = perm[i * self.batch:(i + 1) * self.batch]
            yield self.x[idx], self.y[idx]


def trainer(cfg, ckpt=None, data=None):
    torch.manual_seed(cfg.seed)
    data = data or TinyData()
    return proxy_trainer(SuperNet(SPACE), data, data.steps_per_epoch, data.size, cfg, checkpoint=ckpt,
                         progress=False)


def snapshots_of(t):
    return t.hook("snapshots").snapshots


def small_cfg(**kw):
    base = dict(burn_in=7, snapshots=2, snapshot_every=3, lr=0.05, temperature=1.0, checkpoint_every=4, seed=3)
    base.update(kw)
    return ProxyConfig(**base)


def test_optimizer_switch_sgld_and_sgd():
    t = trainer(small_cfg())
    assert isinstance(t.optimizer, SGLD)
    group = t.optimizer.param_groups[0]
    assert math.isclose(SGLD.noise_std(group), math.sqrt(2 * 0.05 * 1.0 / 40))
    t = trainer(small_cfg(optimizer="sgd"))
    assert type(t.optimizer) is torch.optim.SGD
    with pytest.raises(ValueError, match="optimizer"):
        ProxyConfig(optimizer="adam")


def test_training_takes_k_snapshots_after_burn_in_and_sgld_adds_noise():
    cfg = small_cfg()
    t = trainer(cfg)
    snaps = snapshots_of(t.train())
    assert t.step == cfg.steps == 13 and len(snaps) == 2
    assert not torch.equal(snaps[0]["stem.0.weight"], snaps[1]["stem.0.weight"])
    # Same schedule without noise: the weights differ from the SGLD run's (the noise is really applied).
    sgd = trainer(small_cfg(optimizer="sgd"))
    sgd.train()
    assert not torch.equal(sgd.net.state_dict()["stem.0.weight"], t.net.state_dict()["stem.0.weight"])


@pytest.mark.parametrize("optimizer", ["sgld", "sgd"])
@pytest.mark.parametrize("stop", [5, 8])  # mid-epoch, and inside the snapshot phase
def test_resumed_run_ends_with_the_same_weights(tmp_path, optimizer, stop):
    cfg = small_cfg(optimizer=optimizer)
    full = trainer(cfg)
    full.train()
    ckpt = tmp_path / "run.ckpt"
    first = trainer(cfg, ckpt)
    first.train(stop_at=stop)
    assert load_checkpoint(ckpt, kind="supernet")["step"] == stop
    second = trainer(cfg, ckpt)  # a fresh process would start exactly so
    assert second.resume()
    second.train()
    for (k, a), b in zip(full.net.state_dict().items(), second.net.state_dict().values()):
        assert torch.equal(a, b), k
    assert len(snapshots_of(second)) == len(snapshots_of(full))
    for sa, sb in zip(snapshots_of(full), snapshots_of(second)):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_ctrl_c_writes_a_checkpoint_that_resumes_to_the_same_weights(tmp_path):
    cfg = small_cfg()
    full = trainer(cfg)
    full.train()

    class Interrupting(TinyData):
        def __call__(self, epoch):
            for i, batch in enumerate(super().__call__(epoch)):
                if epoch == 1 and i == 2:
                    raise KeyboardInterrupt
                yield batch

    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(KeyboardInterrupt):
        trainer(cfg, ckpt, Interrupting()).train()
    assert load_checkpoint(ckpt)["step"] == 7
    resumed = trainer(cfg, ckpt)
    resumed.resume()
    resumed.train()
    for a, b in zip(full.net.state_dict().values(), resumed.net.state_dict().values()):
        assert torch.equal(a, b)


def test_resume_refuses_other_settings(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    trainer(small_cfg(), ckpt).train(stop_at=4)
    with pytest.raises(CheckpointError, match="other settings"):
        trainer(small_cfg(lr=0.2), ckpt).resume()


def test_resume_accepts_another_checkpoint_interval(tmp_path):
    full = trainer(small_cfg())
    full.train()
    ckpt = tmp_path / "run.ckpt"
    trainer(small_cfg(checkpoint_every=4), ckpt).train(stop_at=5)
    resumed = trainer(small_cfg(checkpoint_every=2), ckpt)
    assert resumed.resume()
    resumed.train()
    for a, b in zip(full.net.state_dict().values(), resumed.net.state_dict().values()):
        assert torch.equal(a, b)


def test_checkpoints_refuse_truncated_foreign_and_unsafe_files(tmp_path):
    good = save_checkpoint(tmp_path / "a.ckpt", {"x": torch.arange(1000)}, kind="supernet")
    assert [p.name for p in tmp_path.iterdir()] == ["a.ckpt"]  # no temporary file left behind
    assert torch.equal(load_checkpoint(good, kind="supernet")["x"], torch.arange(1000))
    data = good.read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "cut.ckpt")
    torch.save({"weights": torch.ones(3)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an stnas checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save({"format": "stnas-checkpoint", "version": 1, "kind": "x", "obj": Candidate}, tmp_path / "unsafe.pt")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(tmp_path / "unsafe.pt")
    with pytest.raises(CheckpointError, match="expected a 'model'"):
        load_checkpoint(good, kind="model")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "none.ckpt")


def test_arch_of_step_depends_on_seed_and_step_only():
    assert arch_of_step(SPACE, 1, 5) == arch_of_step(SPACE, 1, 5)
    assert len({arch_of_step(SPACE, 1, s) for s in range(20)}) > 15


def test_evaluator_scores_are_accuracies_over_snapshots():
    cfg = small_cfg()
    t = trainer(cfg)
    snaps = snapshots_of(t.train())
    data = TinyData()
    ev = SnapshotEvaluator(t.net, snaps, [data.x[:16]], [(data.x, data.y)], progress=False)
    archs = [SPACE.sample(random.Random(i)) for i in range(3)]
    before = {k: v.clone() for k, v in t.net.state_dict().items()}
    accs = ev.score_many(archs)
    assert len(accs) == 3 and all(len(a) == 2 for a in accs)
    for a in accs:
        for v in a:
            assert 0 <= v <= 1 and round(v * 40) == pytest.approx(v * 40)  # a fraction of 40 images
    assert all(torch.equal(before[k], v) for k, v in t.net.state_dict().items())  # weights restored


def test_kendall_tau_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(0)
    for n in (2, 5, 17):
        a = [rng.randint(0, 4) for _ in range(n)]
        b = [rng.randint(0, 4) for _ in range(n)]
        want = stats.kendalltau(a, b).statistic
        got = kendall_tau(a, b)
        assert (math.isnan(want) and math.isnan(got)) or got == pytest.approx(want, abs=1e-12)


def test_evolution_never_returns_an_architecture_over_budget():
    lo, hi = SPACE.madds_range()
    budget = lo + 0.4 * (hi - lo)
    calls = []

    def score(archs):  # prefers heavy architectures, so the budget is what holds them back
        calls.append(len(archs))
        return [SPACE.madds(a) / hi + 0.01 * random.Random(a.to_json()).random() for a in archs]

    cfg = EvolutionConfig(population=10, generations=4, parents=4, seed=1)
    generations = {}
    found = evolve(SPACE, score, cfg, Budget(budget),
                   on_generation=lambda g, pop: generations.setdefault(g, max(c.score for c in pop)))
    assert found and all(c.madds <= budget for c in found)
    assert len({c.arch for c in found}) == len(found) == sum(calls)  # nothing scored twice
    best = best_under(found, Budget(budget))
    assert best.score == max(c.score for c in found)
    assert best_under(found, Budget(lo - 1)) is None
    # Evolution improves on its random first generation (the score rewards MAdds up to the budget).
    assert sorted(generations) == [0, 1, 2, 3, 4] and generations[4] > generations[0]
    again = evolve(SPACE, score, cfg, Budget(budget))
    assert [c.arch for c in again] == [c.arch for c in found]  # same seed, same search


def test_pareto_front_equals_brute_force():
    rng = random.Random(2)
    cands = [Candidate(SPACE.sample(rng), rng.randint(0, 20), 0, rng.random()) for _ in range(60)]
    front = pareto_front(cands)
    dominated = {id(c) for c in cands for d in cands
                 if (d.madds <= c.madds and d.score > c.score) or (d.madds < c.madds and d.score >= c.score)}
    want = sorted((c for c in cands if id(c) not in dominated), key=lambda c: c.madds)
    assert [(c.madds, c.score) for c in front] == [(c.madds, c.score) for c in want]


def test_config_round_trip():
    cfg = small_cfg()
    assert ProxyConfig.from_dict(asdict(cfg)) == cfg
    assert cfg.snapshot_steps() == [10, 13]


def test_bf16_autocast_trains_in_bf16_with_fp32_master_weights_close_to_fp32():
    cfg = small_cfg(temperature=0.0)
    torch.manual_seed(cfg.seed)
    initial = {k: v.clone() for k, v in SuperNet(SPACE).state_dict().items()}
    fp32 = trainer(cfg)
    fp32.train()
    torch.manual_seed(cfg.seed)
    data = TinyData()
    amp = proxy_trainer(SuperNet(SPACE), data, data.steps_per_epoch, data.size, cfg, progress=False, amp=True)
    seen = []
    hook = amp.net.stem[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    amp.train()
    hook.remove()
    assert seen and set(seen) == {torch.bfloat16}  # the convolutions ran in bf16 ...
    state = amp.net.state_dict()
    assert all(v.dtype == initial[k].dtype for k, v in state.items())  # ... the master weights stayed fp32
    # The classifier's update against the fp32 run's: 1% apart (measured). Convolutions followed by BN
    # are not compared: their gradients cancel to a small remainder, which bf16 autocast moves by ~27%
    # already in one step on this random data, with stnas's ops and with PyTorch's alike (2026-11-23).
    k = "head.classifier.weight"
    ref, got = fp32.net.state_dict()[k] - initial[k], state[k] - initial[k]
    assert ref.norm() > 0 and (got - ref).norm() / ref.norm() < 0.05
    assert all(math.isfinite(loss) for _, loss in amp.losses)


def test_bf16_scoring_agrees_with_fp32_scoring():
    t = trainer(small_cfg())
    snaps = snapshots_of(t.train())
    data = TinyData()
    archs = [SPACE.sample(random.Random(i)) for i in range(3)]
    fp32 = SnapshotEvaluator(t.net, snaps, [data.x[:16]], [(data.x, data.y)], progress=False).score_many(archs)
    bf16 = SnapshotEvaluator(t.net, snaps, [data.x[:16]], [(data.x, data.y)], progress=False, amp=True).score_many(archs)
    for a, b in zip(fp32, bf16):  # a prediction may flip where two logits are within bf16 rounding
        assert all(abs(x - y) <= 3 / 40 for x, y in zip(a, b)), (a, b)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_training_step_never_synchronises_with_the_host():
    cfg = small_cfg()
    data = TinyData()
    torch.manual_seed(cfg.seed)
    net = SuperNet(SPACE).cuda().to(memory_format=torch.channels_last)
    t = proxy_trainer(net, data, data.steps_per_epoch, data.size, cfg, device="cuda", progress=False, amp=True,
                      channels_last=True)
    batches = [(x.cuda(), y.cuda()) for x, y in data(0)]
    t._accumulate(t.train_step(batches[0]))  # the first step builds caches and compiles kernels
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for x, y in batches[1:]:
            t._accumulate(t.train_step((x, y)))
            t.step += 1
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert torch.isfinite(t._loss_sum)


def test_stability_report_against_numpy():
    import numpy as np

    from stnas.methods.stnas import stability_report

    rng = random.Random(4)
    archs = [SPACE.sample(random.Random(i)) for i in range(6)]
    runs = {f"{opt}-seed{s}": [[rng.random() for _ in range(3)] for _ in archs] for opt in ("sgld", "sgd")
            for s in (0, 1)}
    report = stability_report(SPACE, runs, archs)
    for name, accs in runs.items():
        r, acc = report["runs"][name], np.array(accs)
        assert r["scores"] == pytest.approx(acc.mean(1).tolist())
        assert r["mean_score_spread_across_snapshots"] == pytest.approx(acc.std(1).mean())
        assert r["max_score_spread_across_snapshots"] == pytest.approx(acc.std(1).max())
        taus = [kendall_tau(acc[:, i].tolist(), acc[:, j].tolist()) for i, j in ((0, 1), (0, 2), (1, 2))]
        assert r["mean_kendall_tau_between_snapshots"] == pytest.approx(np.mean(taus))
    for opt in ("sgld", "sgd"):
        a, b = np.array(runs[f"{opt}-seed0"]).mean(1), np.array(runs[f"{opt}-seed1"]).mean(1)
        assert report["kendall_tau_between_seeds"][opt] == pytest.approx(kendall_tau(a.tolist(), b.tolist()))


def test_an_epoch_shorter_than_promised_stops_training_at_its_end():
    """A loader that gives fewer batches than steps_per_epoch would silently shift every later step's
    data; the trainer names the epoch as soon as it runs out, having trained only the batches it gave, and
    without reading that epoch again."""
    data = TinyData()
    opened = []

    def short(epoch):
        opened.append(epoch)
        batches = list(data(epoch))
        return iter(batches[:3] if epoch == 1 else batches)

    t = proxy_trainer(SuperNet(SPACE), short, data.steps_per_epoch, data.size, small_cfg(), progress=False)
    with pytest.raises(RuntimeError, match="epoch 1 gave 3 batches, expected 5"):
        t.train()
    assert t.step == data.steps_per_epoch + 3
    assert opened == [0, 1]  # not read a second time (an ImageNet epoch) before the error
