"""The DALI backend of :func:`stnas.data.make_loader`: ``readers.file`` over the given file order,
``decoders.image`` (nvJPEG through 'mixed' on a GPU, 'cpu' otherwise), random resized crop + flip or
resize + centre crop, and ``crop_mirror_normalize`` into planar float."""
from __future__ import annotations

import torch

from stnas.data.errors import DataError
from stnas.data.loader import Loader


def _pipeline(loader: "DaliLoader"):
    from nvidia.dali import fn, pipeline_def, types

    gpu = loader.device.type == "cuda"
    size = loader.image_size

    @pipeline_def(batch_size=loader.batch_size, num_threads=loader.num_threads,
                  device_id=(loader.device.index or 0) if gpu else None, seed=loader.seed % (2**31),
                  prefetch_queue_depth=2)
    def pipe():
        jpegs, labels = fn.readers.file(files=loader.files, labels=loader.labels, random_shuffle=False,
                                        shard_id=loader.shard_id, num_shards=loader.num_shards,
                                        stick_to_shard=True, pad_last_batch=False, name="Reader")
        images = fn.decoders.image(jpegs, device="mixed" if gpu else "cpu", output_type=types.RGB)
        if loader.train:
            images = fn.random_resized_crop(images, size=[size, size], random_area=[0.08, 1.0],
                                            random_aspect_ratio=[3 / 4, 4 / 3])
            mirror = fn.random.coin_flip(probability=0.5)
        else:
            images = fn.resize(images, resize_shorter=size / loader.crop_fraction)
            mirror = 0
        images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW", crop=[size, size],
                                          mean=[255 * m for m in loader.mean], std=[255 * s for s in loader.std],
                                          mirror=mirror)
        return images, labels

    return pipe()


class DaliLoader(Loader):
    backend = "dali"

    def __iter__(self):
        from nvidia.dali.plugin.base_iterator import LastBatchPolicy
        from nvidia.dali.plugin.pytorch import DALIGenericIterator

        if self.size == 0 or len(self) == 0:
            return
        try:
            pipe = _pipeline(self)
            pipe.build()
            it = DALIGenericIterator(pipe, ["images", "labels"], reader_name="Reader", auto_reset=False,
                                     last_batch_policy=LastBatchPolicy.DROP if self.drop_last
                                     else LastBatchPolicy.PARTIAL)
        except RuntimeError as e:
            raise DataError(f"{self.split.root / self.split.split}: DALI could not start: {_first_line(e)}") from None
        try:
            while True:
                try:
                    out = next(it)
                except StopIteration:
                    return
                except RuntimeError as e:  # a file that passed the scan but does not decode
                    raise DataError(f"{self.split.root / self.split.split}: DALI failed: {_first_line(e)}") from None
                batch = out[0]
                yield self._finish(batch["images"], batch["labels"])
        finally:
            del it, pipe


def _first_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    useful = [ln for ln in lines if "rror" in ln] or lines
    return useful[0][:400] if useful else type(e).__name__


_ = torch  # the iterator returns torch tensors
