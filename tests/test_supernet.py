"""stnas.supernet: shapes, active-path-only execution, node sums, weight inheritance, BN recalibration."""
import random

import pytest
import torch
from torch import nn

from stnas.ops import last_backend
from stnas.spaces import Space
from stnas.supernet import SuperNet, build, recalibrate_bn


def reference_forward(net, x, arch):
    """The chain computed with plain Python sums: the definition the supernet's masked_path_sum
    aggregation must reproduce."""
    feats = [net.stem(x)]
    for k in range(len(net.edges)):
        j = k + 1
        y = net.edges[k][arch.ops[k]](feats[k])
        for b, e in enumerate(net.space.branch_edges):
            if e.dst == j and arch.branches[b] is not None:
                y = y + net.branches[b][arch.branches[b]](feats[e.src])
        feats.append(y)
    return net.head(feats[-1])


@pytest.mark.parametrize("name,batch", [("demo", 3), ("tas", 1)])
def test_output_shape_for_random_architectures(name, batch):
    space = Space.load(name)
    net = SuperNet(space).eval()
    rng = random.Random(5)
    for _ in range(3 if name == "demo" else 1):
        arch = space.sample(rng)
        out = net(torch.randn(batch, 3, space.resolution, space.resolution), arch)
        assert out.shape == (batch, space.num_classes) and torch.isfinite(out).all()


def test_node_sums_match_the_plain_python_chain():
    space = Space.load("demo")
    net = SuperNet(space).eval()
    rng = random.Random(9)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        for _ in range(5):
            arch = space.sample(rng)
            torch.testing.assert_close(net(x, arch), reference_forward(net, x, arch), rtol=1e-5, atol=1e-5)
    arch = space.largest()  # every branch on: some node sums three paths
    with torch.no_grad():
        net(x, arch)
    assert last_backend("masked_path_sum") in ("cpp", "reference")


def test_inactive_paths_get_no_gradient_and_are_not_run():
    space = Space.load("demo")
    net = SuperNet(space)
    arch = space.sample(random.Random(2))
    active = {id(p) for m in net.active_modules(arch) for p in m.parameters()}
    calls = []
    for m in net.modules():
        m.register_forward_hook(lambda mod, i, o: calls.append(id(mod)))
    net(torch.randn(2, 3, 32, 32), arch).sum().backward()
    for name, p in net.named_parameters():
        if id(p) in active:
            assert p.grad is not None, name
        else:
            assert p.grad is None, f"{name} is inactive but got a gradient"
    active_modules = {id(m) for top in net.active_modules(arch) for m in top.modules()}
    assert set(calls) <= active_modules | {id(net)}


def test_standalone_model_inherits_the_supernet_and_computes_the_same():
    space = Space.load("demo")
    net = SuperNet(space)
    rng = random.Random(4)
    x = torch.randn(5, 3, 32, 32)
    for m in net.modules():  # non-trivial BN statistics, so that inheriting them matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    net.eval()
    for _ in range(3):
        arch = space.sample(rng)
        model = build(arch, space).inherit(net).eval()
        assert sum(p.numel() for p in model.parameters()) == space.params(arch)
        with torch.no_grad():
            torch.testing.assert_close(model(x), net(x, arch), rtol=0, atol=0)
    with pytest.raises(ValueError, match="own architecture"):
        model(x, space.sample(random.Random(99)))


def test_bn_recalibration_gives_the_exact_statistics_of_the_architecture():
    space = Space.load("demo")
    net = SuperNet(space)
    arch, other = space.sample(random.Random(1)), space.sample(random.Random(2))
    batches = [torch.randn(6, 3, 32, 32) * 2 + 1 for _ in range(3)]
    # The stem's BN sees the stem conv's output: its exact per-channel mean and (unbiased) variance.
    with torch.no_grad():
        conv_out = torch.cat([net.stem[0](b) for b in batches])
    inactive = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)
                and not any(m is n for top in net.active_modules(arch) for n in top.modules())]
    before = [m.running_mean.clone() for m in inactive]
    seen = recalibrate_bn(net, arch, batches)
    assert seen == 18
    bn = net.stem[1]
    # momentum=None averages the per-batch statistics: equal batches, so the mean is exact.
    per_batch_var = torch.stack([c.var((0, 2, 3), unbiased=True) for c in conv_out.split(6)]).mean(0)
    torch.testing.assert_close(bn.running_mean, conv_out.mean((0, 2, 3)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.running_var, per_batch_var, rtol=1e-4, atol=1e-5)
    assert bn.momentum == 0.1 and net.training
    for m, b in zip(inactive, before):
        assert torch.equal(m.running_mean, b), "recalibration touched an inactive module"
    assert other != arch


def test_build_from_an_exported_architecture_file_uses_the_space_it_names(tmp_path):
    import json

    from stnas import models
    from stnas.spaces import SpaceError

    space = Space.load("demo")
    arch = space.sample(random.Random(3))
    path = tmp_path / "best.json"
    path.write_text(json.dumps({"space": "demo", "score": 0.5, "arch": arch.to_dict()}))
    for source in (path, str(path), json.loads(path.read_text())):
        model = models.build(source)
        assert model.space == space and model.arch == arch
    with pytest.raises(ValueError, match="name the space"):
        models.build(arch)
    with pytest.raises(SpaceError, match="does not exist"):
        models.build(tmp_path / "missing.json")
