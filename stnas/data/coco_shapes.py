"""A small COCO-format detection dataset that stnas writes itself: generated shapes with their boxes.

Every image is ``size`` x ``size`` px of a noisy background with one to three objects (a square, a
disc or a triangle, each of a random colour and size), placed so that they overlap little; its box is
the object's exact extent. Written as a real COCO folder (``train/``, ``val/`` JPEGs and
``annotations/instances_{train,val}.json``) so that the demo and the tests run the same reader, the
same detector and pycocotools' AP as COCO does. A pure function of its arguments: the same seed writes
the same pixels.

The default folder is ``$STNAS_CACHE/demo-shapes-coco-v1`` (``~/.cache/stnas``), written once into a
temporary folder and renamed into place (a ``.complete`` marker last), as the demo digits are.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np

from stnas.data.demo import cache_dir

NAME = "demo-shapes-coco-v1"
CATEGORIES = ("square", "disc", "triangle")


def _draw(canvas: np.ndarray, kind: str, x: int, y: int, s: int, colour: np.ndarray) -> list[float]:
    """Paint a shape of side ``s`` with its top-left at (x, y); returns its COCO box [x, y, w, h]."""
    yy, xx = np.mgrid[y:y + s, x:x + s]
    if kind == "square":
        mask = np.ones((s, s), bool)
    elif kind == "disc":
        c = (s - 1) / 2
        mask = (yy - y - c) ** 2 + (xx - x - c) ** 2 <= (s / 2) ** 2
    else:  # an isosceles triangle, apex at the top centre, base on the bottom row
        rel_y = (yy - y + 1) / s
        mask = np.abs(xx - x - (s - 1) / 2) <= rel_y * s / 2
    canvas[y:y + s, x:x + s][mask] = colour
    rows, cols = np.nonzero(mask)
    return [float(x + cols.min()), float(y + rows.min()), float(cols.max() - cols.min() + 1),
            float(rows.max() - rows.min() + 1)]


def _overlap(a, b) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def write_shapes_coco(root, train: int = 240, val: int = 60, size: int = 64, seed: int = 0,
                      max_objects: int = 3) -> Path:
    """Write the dataset into ``root`` (created; an existing complete one is kept). Returns ``root``."""
    from PIL import Image

    root = Path(root)
    if (root / ".complete").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        (tmp / "annotations").mkdir()
        rng = random.Random(f"shapes:{seed}")
        image_id = ann_id = 0
        for split, count in (("train", train), ("val", val)):
            (tmp / split).mkdir()
            images, anns = [], []
            for _ in range(count):
                image_id += 1
                nrng = np.random.default_rng(rng.randrange(2 ** 32))
                base = np.array([rng.randrange(40, 110)] * 3, np.float32)
                canvas = (base + nrng.normal(0, 12, (size, size, 3))).clip(0, 255).astype(np.uint8)
                boxes = []
                for _ in range(rng.randint(1, max_objects)):
                    for _ in range(20):
                        s = rng.randrange(size // 5, size // 2)
                        x, y = rng.randrange(0, size - s), rng.randrange(0, size - s)
                        if all(_overlap([x, y, s, s], b) < 0.2 for b, _ in boxes):
                            break
                    else:
                        continue
                    kind = rng.randrange(len(CATEGORIES))
                    colour = np.array([rng.randrange(140, 256), rng.randrange(0, 256), rng.randrange(0, 120)], np.uint8)
                    rng.shuffle(colour)
                    boxes.append((_draw(canvas, CATEGORIES[kind], x, y, s, colour), kind + 1))
                name = f"{image_id:06d}.jpg"
                Image.fromarray(canvas).save(tmp / split / name, quality=95)
                images.append({"id": image_id, "file_name": name, "width": size, "height": size})
                for box, cat in boxes:
                    ann_id += 1
                    anns.append({"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": box,
                                 "area": box[2] * box[3], "iscrowd": 0})
            data = {"info": {"description": "stnas generated shapes (square, disc, triangle)", "seed": seed},
                    "images": images, "annotations": anns,
                    "categories": [{"id": k + 1, "name": n, "supercategory": "shape"} for k, n in enumerate(CATEGORIES)]}
            (tmp / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
        (tmp / ".complete").write_text(f"{train} train, {val} val images\n")
        if (root / ".complete").is_file():  # another process finished first
            shutil.rmtree(tmp)
            return root
        if root.exists():  # an interrupted earlier attempt (no marker)
            shutil.rmtree(root)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def shapes_dataset(root=None) -> Path:
    """The demo's COCO folder, written on first use."""
    return write_shapes_coco(Path(root) if root is not None else cache_dir() / NAME)
