"""The PIL backend of :func:`stnas.data.make_loader` (no DALI): decoding in DataLoader worker processes,
the same augmentations with the same parameters as the DALI pipeline. It is also the baseline the
loader benchmark measures DALI against."""
from __future__ import annotations

import math
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from stnas.data.errors import DataError
from stnas.data.base import Loader


def decode_problem(path) -> str | None:
    """Why ``path`` does not decode fully with PIL, or None when it does (a full decode: slow, used
    only to name the culprit after a failure)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.convert("RGB").load()
    except Exception as e:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError... on broken files
        return f"{type(e).__name__}: {e}"
    return None


def random_resized_box(width: int, height: int, rng: random.Random, area=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """(left, top, w, h) of a random crop of ``area`` share and aspect ``ratio`` (log-uniform); the
    whole image, cropped to the ratio range, after 10 failed draws."""
    total = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = total * rng.uniform(*area)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, width - w), rng.randint(0, height - h), w, h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def resize_center_crop(img, size: int, crop_fraction: float):
    """Resize the shorter side to size / crop_fraction (bilinear, antialiased), then the centre
    size x size crop, its corner rounded half up as DALI's crop_mirror_normalize does (8.5 -> 9)."""
    from PIL import Image

    short = size / crop_fraction
    w, h = img.size
    scale = short / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - size + 1) // 2, (nh - size + 1) // 2
    return img.crop((left, top, left + size, top + size))


class _Images(Dataset):
    def __init__(self, loader: PilLoader, files: list[str], labels: list[int], seed: int):
        self.files, self.labels, self.seed = files, labels, seed
        self.train, self.size, self.crop_fraction = loader.train, loader.image_size, loader.crop_fraction
        self.mean = np.array(loader.mean, np.float32) * 255
        self.inv_std = 1 / (np.array(loader.std, np.float32) * 255)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        from PIL import Image

        path = self.files[i]
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")  # grayscale and CMYK JPEGs too
        except Exception as e:  # noqa: BLE001 - a file that passed the scan but does not decode
            raise DataError(f"{path}: cannot decode ({type(e).__name__}: {e}); remove or replace the file") from None
        if self.train:
            # Seeded per (epoch seed, file): a file's augmentation does not depend on the worker or the order.
            rng = random.Random(f"{self.seed}:{path}")
            left, top, w, h = random_resized_box(*img.size, rng)
            img = img.resize((self.size, self.size), Image.BILINEAR, box=(left, top, left + w, top + h))
            if rng.random() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
        else:
            img = resize_center_crop(img, self.size, self.crop_fraction)
        x = (np.asarray(img, np.float32) - self.mean) * self.inv_std  # HWC
        return torch.from_numpy(x), self.labels[i]


class PilLoader(Loader):
    backend = "pil"

    def _batches(self, epoch: int):
        files, labels = self.shard(epoch)
        workers = 0 if self.num_threads <= 1 else self.num_threads
        # The workers' seed from the epoch's own generator: without one, DataLoader draws it from torch's
        # global generator, and reading an epoch would move the random state of training.
        dl = DataLoader(_Images(self, files, labels, self.epoch_seed(epoch)), batch_size=self.batch_size,
                        shuffle=False, drop_last=self.drop_last, num_workers=workers,
                        pin_memory=self.device.type == "cuda", persistent_workers=False,
                        prefetch_factor=4 if workers else None,
                        generator=torch.Generator().manual_seed(self.epoch_seed(epoch)))
        try:
            for x, y in dl:
                x, y = self._finish(x, torch.as_tensor(y), hwc=True)
                if self.device.type == "cuda":
                    x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                yield x, y
        except DataError as e:
            # A worker's error arrives wrapped in its traceback; keep the message that names the file.
            last = [ln for ln in str(e).splitlines() if ln.strip()][-1]
            raise DataError(last.split("DataError: ", 1)[-1]) from None
