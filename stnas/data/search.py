"""The data a single-path search needs, over an ImageFolder root (``train/`` and ``val/``) through ``stnas.data``.

- the training batches of every epoch, in an order fixed by (seed, epoch), for the supernet;
- a fixed set of training batches for BatchNorm recalibration;
- the held-out batches (``val/``) on which an architecture's proxy score is measured.

The recalibration and held-out batches are decoded once and kept on the device: every architecture is
scored on exactly the same images, and scoring costs no decoding.
"""
from __future__ import annotations

from pathlib import Path

import torch

from stnas.data.errors import DataError
from stnas.data.loader import make_loader


class SearchData:
    def __init__(self, root, image_size: int, batch_size: int, seed: int = 0, recal_batches: int = 4,
                 eval_images: int | None = None, channels_last: bool = False, dtype=torch.float32,
                 backend: str = "auto", num_threads: int | None = None, device=None, shard_id: int = 0,
                 num_shards: int = 1):
        self.root = Path(root)
        self.image_size, self.batch_size, self.seed = image_size, batch_size, seed
        self.num_recal, self.eval_images = recal_batches, eval_images
        self.channels_last, self.dtype, self.backend, self.num_threads = channels_last, dtype, backend, num_threads
        self.loader_device = device
        self.shard_id, self.num_shards = shard_id, num_shards
        # One training loader (the folder is scanned once); each epoch's order comes from set_epoch.
        self.train_loader = self._loader("train", seed=seed, shard_id=shard_id, num_shards=num_shards)
        self.train_size = len(self.train_loader.split)  # the whole split: N of the SGLD noise
        # The same number of steps on every rank (shards differ by at most one image).
        self.steps_per_epoch = (self.train_size // num_shards) // batch_size
        self.num_classes = self.train_loader.num_classes
        self.backend_used = self.train_loader.backend
        if self.steps_per_epoch < 1:
            raise DataError(f"{self.root / 'train'}: {self.train_size} images give no full batch of "
                                   f"{batch_size}; lower --batch-size")
        # The held-out split is read only after training; open it now, so that a missing or empty val/
        # is one error before the supernet trains, not after.
        self.val_loader = self._loader("val", seed=0)
        if self.val_loader.num_classes != self.num_classes:
            raise DataError(f"{self.root}: train/ has {self.num_classes} classes but val/ has "
                            f"{self.val_loader.num_classes}; both splits need the same class folders")
        self._recal = self._eval = None

    def _loader(self, split: str, seed: int, shard_id: int = 0, num_shards: int = 1):
        return make_loader(self.root, split=split, batch_size=self.batch_size, image_size=self.image_size,
                                  dtype=self.dtype, channels_last=self.channels_last, seed=seed,
                                  num_threads=self.num_threads, backend=self.backend, device=self.loader_device,
                                  shard_id=shard_id, num_shards=num_shards)

    def train_epoch(self, epoch: int):
        """The batches of ``epoch``: its order and augmentation are functions of (seed, epoch), not of
        what ran before (which resuming needs)."""
        self.train_loader.set_epoch(epoch)
        return iter(self.train_loader)

    def recal_batches(self, device) -> list[torch.Tensor]:
        if self._recal is None:
            batches = []
            for i, (x, _) in enumerate(self._loader("train", seed=self.seed + 99991)):
                if i >= self.num_recal:
                    break
                batches.append(x)
            self._recal = batches
        return [x.to(device) for x in self._recal]

    def eval_batches(self, device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self._eval is None:
            batches, seen = [], 0
            for x, y in self.val_loader:
                if self.eval_images is not None and seen >= self.eval_images:
                    break
                batches.append((x, y))
                seen += y.numel()
            self._eval = batches
        return [(x.to(device), y.to(device)) for x, y in self._eval]

    def describe(self) -> dict:
        return {"root": str(self.root), "train_images": self.train_size, "steps_per_epoch": self.steps_per_epoch,
                "classes": self.num_classes, "batch_size": self.batch_size, "image_size": self.image_size,
                "loader": self.backend_used, "recal_batches": self.num_recal, "eval_images": self.eval_images, "seed": self.seed}
