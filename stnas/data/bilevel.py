"""The data of a bilevel search (DARTS, DrNAS): the training split cut into two class-balanced halves,
one for the weights and one for the architecture (the "search" half), walked in step.

DARTS and DrNAS on CIFAR-10 take the first and the last 25,000 images of the training set; an
ImageFolder lists its files class by class, so the halves are cut per class
(:meth:`~stnas.data.folder.ImageFolderSplit.portion`). Each half is shuffled with its own seed and the
epoch, so epoch ``e`` gives the same pairs of batches in every run (exact resume).
"""
from __future__ import annotations

from pathlib import Path

import torch

from stnas.data.errors import DataError
from stnas.data.loader import make_loader


class BilevelData:
    def __init__(self, root, image_size: int, batch_size: int, seed: int = 0, channels_last: bool = False,
                 dtype=torch.float32, backend: str = "auto", num_threads: int | None = None, device=None):
        self.root = Path(root)
        self.image_size, self.batch_size, self.seed = image_size, batch_size, seed

        def half(index: int):
            return make_loader(self.root, split="train", batch_size=batch_size, image_size=image_size, dtype=dtype,
                               channels_last=channels_last, seed=seed * 2 + index, num_threads=num_threads,
                               backend=backend, device=device, portion=(index, 2))

        self.train_loader, self.search_loader = half(0), half(1)
        self.num_classes = self.train_loader.num_classes
        self.backend_used = self.train_loader.backend
        self.steps_per_epoch = min(len(self.train_loader), len(self.search_loader))
        if self.steps_per_epoch < 1:
            raise DataError(f"{self.root / 'train'}: halves of {self.train_loader.size} and "
                            f"{self.search_loader.size} images give no full batch of {batch_size}; lower --batch-size")

    def epoch(self, epoch: int):
        """Pairs ((x, y), (x_search, y_search)) of ``epoch``."""
        self.train_loader.set_epoch(epoch)
        self.search_loader.set_epoch(epoch)
        return zip(iter(self.train_loader), iter(self.search_loader))

    def describe(self) -> dict:
        return {"root": str(self.root), "train_images": self.train_loader.size,
                "search_images": self.search_loader.size, "steps_per_epoch": self.steps_per_epoch,
                "classes": self.num_classes, "batch_size": self.batch_size, "image_size": self.image_size,
                "loader": self.backend_used, "seed": self.seed}
