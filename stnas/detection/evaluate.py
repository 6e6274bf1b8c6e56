"""COCO AP of a detector on a COCO-format split, computed by pycocotools (COCOeval, bbox)."""
from __future__ import annotations

import contextlib
import io
from collections.abc import Callable

import torch

from stnas.data.coco import CocoSplit
from stnas.detection.model import set_arch
from stnas.supernet.resnet import batch_statistics


@torch.no_grad()
def detect(detector, split: CocoSplit, batch_size: int, device, arch_of_batch: Callable[[int], object] | None = None,
           batch_stats: bool = True) -> list[dict]:
    """The detections of ``split`` in COCO's result format ([x, y, w, h], category id, score).
    ``arch_of_batch(i)``: the backbone's architecture for validation batch i (a supernet); None keeps
    the one set. ``batch_stats``: the backbone's BatchNorm on each batch's statistics
    (:class:`~stnas.supernet.resnet.batch_statistics`)."""
    was = detector.training
    detector.eval()
    results = []
    bn = batch_statistics(detector.backbone.body) if batch_stats else contextlib.nullcontext()
    try:
        with bn:
            for i, (xs, ts) in enumerate(split.batches(batch_size, shuffle=False, drop_last=False)):
                if arch_of_batch is not None:
                    set_arch(detector, arch_of_batch(i))
                outs = detector([x.to(device) for x in xs])
                for t, o in zip(ts, outs):
                    boxes = o["boxes"].float().cpu()
                    boxes[:, 2:] -= boxes[:, :2]
                    for b, s, lab in zip(boxes.tolist(), o["scores"].tolist(), o["labels"].tolist()):
                        results.append({"image_id": int(t["image_id"]), "category_id": split.category_of[int(lab)],
                                        "bbox": [round(v, 2) for v in b], "score": round(float(s), 4)})
    finally:
        detector.train(was)
    return results


def coco_ap(split: CocoSplit, results: list[dict]) -> dict:
    """{"ap": AP@[.5:.95], "ap50": AP@.5, "ap75": AP@.75} in percent over the split's images, as
    pycocotools computes them (its printout silenced); 0 when there is no detection."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {"ap": 0.0, "ap50": 0.0, "ap75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(split.ann_file))
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.imgIds = [im.id for im in split.images]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [max(0.0, float(v)) * 100 for v in ev.stats[:3]]
    return {"ap": round(stats[0], 3), "ap50": round(stats[1], 3), "ap75": round(stats[2], 3)}


def evaluate_ap(detector, split: CocoSplit, batch_size: int, device, arch_of_batch=None,
                batch_stats: bool = True) -> dict:
    return coco_ap(split, detect(detector, split, batch_size, device, arch_of_batch, batch_stats))
