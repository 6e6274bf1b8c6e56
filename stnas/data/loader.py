"""Train and validation loaders over an ImageFolder split: NVIDIA DALI, or PIL when DALI is missing.

    loader = make_loader(root, "train", batch_size=256, image_size=224, dtype=torch.bfloat16,
                         channels_last=True, shard_id=rank, num_shards=world, seed=epoch)
    for images, labels in loader: ...      # one epoch; len(loader) batches

Both backends read the same files in the same order: for training, a full permutation of the split
drawn from ``seed`` (reproducible, and the same for every backend; DALI's own shuffle is a bounded
buffer, not a permutation), then shard ``shard_id`` of ``num_shards`` takes its contiguous slice (as
DALI's reader does). Training: random resized crop (area 8-100%, aspect 3/4-4/3), horizontal flip,
normalisation; the last partial batch is dropped. Validation: resize the shorter side to
``image_size / crop_fraction`` and take the centre crop; the last batch may be partial (never padded).
Images come as NCHW tensors (channels_last memory format on request), labels as int64.
"""
from __future__ import annotations

import logging
import math
import os
from collections import Counter

import numpy as np
import torch

from stnas.data.errors import DataError
from stnas.data.folder import ImageFolderSplit, shard_range

log = logging.getLogger("stnas.data")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def dali_available() -> tuple[bool, str]:
    try:
        import nvidia.dali  # noqa: F401
        from nvidia.dali.plugin import pytorch  # noqa: F401
    except Exception as e:  # ImportError, or a broken install that fails on import
        return False, f"{type(e).__name__}: {e}"
    return True, ""


class Loader:
    """One epoch of batches per iteration. Attributes: ``backend`` ('dali' or 'pil'), ``classes``,
    ``num_classes``, ``size`` (images in this shard), ``skipped`` (reason -> count), ``len()``."""

    def __init__(self, split: ImageFolderSplit, train: bool, batch_size: int, image_size: int, dtype, channels_last,
                 shard_id, num_shards, seed, num_threads, drop_last, mean, std, crop_fraction, device):
        self.split, self.train, self.batch_size, self.image_size = split, train, batch_size, image_size
        self.dtype, self.channels_last, self.seed = dtype, channels_last, seed
        self.shard_id, self.num_shards = shard_id, num_shards
        self.num_threads = num_threads or os.cpu_count() or 1
        self.drop_last = drop_last
        self.mean, self.std, self.crop_fraction, self.device = mean, std, crop_fraction, device
        n = len(split)
        order = np.random.default_rng(seed).permutation(n) if train else np.arange(n)
        self.files = [split.files[i] for i in order]
        self.labels = [split.labels[i] for i in order]
        lo, hi = shard_range(n, shard_id, num_shards)
        self.shard_files, self.shard_labels = self.files[lo:hi], self.labels[lo:hi]
        self.size = hi - lo
        self.classes = split.classes
        self.num_classes = len(split.classes)
        self.skipped = Counter(split.skipped)

    def __len__(self) -> int:
        return self.size // self.batch_size if self.drop_last else math.ceil(self.size / self.batch_size)

    def _finish(self, images: torch.Tensor, labels: torch.Tensor):
        images = images.to(self.dtype)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels.reshape(-1).long()


def make_loader(root, split: str = "train", batch_size: int = 256, image_size: int = 224, dtype=torch.float32,
                channels_last: bool = False, shard_id: int = 0, num_shards: int = 1, seed: int = 0,
                num_threads: int | None = None, backend: str = "auto", device=None, drop_last: bool | None = None,
                train: bool | None = None, mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_fraction: float = 0.875):
    """A loader of ``root/split``; ``train`` (default: split == 'train') picks the augmentation.

    backend: 'auto' (DALI if importable, else PIL with a warning), 'dali' or 'pil'. device: None or
    'cpu' decodes on the CPU; a CUDA device decodes with nvJPEG (DALI 'mixed') and returns CUDA tensors.
    """
    if dtype not in _DTYPES:
        raise DataError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
    for name, value in (("batch_size", batch_size), ("image_size", image_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DataError(f"{name} must be a positive integer, got {value!r}")
    if not 0 < crop_fraction <= 1:
        raise DataError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
    if backend not in ("auto", "dali", "pil"):
        raise DataError(f"backend must be 'auto', 'dali' or 'pil', got {backend!r}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DataError(f"device {device}: CUDA is not available")
    ok, why = dali_available()
    if backend == "dali" and not ok:
        raise DataError(f"backend='dali' but NVIDIA DALI cannot be imported ({why}); install nvidia-dali-cuda130 "
                        "or use backend='pil'")
    if backend == "auto":
        backend = "dali" if ok else "pil"
        if not ok:
            log.warning("NVIDIA DALI cannot be imported (%s): using the PIL loader, which is slower", why)
    is_train = split == "train" if train is None else train
    scanned = ImageFolderSplit.scan(root, split)
    args = (scanned, is_train, batch_size, image_size, dtype, channels_last, shard_id, num_shards, seed, num_threads,
            is_train if drop_last is None else drop_last, tuple(mean), tuple(std), crop_fraction, device)
    if backend == "dali":
        from stnas.data.dali import DaliLoader

        return DaliLoader(*args)
    from stnas.data.pil import PilLoader

    return PilLoader(*args)
