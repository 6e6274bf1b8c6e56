"""Train and validation loaders over an ImageFolder split: NVIDIA DALI, or PIL when DALI is missing.

    loader = make_loader(root, "train", batch_size=256, image_size=224, dtype=torch.bfloat16,
                         channels_last=True, shard_id=rank, num_shards=world, seed=seed)
    for epoch in range(epochs):
        loader.set_epoch(epoch)            # optional: iterating again moves to the next epoch anyway
        for images, labels in loader: ...  # len(loader) batches

Order. Both backends read the same files in the same order. Training: a full permutation of the split
drawn from (seed, epoch), then shard ``shard_id`` of ``num_shards`` takes its contiguous slice, the way
DALI's reader slices. DALI's own ``random_shuffle`` is not used: it shuffles within a bounded buffer
(not a permutation) and inside a shard that never changes, so a rank would see the same subset every
epoch; a permutation per epoch gives every rank a fresh, disjoint subset, like DistributedSampler, and
the same (seed, epoch) gives the same epoch whatever ran before (resuming needs that). Validation: the
scan order (class, then file name), never shuffled.

Augmentation. Training: random resized crop (area 8-100%, aspect 3/4-4/3), horizontal flip,
normalisation; the last partial batch is dropped by default. Validation: resize the shorter side to
``image_size / crop_fraction`` and take the centre crop; the last batch may be partial, never padded
and never duplicated. Images come as NCHW tensors (``channels_last`` memory format on request), in
float32, float16 or bfloat16; labels as int64.
"""
from __future__ import annotations

import logging

import torch

from stnas.data.base import Loader
from stnas.data.errors import DataError
from stnas.data.folder import ImageFolderSplit, shard_range

log = logging.getLogger("stnas.data")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def dali_available() -> tuple[bool, str]:
    """(whether DALI and its PyTorch plugin import, why not)."""
    try:
        import nvidia.dali  # noqa: F401
        from nvidia.dali.plugin import pytorch  # noqa: F401
    except Exception as e:  # noqa: BLE001 - ImportError, or a broken install that fails on import
        return False, f"{type(e).__name__}: {e}"
    return True, ""


def make_loader(root, split: str = "train", batch_size: int = 256, image_size: int = 224, dtype=torch.float32,
                channels_last: bool = False, shard_id: int = 0, num_shards: int = 1, seed: int = 0,
                num_threads: int | None = None, backend: str = "auto", device=None, drop_last: bool | None = None,
                train: bool | None = None, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                crop_fraction: float = 0.875, portion: tuple[int, int] | None = None) -> Loader:
    """A loader of ``root/split``; ``train`` (default: split == 'train') picks the augmentation and
    the default of ``drop_last`` (drop the last partial batch in training, keep it otherwise).

    backend: 'auto' (DALI if importable, else PIL with a warning), 'dali' or 'pil'. device: None or
    'cpu' decodes on the CPU and returns CPU tensors; a CUDA device decodes with nvJPEG (DALI 'mixed')
    and returns tensors on that device. num_threads: DALI's CPU threads, or the PIL loader's worker
    processes (default: all cores). mean, std: per channel, on the 0-1 scale. portion: ``(index, parts)``
    reads part ``index`` of the split cut into ``parts`` class-balanced parts (bilevel search's halves).
    """
    if dtype not in _DTYPES:
        raise DataError(f"dtype must be torch.float32, torch.float16 or torch.bfloat16, got {dtype}")
    for name, value in (("batch_size", batch_size), ("image_size", image_size), ("num_shards", num_shards)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DataError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
        raise DataError(f"num_threads must be None or a positive integer, got {num_threads!r}")
    if not 0 < crop_fraction <= 1:
        raise DataError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise DataError(f"mean and std need 3 values each (std > 0), got mean={mean}, std={std}")
    if backend not in ("auto", "dali", "pil"):
        raise DataError(f"backend must be 'auto', 'dali' or 'pil', got {backend!r}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type not in ("cpu", "cuda"):
        raise DataError(f"device must be None, 'cpu' or a CUDA device, got {device}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DataError(f"device {device}: CUDA is not available")
    ok, why = dali_available() if backend != "pil" else (False, "")
    if backend == "dali" and not ok:
        raise DataError(f"backend='dali' but NVIDIA DALI cannot be imported ({why}); install nvidia-dali-cuda130 "
                        "or use backend='pil'")
    if backend == "auto":
        backend = "dali" if ok else "pil"
        if not ok:
            log.warning("NVIDIA DALI cannot be imported (%s): using the PIL loader, which is slower", why)
    is_train = split == "train" if train is None else bool(train)
    scanned = ImageFolderSplit.scan(root, split)
    if portion is not None:
        scanned = scanned.portion(*portion)
    shard_range(len(scanned), shard_id, num_shards)  # checks shard_id before any pipeline is built
    args = (scanned, is_train, batch_size, image_size, dtype, bool(channels_last), shard_id, num_shards, seed,
            num_threads, is_train if drop_last is None else bool(drop_last), mean, std, crop_fraction, device)
    if backend == "dali":
        from stnas.data.dali import DaliLoader

        return DaliLoader(*args)
    from stnas.data.pil import PilLoader

    return PilLoader(*args)
