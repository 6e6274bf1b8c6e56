"""The base of every loader backend: the epoch's order, sharding and the batch layout they share.

:class:`Loader` fixes what an epoch is (a permutation of the split drawn from (seed, epoch), sliced per
shard) and how batches look; :mod:`stnas.data.dali` and :mod:`stnas.data.pil` only decode. It lives in
a file of its own so that the backends import it and :mod:`stnas.data.loader` imports the backends,
never the other way round.
"""
from __future__ import annotations

import math
import os
from collections import Counter

import numpy as np
import torch

from stnas.data.errors import DataError
from stnas.data.folder import ImageFolderSplit, shard_range


class Loader:
    """Each iteration is one epoch of batches ``(images, labels)``. Attributes: ``backend`` ('dali' or
    'pil'), ``classes``, ``num_classes``, ``size`` (images in this shard per epoch), ``skipped``
    (reason -> count, from the scan), ``epoch`` (the epoch the next iteration reads); ``len()`` is the
    number of batches per epoch."""

    backend = "?"

    def __init__(self, split: ImageFolderSplit, train: bool, batch_size: int, image_size: int, dtype, channels_last,
                 shard_id, num_shards, seed, num_threads, drop_last, mean, std, crop_fraction, device):
        self.split, self.train, self.batch_size, self.image_size = split, train, batch_size, image_size
        self.dtype, self.channels_last, self.seed = dtype, channels_last, seed
        self.shard_id, self.num_shards = shard_id, num_shards
        self.num_threads = num_threads or os.cpu_count() or 1
        self.drop_last = drop_last
        self.mean, self.std, self.crop_fraction, self.device = mean, std, crop_fraction, device
        lo, hi = shard_range(len(split), shard_id, num_shards)
        self.size = hi - lo
        self.classes = split.classes
        self.num_classes = len(split.classes)
        self.skipped = dict(Counter(split.skipped))
        self.epoch = 0

    def __len__(self) -> int:
        return self.size // self.batch_size if self.drop_last else math.ceil(self.size / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration read ``epoch`` (its order and, in training, its augmentation)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise DataError(f"epoch must be a non-negative integer, got {epoch!r}")
        self.epoch = epoch

    def epoch_seed(self, epoch: int) -> int:
        """The seed of one epoch's permutation and augmentation (fits DALI's int32 seed)."""
        return int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0] % (2**31 - 1))

    def order(self, epoch: int) -> tuple[list[str], list[int]]:
        """Files and labels of the whole split, in the order of ``epoch``; a shard reads its slice."""
        n = len(self.split)
        if not self.train:
            return list(self.split.files), list(self.split.labels)
        perm = np.random.default_rng(self.epoch_seed(epoch)).permutation(n)
        return [self.split.files[i] for i in perm], [self.split.labels[i] for i in perm]

    def shard(self, epoch: int) -> tuple[list[str], list[int]]:
        """The files and labels this shard reads in ``epoch``, in order."""
        files, labels = self.order(epoch)
        lo, hi = shard_range(len(files), self.shard_id, self.num_shards)
        return files[lo:hi], labels[lo:hi]

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        if len(self) == 0:
            return iter(())
        return self._batches(epoch)

    def _batches(self, epoch: int):
        raise NotImplementedError

    def _finish(self, images: torch.Tensor, labels: torch.Tensor, hwc: bool):
        """NHWC or NCHW images of any float dtype -> NCHW of ``dtype`` (channels_last on request)."""
        if hwc:  # an NHWC buffer seen as NCHW is channels_last without a copy
            images = images.permute(0, 3, 1, 2)
        images = images.to(self.dtype)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        else:
            images = images.contiguous()
        return images, labels.reshape(-1).long()
