"""stnas.spaces: counting, costs against hook counts on built models, validation, sampling."""
import copy
import itertools
import json
import random

import pytest
import torch
from torch import nn

from stnas.spaces import Arch, Budget, Space, SpaceError, builtin_spaces
from stnas.supernet import build


def hook_count(model: nn.Module, resolution: int, channels: int = 3) -> tuple[int, int]:
    """MAdds by forward hooks on every conv and linear layer of a built model (one image), and its
    parameter count: the independent reference for the analytic counter."""
    madds = 0

    def conv_hook(m, inp, out):
        nonlocal madds
        madds += out.numel() // out.shape[0] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m, inp, out):
        nonlocal madds
        madds += m.in_features * m.out_features

    handles = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    handles += [m.register_forward_hook(linear_hook) for m in model.modules() if isinstance(m, nn.Linear)]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, channels, resolution, resolution))
    for h in handles:
        h.remove()
    return madds, sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["tas", "tas-wide"])
def test_default_space_counts_two_to_the_35_topologies(name):
    space = Space.load(name)
    assert len(space.nodes) == 20 and len(space.stem_edges) == 19
    assert len(space.branch_edges) == 35
    pairs = {(e.src, e.dst) for e in space.branch_edges}
    assert pairs == {(i, i + d) for d in (2, 3) for i in range(20 - d)}
    assert space.count_topologies() == 2 ** 35 == 34_359_738_368


def test_the_wide_space_holds_both_paper_budgets_and_the_default_one_the_first():
    # ST-NAS-A was searched at 326M MAdds, ST-NAS-B at 503M.
    lo, hi = Space.load("tas").madds_range()
    assert lo < 326e6 < hi < 503e6
    lo, hi = Space.load("tas-wide").madds_range()
    assert lo < 326e6 and 503e6 < hi


def test_mobilenetv2_matches_its_published_figures_and_the_hook_count():
    space = Space.load("mobilenetv2")
    assert space.count_architectures() == 1
    arch = space.sample(random.Random(0))
    madds, params = space.cost(arch)
    assert abs(madds - 300e6) / 300e6 < 0.01
    assert abs(params - 3.5e6) / 3.5e6 < 0.02
    assert hook_count(build(arch, space), 224) == (madds, params)


@pytest.mark.parametrize("name,n", [("demo", 6), ("tas", 2), ("tas-wide", 1)])
def test_analytic_cost_equals_hook_count_on_random_architectures(name, n):
    space = Space.load(name)
    rng = random.Random(7)
    archs = [space.sample(rng) for _ in range(n)] + [space.smallest(), space.largest()]
    for arch in archs:
        assert hook_count(build(arch, space), space.resolution) == space.cost(arch)


def _tiny_space_dict():
    return {"name": "tiny", "input": {"resolution": 9, "channels": 3}, "num_classes": 3,
            "stem": {"width": 4, "kernel": 3, "stride": 1},
            "stages": [{"blocks": 2, "width": 6, "stride": 2, "ops": ["mb_k3_e1", "skip"], "first_ops": ["mb_k5_e3"]},
                       {"blocks": 1, "width": 8, "stride": 1, "ops": ["mb_k3_e3", "mb_k7_e6", "skip"]}],
            "branch": {"distances": [2, 3], "ops": ["skip", "mb_k3_e1"]},
            "head": {"width": 10}}


def test_counts_and_madds_range_equal_brute_force_enumeration():
    space = Space.from_dict(_tiny_space_dict())
    genes = [e.ops for e in space.stem_edges] + [(None,) + e.ops for e in space.branch_edges]
    n = len(space.stem_edges)
    archs = [Arch(tuple(g[:n]), tuple(g[n:])) for g in itertools.product(*genes)]
    assert len(set(archs)) == space.count_architectures()
    assert len({a.topology for a in archs}) == space.count_topologies()
    madds = [space.madds(a) for a in archs]
    assert (min(madds), max(madds)) == space.madds_range()
    assert space.madds(space.smallest()) == min(madds) and space.madds(space.largest()) == max(madds)
    for a in random.Random(1).sample(archs, 5):
        assert hook_count(build(a, space), 9) == space.cost(a)


def test_architecture_json_round_trip_and_hashing():
    space = Space.load("tas")
    rng = random.Random(3)
    for _ in range(20):
        a = space.sample(rng)
        b = Arch.from_json(json.dumps(json.loads(a.to_json())))
        assert a == b and hash(a) == hash(b)
        assert space.validate(b) is b
    assert len({space.sample(random.Random(s)) for s in range(50)}) == 50


@pytest.mark.parametrize("name", builtin_spaces())
def test_space_file_round_trip(name):
    space = Space.load(name)
    assert Space.from_dict(space.to_dict()) == space
    assert Space.from_dict(json.loads(json.dumps(space.to_dict()))).info()["architectures"] == space.count_architectures()


def test_invalid_architectures_name_the_field():
    space = Space.load("demo")
    good = space.sample(random.Random(0))
    with pytest.raises(SpaceError, match=r"arch.ops\[3\].*'mb_k9_e3'"):
        space.validate(Arch(good.ops[:3] + ("mb_k9_e3",) + good.ops[4:], good.branches))
    with pytest.raises(SpaceError, match=r"arch.ops has 5 entries.*6 stem edges"):
        space.validate(Arch(good.ops[:5], good.branches))
    with pytest.raises(SpaceError, match=r"arch.branches has 10 entries.*9 branch edges"):
        space.validate(Arch(good.ops, good.branches + (None,)))
    with pytest.raises(SpaceError, match=r"arch.branches\[2\]: 'mb_k3_e3'"):
        space.validate(Arch(good.ops, good.branches[:2] + ("mb_k3_e3",) + good.branches[3:]))
    with pytest.raises(SpaceError, match=r"arch.ops\[0\]: 'skip'"):  # skip is not offered where the shape changes
        space.validate(Arch(("skip",) + good.ops[1:], good.branches))
    with pytest.raises(SpaceError, match="unknown field"):
        Arch.from_dict({"ops": [], "branches": [], "extra": 1})
    with pytest.raises(SpaceError, match="not valid JSON"):
        Arch.from_json("{ops: ")


def test_budgets_below_the_space_are_refused_by_name():
    space = Space.load("demo")
    lo, hi = space.madds_range()
    with pytest.raises(SpaceError, match="budget_madds"):
        Budget(lo - 1).check(space)
    with pytest.raises(SpaceError, match="budget_params"):
        Budget(None, 10).check(space)
    with pytest.raises(SpaceError, match="madds"):
        Budget(float("nan"))
    assert Budget(lo).check(space) == []
    assert "binds nothing" in Budget(hi).check(space)[0]


@pytest.mark.parametrize("edit,field", [
    (lambda d: d["stages"][0]["ops"].append("conv9"), r"stages\[0\].ops\[2\]"),
    (lambda d: d["stages"][1].update(blocks=0), r"stages\[1\].blocks"),
    (lambda d: d["stages"][0].pop("width"), r"stages\[0\]' is missing 'width'"),
    (lambda d: d.update(colour="red"), "unknown field"),
    (lambda d: d["stem"].update(kernel=4), "stem.kernel"),
    (lambda d: d["branch"].update(distances=[1]), "branch.distances"),
    (lambda d: d["head"].update(pool="max"), "head.pool"),
    (lambda d: d.pop("num_classes"), "num_classes"),
    (lambda d: d["input"].update(resolution="big"), "input.resolution"),
    (lambda d: d.update(stages=[]), "stages"),
])
def test_invalid_space_files_name_the_field(edit, field):
    data = copy.deepcopy(_tiny_space_dict())
    edit(data)
    with pytest.raises(SpaceError, match=field):
        Space.from_dict(data)


def test_unreadable_space_file_and_unknown_name(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpaceError, match="cannot parse"):
        Space.load(bad)
    with pytest.raises(SpaceError, match="neither a file nor a built-in"):
        Space.load("no-such-space")
    good = tmp_path / "tiny.json"
    good.write_text(json.dumps(_tiny_space_dict()))
    assert Space.load(good).name == "tiny"


def test_sampling_mutation_and_crossover_stay_in_the_space_and_budget():
    space = Space.load("tas")
    rng = random.Random(11)
    lo, hi = space.madds_range()
    budget = lo + 0.3 * (hi - lo)
    a, b = space.sample(rng, Budget(budget)), space.sample(rng, Budget(budget))
    for _ in range(30):
        x = space.sample(rng, Budget(budget))
        assert space.madds(x) <= budget
        m = space.mutate(x, rng, prob=0.05)
        assert m != x and space.validate(m) is m
        c = space.crossover(a, b, rng)
        space.validate(c)
        assert all(g in (ga, gb) for g, ga, gb in zip(c.ops + c.branches, a.ops + a.branches, b.ops + b.branches))
    # Branch edges are on with probability 1/2: about half of 35 * 200 draws.
    on = sum(sum(space.sample(rng).topology) for _ in range(200))
    assert abs(on / (35 * 200) - 0.5) < 0.05
