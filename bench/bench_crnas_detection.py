"""CR-NAS detection supernet training throughput (img/s) against torchvision's own ResNet-50-FPN
Faster R-CNN at the same image size and detector settings.

Three trainings are timed, each a full step (forward with losses, backward, SGD step) on the same
synthetic batch (random images with 5 random boxes each):

- ``supernet``: our Faster R-CNN + FPN over the ``resnet50`` CR-NAS supernet, a new architecture
  (allocation and dilations) drawn every step, as the stage/spatial supernets train;
- ``standalone``: the same detector with the standalone ResNet-50 (the space's reference member);
- ``torchvision``: ``fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)`` (BatchNorm, every
  layer trainable: the same backbone as ``standalone``), the baseline.

The images are ``--size`` px squares and every detector's transform keeps them so (min_size = max_size
= size), so all three see the same pixels. All three use torchvision's COCO detector settings (anchors
32..512 on P2..P6, FPN width 256, 1024-d box head, 2000/2000 RPN proposals in training, 256 anchors and
512 proposals sampled per image) whatever the size, so only the backbone differs. Each model is timed
after ``--warmup`` untimed steps, over ``--reps`` steps; the median step time gives img/s, and every
row carries its ratio to torchvision's in the same run. Needs torchvision's compiled ops
(requirements-detection.txt; pycocotools is not needed); the JSON (``--out``, default
bench/results/crnas_detection_<size>px_<device>.json) holds the rows and the environment.

    python bench/bench_crnas_detection.py --device cuda --size 800 --batch 8 --out F.json
    python bench/bench_crnas_detection.py --device cpu --size 128 --batch 1 --warmup 1 --reps 2 --out F.json
"""
from __future__ import annotations

import argparse
import random

import torch

from common import add_common_args, ensure_stnas_importable, environment, resolve_common_args, table, time_fn, \
    write_results, default_out

ensure_stnas_importable()

DETECTOR_SETTINGS = 800  # DetectorConfig.for_resolution above 128 px: torchvision's COCO settings


def batch(size: int, n: int, classes: int, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    xs, ts = [], []
    for _ in range(n):
        xs.append(torch.rand(3, size, size, generator=g).to(device))
        xy = torch.rand(5, 2, generator=g) * size * 0.7
        wh = torch.rand(5, 2, generator=g) * size * 0.3 + 8
        ts.append({"boxes": torch.cat([xy, xy + wh], 1).clamp(max=size - 1).to(device),
                   "labels": torch.randint(1, classes + 1, (5,), generator=g).to(device)})
    return xs, ts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(p)
    p.add_argument("--size", type=int, default=800, help="image side in px (default: 800)")
    p.add_argument("--batch", type=int, default=8, help="images per step (default: 8)")
    p.add_argument("--classes", type=int, default=80, help="categories (default: 80, COCO's)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (fp32 master weights)")
    args = p.parse_args()
    device = resolve_common_args(args, cpu_reps=3, cuda_reps=20)
    if args.size < 32 or args.batch < 1:
        raise SystemExit("--size must be >= 32 and --batch >= 1")
    from stnas.detection import detection_missing

    why = detection_missing()
    if why is not None and "pycocotools" not in why:  # timing needs torchvision's ops, not pycocotools
        raise SystemExit(f"bench_crnas_detection: {why}; pip install -r requirements-detection.txt")
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    from stnas.detection.model import DetectorConfig, build_detector, set_arch
    from stnas.spaces import Space

    space = Space.load("resnet50")
    cfg = DetectorConfig.for_resolution(DETECTOR_SETTINGS)
    cfg.min_size = cfg.max_size = args.size
    xs, ts = batch(args.size, args.batch, args.classes, device)
    rng = random.Random(0)
    models = {
        "supernet": (build_detector(space, args.classes, cfg), lambda m: set_arch(m, space.sample(rng))),
        "standalone": (build_detector(space, args.classes, cfg, space.reference()), None),
        "torchvision": (fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=args.classes + 1,
                                                min_size=args.size, max_size=args.size), None),
    }
    rows = []
    for name, (model, before) in models.items():
        model.to(device).train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def step(model=model, before=before, opt=opt):
            if before is not None:
                before(model)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
                loss = sum(model(xs, ts).values())
            loss.backward()
            opt.step()

        stats = time_fn(step, args.warmup, args.reps, device=device, max_seconds=args.max_seconds)
        rows.append({"model": name, "img_per_s": args.batch / stats["median_s"], **stats,
                     "params": sum(q.numel() for q in model.parameters()),
                     "peak_mem_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None})
        print(f"{name}: {rows[-1]['img_per_s']:.3g} img/s (median of {stats.get('reps', '?')} steps)", flush=True)
        model.cpu()
        del opt, step
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
    base = next(r for r in rows if r["model"] == "torchvision")["img_per_s"]
    for r in rows:
        r["vs_torchvision"] = r["img_per_s"] / base
    table(rows, [("model", "model", ""), ("img_per_s", "img/s", ".3g"), ("median_s", "median s", ".3g"),
                 ("vs_torchvision", "x torchvision", ".3f"), ("params", "params", "")], id_keys=("model",))
    out = args.out or default_out(f"crnas_detection_{args.size}px", device)
    write_results(out, {"benchmark": "crnas_detection", "size": args.size, "batch": args.batch, "amp": args.amp,
                        "classes": args.classes, "warmup": args.warmup, "reps": args.reps,
                        "detector": {k: getattr(cfg, k) for k in vars(cfg)}, "rows": rows,
                        "environment": environment(device)})
    print(f"results in {out}")


if __name__ == "__main__":
    main()
