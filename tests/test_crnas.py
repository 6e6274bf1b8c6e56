"""CR-NAS (arXiv 1912.11234) without torchvision: the resnet space (stage sums, dilation counts, the
standard ResNets' published MAdds and parameters, a hook count), the supernet against the standalone
ResNet of a sampled architecture, beam search on a synthetic scorer, the generated COCO-format set and
its reader, bad annotation files, and `stnas search --method crnas --task classification` with exact
resume. Detection (torchvision, pycocotools) is in tests/detection/."""
import json
import random

import pytest
import torch

from stnas.cli import main
from stnas.data.coco import CocoSplit, arch_split, read_coco_json
from stnas.data.coco_shapes import CATEGORIES, write_shapes_coco
from stnas.data.errors import DataError
from stnas.spaces import Space, SpaceError
from stnas.spaces.resnet import CRNAS_STAGES, ResNetArch, ResNetSpace
from stnas.strategies.beam import OPEN, BeamConfig, beam_search, complete
from stnas.supernet import SuperNet, build, inherit
from stnas.supernet.resnet import DilatedConv, ResNetNet, batch_statistics

TINY_BOTTLENECK = {"type": "resnet", "name": "tiny-bottleneck", "input": {"resolution": 32, "channels": 3},
                   "num_classes": 5,
                   "skeleton": {"block": "bottleneck", "stem": {"width": 8, "kernel": 3, "stride": 1, "pool": False},
                                "widths": [4, 8, 8, 16], "blocks": [2, 2, 2, 2]},
                   "search": {}}

# ---------------------------------------------------------------------- the space

# Published figures (torchvision's model zoo table: GFLOPS as multiply-adds, exact parameter counts).
PUBLISHED = {"resnet18": (1.814e9, 11_689_512), "resnet34": (3.664e9, 21_797_672),
             "resnet50": (4.089e9, 25_557_032), "resnet101": (7.801e9, 44_549_160)}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_standard_resnets_are_members_with_their_published_cost(name):
    space = Space.load(name)
    madds, params = space.cost(space.reference())
    assert params == PUBLISHED[name][1]
    assert madds == pytest.approx(PUBLISHED[name][0], rel=1e-3)
    assert space.reference().blocks in space.allocations


def test_resnet50_space_keeps_sixteen_blocks_and_counts_dilations():
    space = Space.load("resnet50")
    assert space.total == 16 and space.stage_choices == CRNAS_STAGES
    assert all(sum(a) == 16 for a in space.allocations)
    brute = sum(1 for a in range(1, 11) for b in range(1, 11) for c in CRNAS_STAGES[2] for d in CRNAS_STAGES[3]
                if a + b + c + d == 16)
    assert space.count_allocations() == brute == 153
    assert len(space.decisions()) == 4 + 16
    assert space.count_architectures() == 153 * 3 ** 16  # 3^16 ~ 4.3e7 spatial options, as the paper counts
    rng = random.Random(0)
    arch = space.sample(rng)
    for _ in range(200):
        arch = space.mutate(arch, rng, 0.2) if rng.random() < 0.7 else space.crossover(arch, space.sample(rng), rng)
        assert sum(arch.blocks) == 16 and len(arch.dilations) == 16 and space.validate(arch) is arch
    with pytest.raises(SpaceError, match="sums to 17"):
        space.validate(ResNetArch((4, 4, 6, 3), (1,) * 16))
    with pytest.raises(SpaceError, match=r"arch.dilations\[0\]: 4 is not a candidate"):
        space.validate(ResNetArch((3, 4, 6, 3), (4,) + (1,) * 15))


def test_dilation_changes_no_cost_and_ranges_respect_the_sum():
    space = Space.load("resnet50")
    a = ResNetArch((3, 4, 6, 3), (1,) * 16)
    assert space.cost(a) == space.cost(ResNetArch((3, 4, 6, 3), (3, 2) * 8))
    lo, hi = space.madds_range()
    costs = [space.cost(ResNetArch(b, (1,) * 16)).madds for b in space.allocations]
    assert (lo, hi) == (min(costs), max(costs))


def test_space_round_trips_and_reports_bad_fields():
    space = Space.load("resnet50")
    assert Space.from_dict(json.loads(json.dumps(space.to_dict()))) == space
    arch = space.sample(random.Random(3))
    assert space.arch_from_dict(json.loads(json.dumps({"space": space.to_dict(), "arch": arch.to_dict()}))) == arch
    bad = {**TINY_BOTTLENECK, "skeleton": {**TINY_BOTTLENECK["skeleton"], "blocks": [2, 2, 1, 2]}}
    with pytest.raises(SpaceError, match=r"skeleton.blocks\[2\]' = 1 is not among"):
        Space.from_dict(bad)
    with pytest.raises(SpaceError, match="'skeleton.block' must be one of"):
        Space.from_dict({**TINY_BOTTLENECK, "skeleton": {**TINY_BOTTLENECK["skeleton"], "block": "wide"}})


def _hook_count(net, x, arch=None):
    madds = [0]

    def hook(m, i, o):
        if isinstance(m, (torch.nn.Conv2d, DilatedConv)):  # one multiply-add per weight per output position
            madds[0] += m.weight[0].numel() * o.shape[1] * o.shape[2] * o.shape[3]
        elif isinstance(m, torch.nn.Linear):
            madds[0] += m.in_features * m.out_features

    hs = [m.register_forward_hook(hook) for m in net.modules()]
    with torch.no_grad():
        net.eval()(x) if arch is None else net.eval()(x, arch)
    for h in hs:
        h.remove()
    return madds[0]


@pytest.mark.parametrize("spec", ["resnet18", "tiny"])
def test_analytic_cost_equals_a_hook_count_of_the_standalone_model(spec):
    space = Space.load("resnet18") if spec == "resnet18" else Space.from_dict(TINY_BOTTLENECK)
    archs = [space.reference()] + ([space.sample(random.Random(s)) for s in range(2)] if spec == "tiny" else [])
    for arch in archs:
        net = ResNetNet(space, arch)
        x = torch.randn(1, 3, space.resolution, space.resolution)
        assert _hook_count(net, x) == space.cost(arch).madds
        assert sum(p.numel() for p in net.parameters()) == space.cost(arch).params


# ---------------------------------------------------------------------- the supernet

@pytest.mark.parametrize("spec", ["resnet-det-demo", "tiny"])
def test_supernet_path_equals_the_standalone_resnet_with_inherited_weights(spec):
    space = Space.load(spec) if spec != "tiny" else Space.from_dict(TINY_BOTTLENECK)
    torch.manual_seed(0)
    sup = ResNetNet(space)
    for m in sup.modules():  # non-trivial BN statistics, so eval mode tests them too
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 1.5), m.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, space.resolution, space.resolution)
    for seed in range(3):
        arch = space.sample(random.Random(seed))
        model = inherit(ResNetNet(space, arch), sup)
        sup.eval(), model.eval()
        assert torch.equal(sup(x, arch), model(x))
        for a, b in zip(sup.features(x, arch), model.features(x)):
            assert torch.equal(a, b)
    assert sum(len(s) for s in sup.stages) == sum(space.stage_max)


def test_supernet_and_build_dispatch_resnet_spaces(tmp_path):
    """SuperNet(space) gives the ResNet supernet; build(arch file) its standalone network, which inherits
    the supernet's weights and computes what the supernet's path computes."""
    space = Space.from_dict(TINY_BOTTLENECK)
    sup = SuperNet(space)
    assert isinstance(sup, ResNetNet) and sup.is_supernet
    assert isinstance(SuperNet("resnet-demo"), ResNetNet)
    arch = space.sample(random.Random(4))
    path = tmp_path / "arch.json"  # as CR-NAS writes it: the space inline, then the architecture
    path.write_text(json.dumps({"space": space.to_dict(), "arch": arch.to_dict()}))
    for given in (path, str(path), json.loads(path.read_text())):
        model = build(given)
        assert isinstance(model, ResNetNet) and model.arch == arch and not model.is_supernet
    assert build(arch, space).arch == arch
    model = build(path).inherit(sup)
    x = torch.randn(2, 3, 32, 32)
    sup.eval(), model.eval()
    assert torch.equal(sup(x, arch), model(x))
    with pytest.raises(ValueError, match="this is a supernet"):
        sup.inherit(sup)


def test_crnas_figures_come_from_the_figure_writer(tmp_path):
    from stnas.plots import plot_crnas_beam, plot_crnas_stages

    rows = [{"blocks": [2, 2, 2, 2], "score": 3.0}, {"blocks": [1, 3, 2, 2], "score": 4.5}]
    plot_crnas_stages(rows, (2, 2, 2, 2), (1, 3, 2, 2), "top-1 (%)", tmp_path / "stages.png", "t")
    beams = [{"block": b, "rank": r, "score": b + r} for b in (1, 2, 3) for r in (0, 1)]
    plot_crnas_beam(beams, "top-1 (%)", tmp_path / "beam.png", "t")
    for name in ("stages.png", "beam.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot_crnas_stages([], (2, 2, 2, 2), (2, 2, 2, 2), "m", tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
    import stnas.methods.crnas as crnas

    assert not [n for n in vars(crnas) if n.startswith("plot_") and n not in ("plot_crnas_beam", "plot_crnas_stages")]


def test_dilations_share_the_three_by_three_weights():
    space = Space.load("resnet-det-demo")
    sup = ResNetNet(space, head=False)
    names = {k for k in sup.state_dict()}
    a = ResNetArch((2, 2, 2, 2), (1,) * 8)
    b = ResNetArch((2, 2, 2, 2), (3,) * 8)
    x = torch.randn(2, 3, 64, 64)
    sup.eval()
    fa, fb = sup(x, a), sup(x, b)
    assert [f.shape for f in fa] == [f.shape for f in fb]  # dilation keeps every size
    assert not torch.allclose(fa[1], fb[1])
    conv2 = [k for k in names if k.endswith("conv2.weight")]
    assert len(conv2) == sum(space.stage_max)  # one 3x3 weight per block, whatever its dilation


def test_batch_statistics_leave_the_running_statistics_alone():
    space = Space.load("resnet-demo")
    net = ResNetNet(space).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with batch_statistics(net):
        net(torch.randn(4, 3, 32, 32), space.reference())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


# ---------------------------------------------------------------------- beam search

def test_beam_search_finds_the_known_optimum_of_a_synthetic_scorer():
    space = Space.load("resnet-det-demo")
    rng = random.Random(7)
    weights = {k: {v: rng.random() for v in d.choices} for k, d in enumerate(space.decisions())}
    base = ResNetArch((1, 2, 3, 2), (1,) * 8)
    genes = list(range(4, 12))
    calls = []

    def score(partials):  # additive, with the open genes filled at random per "batch", averaged
        calls.append(len(partials))
        out = []
        for p in partials:
            r = random.Random(str(p))
            total = 0.0
            for _ in range(64):
                g = space.genes(complete(space, p, r))
                total += sum(weights[k][g[k]] for k in genes)
            out.append(total / 64)
        return out

    best = beam_search(space, score, BeamConfig(k=3), base=base, decisions=genes)
    optimum = tuple(max(space.decisions()[k].choices, key=lambda v, k=k: weights[k][v]) for k in genes)
    assert best[0].arch.dilations == optimum and best[0].arch.blocks == base.blocks
    assert calls == [3] + [9] * 7  # K = 3 beams, 3 dilations each after the first block


def test_beam_width_three_escapes_a_trap_that_greedy_falls_into():
    space = Space.from_dict({**TINY_BOTTLENECK, "search": {"dilations": [1, 2]}})
    # The first dilation gene looks better at 1 alone, but 2 pays with the second: (2, 2) is the optimum.
    def value(g):
        d0, d1 = g[4], g[5]
        return {(1, 1): 1.0, (1, 2): 1.0, (2, 1): 0.0, (2, 2): 3.0}[(d0, d1)] if d1 is not OPEN else \
            {1: 1.0, 2: 0.9}[d0] if d0 is not OPEN else 0.0

    base = space.reference()
    greedy = beam_search(space, lambda ps: [value(p) for p in ps], BeamConfig(k=1), base=base, decisions=[4, 5])
    beam = beam_search(space, lambda ps: [value(p) for p in ps], BeamConfig(k=3), base=base, decisions=[4, 5])
    assert greedy[0].arch.dilations[:2] == (1, 1) and beam[0].arch.dilations[:2] == (2, 2)


# ---------------------------------------------------------------------- the generated COCO-format set

def test_generated_shapes_are_a_valid_deterministic_coco_folder(tmp_path):
    a = write_shapes_coco(tmp_path / "a", train=12, val=4, size=48, seed=3)
    b = write_shapes_coco(tmp_path / "b", train=12, val=4, size=48, seed=3)
    ja = json.loads((a / "annotations" / "instances_train.json").read_text())
    assert ja["images"] == json.loads((b / "annotations" / "instances_train.json").read_text())["images"]
    assert [c["name"] for c in ja["categories"]] == list(CATEGORIES)
    train = CocoSplit(a, "train")
    assert len(train) == 12 and train.num_classes == 3 and len(CocoSplit(a, "val")) == 4
    x, t = train.load(train.images[0])
    assert x.shape == (3, 48, 48) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert len(t["boxes"]) >= 1 and bool((t["boxes"][:, 2:] > t["boxes"][:, :2]).all())
    assert float(t["boxes"].max()) <= 48 and set(t["labels"].tolist()) <= {1, 2, 3}
    x1, y1, x2, y2 = (int(v) for v in t["boxes"][0].tolist())
    centre = x[:, (y1 + y2) // 2, (x1 + x2) // 2]
    assert float(centre.max() - centre.min()) > 0.15  # a coloured shape, not the grey background
    fit, held = arch_split(train, 3)
    assert len(fit) == 9 and len(held) == 3 and not {i.id for i in fit.images} & {i.id for i in held.images}
    batches = list(train.batches(4, epoch=1, seed=0))
    assert [[t["image_id"] for t in ts] for _, ts in batches] == \
        [[t["image_id"] for t in ts] for _, ts in train.batches(4, epoch=1, seed=0)]


@pytest.mark.parametrize("content,message", [
    ("{not json", r"not valid JSON \(line 1, column 2"),
    ("[]", "must hold a JSON object"),
    ('{"images": [], "categories": [{"id": 1}]}', "missing 'annotations'"),
    ('{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5]}],'
     ' "categories": [{"id": 1}]}', r"annotations\[0\].bbox must be \[x, y, width, height\]"),
    ('{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 2, "category_id": 1, "bbox": [0, 0, 5, 5]}],'
     ' "categories": [{"id": 1}]}', "image_id 2 is not the id of an image"),
])
def test_bad_coco_json_is_one_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "instances_train.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as e:
        read_coco_json(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_search_detection_fails_in_one_line(tmp_path, capsys):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_train.json").write_text("{oops")
    rc = main(["search", "--method", "crnas", "--task", "detection", "--data", str(root), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    from stnas.detection import detection_missing

    if detection_missing() is None:
        assert "not valid JSON" in err
    else:
        assert "pip install -r requirements-detection.txt" in err


# ---------------------------------------------------------------------- the search (classification), resume

TINY_CLS = {"type": "resnet", "name": "tiny-cls", "input": {"resolution": 16, "channels": 3}, "num_classes": 10,
            "skeleton": {"block": "basic", "stem": {"width": 4, "kernel": 3, "stride": 1, "pool": False},
                         "widths": [4, 8, 8, 8], "blocks": [2, 2, 2, 2]}, "search": {}}
ARGS = ["--task", "classification", "--stage-epochs", "1", "--spatial-epochs", "1", "--final-epochs", "1",
        "--max-allocations", "3", "--beam-k", "1", "--batch-size", "256", "--no-progress", "--checkpoint-every", "2"]


def test_classification_search_writes_its_outputs_and_resumes_exactly(tmp_path, monkeypatch):
    space_file = tmp_path / "tiny.json"
    space_file.write_text(json.dumps(TINY_CLS))
    base = ["search", "--method", "crnas", "--space", str(space_file), *ARGS]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    result = json.loads((tmp_path / "a" / "result.json").read_text())
    assert sum(result["allocation"]) == 8 and sum(len(d) for d in result["dilations"]) == 8
    for name in ("arch.json", "stages.csv", "stages.png", "beam.csv", "beam.png", "spatial_supernet.ckpt"):
        assert (tmp_path / "a" / name).is_file()
    space = Space.load(TINY_CLS)
    arch = space.arch_from_dict(json.loads((tmp_path / "a" / "arch.json").read_text()))
    assert list(arch.blocks) == result["allocation"]
    # The found and the original network, each fine-tuned alike from the stage supernet, both scored.
    tuned = result["fine_tuned"]
    assert tuned["epochs"] == 1 and tuned["init"] == "stage supernet"
    assert all(0.0 <= tuned[k] <= 100.0 for k in ("found", "original"))
    for key in ("found", "original"):
        assert (tmp_path / "a" / f"finetune_{key}.ckpt").is_file()

    # Interrupted in the spatial supernet's training, then resumed: the same result, bit for bit.
    from stnas.train.single_path import SinglePathTrainer

    original = SinglePathTrainer.train_step
    state = {"calls": 0}

    def flaky(self, batch):
        state["calls"] += 1
        if state["calls"] == 8:
            raise KeyboardInterrupt("signal 15")
        return original(self, batch)

    monkeypatch.setattr(SinglePathTrainer, "train_step", flaky)
    assert main([*base, "--out", str(tmp_path / "b")]) == 143
    monkeypatch.setattr(SinglePathTrainer, "train_step", original)
    assert main([*base, "--out", str(tmp_path / "b"), "--resume"]) == 0
    again = json.loads((tmp_path / "b" / "result.json").read_text())
    assert again == {**result}
    from stnas.io import load_checkpoint

    for name in ("spatial_supernet.ckpt", "finetune_found.ckpt", "finetune_original.ckpt"):
        wa = load_checkpoint(tmp_path / "a" / name)["model"]
        wb = load_checkpoint(tmp_path / "b" / name)["model"]
        assert all(torch.equal(wa[k], wb[k]) for k in wa)

    # The found architecture's file goes through the one builder: retrained and exported from the CLI.
    arch_file = tmp_path / "a" / "arch.json"
    assert main(["retrain", str(arch_file), "--epochs", "1", "--batch-size", "256", "--no-progress",
                 "--out", str(tmp_path / "r")]) == 0
    assert json.loads((tmp_path / "r" / "result.json").read_text())["arch"] == arch.to_dict()
    assert main(["export", "--checkpoint", str(tmp_path / "a" / "stage_supernet.ckpt"), "--arch", str(arch_file),
                 "--batch-size", "256", "--out", str(tmp_path / "model.ckpt")]) == 0
    from stnas.models import load

    model = load(tmp_path / "model.ckpt")
    assert isinstance(model, ResNetNet) and model.arch == arch
    assert load(tmp_path / "a" / "stage_supernet.ckpt").is_supernet


def test_task_auto_falls_back_with_one_warning(tmp_path, monkeypatch, capsys, caplog):
    """Without torchvision/pycocotools --task auto runs classification and says so once (check and run
    both resolve the task)."""
    import stnas.detection
    import stnas.methods.crnas as crnas

    monkeypatch.setattr(stnas.detection, "detection_missing", lambda: "torchvision is not installed (test)")
    seen = []

    def stop(space, task, cfg, out, **kw):
        seen.append(cfg.task)
        raise ValueError("stopped before training (test)")

    monkeypatch.setattr(crnas, "run_crnas", stop)
    space_file = tmp_path / "tiny.json"
    space_file.write_text(json.dumps(TINY_CLS))
    rc = main(["search", "--method", "crnas", "--space", str(space_file), "--task", "auto", "--batch-size", "256",
               "--no-progress", "--out", str(tmp_path / "o")])
    assert rc == 2 and seen == ["classification"] and "stopped before training" in capsys.readouterr().err
    said = [r.getMessage() for r in caplog.records if "torchvision/pycocotools unavailable" in r.getMessage()]
    assert len(said) == 1, said
