"""COCO-format detection data (images + an ``instances`` JSON per split), read without torchvision.

Layout, as COCO ships it::

    ROOT/annotations/instances_<split>.json
    ROOT/<split>/<file_name>               # the images the JSON names

with ``<split>`` ``train2017``/``val2017`` when those annotation files exist, else ``train``/``val``.
The JSON is checked once when it is opened: a file that is not valid JSON, or that lacks or mistypes a
field the detector needs (``images[].id/file_name``, ``annotations[].image_id/category_id/bbox``,
``categories[].id``), is one :class:`~stnas.data.errors.DataError` that names the file and the entry.

Categories get contiguous labels 1..C in the order of their ids (0 is the detectors' background);
boxes become ``[x1, y1, x2, y2]``; crowd annotations and boxes without area are left out of training
(pycocotools still sees them when it computes AP). Batches of an epoch are a function of (seed, epoch)
alone, as the trainers' exact resume needs.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stnas.data.errors import DataError

SPLITS = (("train2017", "val2017"), ("train", "val"))


def coco_splits(root) -> tuple[str, str]:
    """The (train, val) split names of a COCO-format folder."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"--data {root}: no such folder (expected a COCO-format folder with annotations/)")
    for train, val in SPLITS:
        if (root / "annotations" / f"instances_{train}.json").is_file():
            return train, val
    raise DataError(f"{root}: no annotations/instances_train2017.json or annotations/instances_train.json "
                    f"(a COCO-format folder: annotations/instances_<split>.json and <split>/ images)")


@dataclass(frozen=True)
class CocoImage:
    id: int
    path: Path
    width: int
    height: int
    boxes: tuple[tuple[float, float, float, float], ...]   # x1, y1, x2, y2
    labels: tuple[int, ...]                                 # 1..C


def _fail(path, msg):
    raise DataError(f"COCO annotations {path}: {msg}")


def read_coco_json(path) -> dict:
    """The parsed and checked annotation file (see the module's docstring)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"COCO annotations {path} do not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        _fail(path, f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})")
    except UnicodeDecodeError:
        _fail(path, "not a text file")
    if not isinstance(data, dict):
        _fail(path, f"the file must hold a JSON object with 'images', 'annotations' and 'categories', got "
                    f"{type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            _fail(path, f"'{key}' must be a list" if key in data else f"missing '{key}'")

    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    for k, im in enumerate(data["images"]):
        if not isinstance(im, dict) or not isinstance(im.get("id"), int) or not isinstance(im.get("file_name"), str):
            _fail(path, f"images[{k}] needs an integer 'id' and a string 'file_name', got {str(im)[:120]}")
    for k, c in enumerate(data["categories"]):
        if not isinstance(c, dict) or not isinstance(c.get("id"), int):
            _fail(path, f"categories[{k}] needs an integer 'id', got {str(c)[:120]}")
    if not data["categories"]:
        _fail(path, "'categories' is empty")
    ids = {im["id"] for im in data["images"]}
    cats = {c["id"] for c in data["categories"]}
    for k, a in enumerate(data["annotations"]):
        if not isinstance(a, dict):
            _fail(path, f"annotations[{k}] must be an object, got {str(a)[:120]}")
        box = a.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(number(v) for v in box)):
            _fail(path, f"annotations[{k}].bbox must be [x, y, width, height], got {box!r}")
        if a.get("image_id") not in ids:
            _fail(path, f"annotations[{k}].image_id {a.get('image_id')!r} is not the id of an image")
        if a.get("category_id") not in cats:
            _fail(path, f"annotations[{k}].category_id {a.get('category_id')!r} is not the id of a category")
    return data


class CocoSplit:
    """One split of a COCO-format folder: its images with their boxes, the category labels, and the
    annotation file (pycocotools reads it for AP)."""

    def __init__(self, root, split: str, image_ids: list[int] | None = None):
        self.root, self.split = Path(root), split
        self.ann_file = self.root / "annotations" / f"instances_{split}.json"
        data = read_coco_json(self.ann_file)
        self.categories = sorted(data["categories"], key=lambda c: c["id"])
        self.label_of = {c["id"]: k + 1 for k, c in enumerate(self.categories)}
        self.category_of = {v: k for k, v in self.label_of.items()}
        per_image: dict[int, list] = {im["id"]: [] for im in data["images"]}
        for a in data["annotations"]:
            x, y, w, h = a["bbox"]
            if a.get("iscrowd", 0) or w <= 0 or h <= 0:
                continue
            per_image[a["image_id"]].append(((float(x), float(y), float(x + w), float(y + h)),
                                             self.label_of[a["category_id"]]))
        folder = self.root / split
        images = []
        for im in sorted(data["images"], key=lambda im: im["id"]):
            anns = per_image[im["id"]]
            images.append(CocoImage(im["id"], folder / im["file_name"], int(im.get("width", 0)), int(im.get("height", 0)),
                                    tuple(b for b, _ in anns), tuple(lab for _, lab in anns)))
        if image_ids is not None:
            keep = set(image_ids)
            images = [im for im in images if im.id in keep]
        if not images:
            raise DataError(f"{self.ann_file}: no images")
        missing = [im.path for im in images[:50] if not im.path.is_file()]
        if missing:
            raise DataError(f"{self.ann_file} names image {missing[0]}, which does not exist")
        self.images = images

    @property
    def num_classes(self) -> int:
        """Categories, without the background."""
        return len(self.categories)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, images: list[CocoImage]) -> "CocoSplit":
        """The same split restricted to ``images`` (the arch-train / arch-val halves)."""
        other = object.__new__(CocoSplit)
        other.__dict__.update(self.__dict__)
        other.images = list(images)
        return other

    def load(self, im: CocoImage) -> tuple[torch.Tensor, dict]:
        """The image as a float tensor (3, H, W) in [0, 1], and its target (boxes, labels)."""
        from PIL import Image

        with Image.open(im.path) as f:
            arr = np.asarray(f.convert("RGB"), dtype=np.uint8)
        x = torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255)
        boxes = torch.tensor(im.boxes, dtype=torch.float32).reshape(-1, 4)
        return x, {"boxes": boxes, "labels": torch.tensor(im.labels, dtype=torch.int64), "image_id": im.id}

    def batches(self, batch_size: int, epoch: int = 0, seed: int = 0, shuffle: bool = True, flip: bool = False,
                drop_last: bool = True):
        """Lists of (images, targets) of ``batch_size``; the order (and flips) a function of (seed, epoch)."""
        order = list(range(len(self.images)))
        rng = random.Random(f"coco:{seed}:{epoch}")
        if shuffle:
            rng.shuffle(order)
        stop = len(order) - (len(order) % batch_size if drop_last else 0)
        for i in range(0, stop, batch_size):
            xs, ts = [], []
            for j in order[i:i + batch_size]:
                x, t = self.load(self.images[j])
                if flip and rng.random() < 0.5:
                    x = x.flip(-1)
                    w = x.shape[-1]
                    b = t["boxes"].clone()
                    b[:, [0, 2]] = w - t["boxes"][:, [2, 0]]
                    t["boxes"] = b
                xs.append(x)
                ts.append(t)
            yield xs, ts


def arch_split(split: CocoSplit, val_images: int) -> tuple[CocoSplit, CocoSplit]:
    """CR-NAS's arch-train / arch-val split of a training split: ``val_images`` images (every k-th by
    image id, so the split is fixed) held out to score architectures, the rest to train the supernet."""
    n = len(split)
    if not 0 < val_images < n:
        raise DataError(f"{split.ann_file}: {n} images cannot give {val_images} arch-val images and a training rest")
    step = n / val_images
    held = {int(k * step) for k in range(val_images)}
    return (split.subset([im for k, im in enumerate(split.images) if k not in held]),
            split.subset([im for k, im in enumerate(split.images) if k in held]))
