"""Detection through torchvision's Faster R-CNN + FPN and RetinaNet with the CR-NAS supernet backbone:
the supernet detector against the standalone one, AP (pycocotools) above chance after a short training
on the generated shapes, exact resume of the detection trainer, and `stnas search --method crnas --task
detection` end to end, with a bad annotation file as one line."""
import json
import random

import pytest
import torch

from stnas.detection import REQUIREMENTS, detection_missing

if detection_missing() is not None:  # tests/detection/conftest.py makes this an error with STNAS_REQUIRE_DETECTION=1
    pytest.skip(f"detection tests need torchvision and pycocotools ({detection_missing()}): {REQUIREMENTS}",
                allow_module_level=True)

from stnas.cli import main  # noqa: E402
from stnas.data.coco import CocoSplit  # noqa: E402
from stnas.data.coco_shapes import write_shapes_coco  # noqa: E402
from stnas.detection.evaluate import evaluate_ap  # noqa: E402
from stnas.detection.model import DetectorConfig, build_detector, set_arch  # noqa: E402
from stnas.detection.train import DetectionTrainer  # noqa: E402
from stnas.spaces import Space  # noqa: E402

SPACE = "resnet-det-demo"


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_shapes_coco(tmp_path_factory.mktemp("shapes") / "coco", train=96, val=24, size=64, seed=1)


def _trainer(det, split, space, steps, ckpt=None, sampler=None, bs=8):
    opt = torch.optim.SGD([p for p in det.parameters() if p.requires_grad], lr=0.02, momentum=0.9, weight_decay=1e-4)
    spe = len(split) // bs
    return DetectionTrainer(det, lambda e: split.batches(bs, e, 0, flip=True), spe, steps, opt,
                            sampler or (lambda s: space.sample(random.Random(s))), settings={"test": 1},
                            checkpoint=ckpt, checkpoint_every=2, progress=False)


@pytest.mark.parametrize("detector", ["faster_rcnn", "retinanet"])
def test_supernet_detector_equals_the_standalone_detector_with_inherited_weights(detector):
    space = Space.load(SPACE)
    cfg = DetectorConfig.for_resolution(64, detector)
    torch.manual_seed(0)
    sup = build_detector(space, 3, cfg).eval()
    arch = space.sample(random.Random(5))
    own = build_detector(space, 3, cfg, arch).eval()
    source = sup.state_dict()
    own.load_state_dict({k: source[k] for k in own.state_dict()})
    set_arch(sup, arch)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        a, b = sup.backbone(x), own.backbone(x)
        assert list(a) == ["0", "1", "2", "3", "pool"] and all(torch.equal(a[k], b[k]) for k in a)
        assert [v.shape[-1] for v in a.values()] == [16, 8, 4, 2, 1]
        for da, db in zip(sup(list(x)), own(list(x))):
            assert torch.equal(da["boxes"], db["boxes"])


def test_faster_rcnn_ap_rises_above_chance_after_a_short_training(shapes):
    torch.manual_seed(0)
    space = Space.load(SPACE)
    train, val = CocoSplit(shapes, "train"), CocoSplit(shapes, "val")
    det = build_detector(space, train.num_classes, DetectorConfig.for_resolution(64))
    ref = space.reference()
    before = evaluate_ap(det, val, 12, "cpu", lambda i: ref)
    _trainer(det, train, space, 96).train()
    after = evaluate_ap(det, val, 12, "cpu", lambda i: ref)
    assert set(after) == {"ap", "ap50", "ap75"}
    assert before["ap50"] < 1.0 and after["ap50"] > 5.0 and after["ap"] > before["ap"]


def test_retinanet_trains_and_is_scored(shapes):
    torch.manual_seed(0)
    space = Space.load(SPACE)
    train, val = CocoSplit(shapes, "train"), CocoSplit(shapes, "val")
    det = build_detector(space, train.num_classes, DetectorConfig.for_resolution(64, "retinanet"))
    t = _trainer(det, train, space, 3)
    t.log_every = 1
    t.train()
    assert len(t.losses) == 3 and all(torch.isfinite(torch.tensor(v)) for _, v in t.losses)
    ap = evaluate_ap(det, val, 12, "cpu", lambda i: space.sample(random.Random(i)))
    assert 0.0 <= ap["ap"] <= 100.0


def test_detection_trainer_resumes_exactly(shapes, tmp_path):
    space = Space.load(SPACE)
    train = CocoSplit(shapes, "train")

    def run(ckpt, stop=None):
        torch.manual_seed(0)
        det = build_detector(space, 3, DetectorConfig.for_resolution(64))
        t = _trainer(det, train, space, 6, ckpt, bs=16)
        if stop is not None:
            t.train(stop_at=stop)
            torch.manual_seed(123)  # a fresh process: nothing of the first part's state survives but the checkpoint
            det = build_detector(space, 3, DetectorConfig.for_resolution(64))
            t = _trainer(det, train, space, 6, ckpt, bs=16)
            assert t.resume()
        t.train()
        return det.state_dict()

    a, b = run(tmp_path / "a.ckpt"), run(tmp_path / "b.ckpt", stop=3)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_search_detection_end_to_end_reports_ap(shapes, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["search", "--method", "crnas", "--task", "detection", "--data", str(shapes), "--space", SPACE,
               "--stage-epochs", "1", "--spatial-epochs", "1", "--final-epochs", "1", "--max-allocations", "2",
               "--beam-k", "1", "--arch-val-images", "16", "--no-progress", "--out", str(out)])
    assert rc == 0
    result = json.loads((out / "result.json").read_text())
    assert sum(result["allocation"]) == 8 and result["metric"] == "COCO AP (%)"
    for key in ("original_stage_supernet", "found_spatial_supernet"):
        assert set(result["scores"][key]) == {"ap", "ap50", "ap75"}
    # AP of the found and of the original allocation, each fine-tuned alike as a detector of its own
    assert result["fine_tuned"]["epochs"] == 1
    for key in ("found", "original"):
        assert set(result["fine_tuned"][key]) == {"ap", "ap50", "ap75"}
        assert (out / f"finetune_{key}.ckpt").is_file()
    printed = capsys.readouterr().out
    assert "AP" in printed and "fine-tuned 1 epochs each" in printed
    # export makes classifiers: a detector's checkpoint is refused in one line
    rc = main(["export", "--checkpoint", str(out / "stage_supernet.ckpt"), "--arch", str(out / "arch.json"),
               "--out", str(tmp_path / "m.ckpt")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "detector's checkpoint" in err


def test_search_detection_with_bad_annotations_is_one_line(tmp_path, capsys):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_train2017.json").write_text('{"images": [], "annotations": [], "categories": 3}')
    rc = main(["search", "--method", "crnas", "--task", "detection", "--data", str(root), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "'categories' must be a list" in err
