"""The DALI backend of :func:`stnas.data.make_loader`: ``readers.file`` over the shard's files in the
epoch's order, ``decoders.image`` (nvJPEG through 'mixed' on a GPU, 'cpu' otherwise); training decodes only a random
crop's region (``decoders.image_random_crop``) and resizes it, plus a flip; validation resizes and takes
the centre crop; and ``crop_mirror_normalize`` into float (HWC when channels_last is wanted, so
the NCHW view needs no copy)."""
from __future__ import annotations

import torch

from stnas.data.errors import DataError
from stnas.data.base import Loader


def _pipeline(loader: DaliLoader, files: list[str], labels: list[int], seed: int):
    from nvidia.dali import fn, pipeline_def, types

    gpu = loader.device.type == "cuda"
    size = loader.image_size
    out_dtype = types.FLOAT16 if loader.dtype == torch.float16 else types.FLOAT  # DALI has no bfloat16

    @pipeline_def(batch_size=loader.batch_size, num_threads=loader.num_threads,
                  device_id=(loader.device.index or 0) if gpu else None, seed=seed, prefetch_queue_depth=2)
    def pipe():
        # The order and the shard are ours (see stnas.data.loader): the reader gets this shard's files
        # only. Given the whole list with shard_id/num_shards, DALI 2.4's iterator sizes every shard as the
        # largest one: a 4-image shard of 24 split 5 ways ended with an empty batch (2026-11-22, CPU).
        jpegs, labels_ = fn.readers.file(files=files, labels=labels, random_shuffle=False, shard_id=0, num_shards=1,
                                         pad_last_batch=False, name="Reader")
        device = "mixed" if gpu else "cpu"
        if loader.train:
            # Decoding only the random crop's region: 263-299 against 221-261 img/s for decode-all +
            # random_resized_crop (768 ImageNet JPEGs, 224 px, 2 CPU threads shared with another job,
            # 2026-11-22).
            images = fn.decoders.image_random_crop(jpegs, device=device, output_type=types.RGB,
                                                   random_area=[0.08, 1.0], random_aspect_ratio=[3 / 4, 4 / 3])
            images = fn.resize(images, size=[size, size], antialias=True)
            mirror = fn.random.coin_flip(probability=0.5)
        else:
            images = fn.decoders.image(jpegs, device=device, output_type=types.RGB)
            images = fn.resize(images, resize_shorter=size / loader.crop_fraction, antialias=True)
            mirror = 0
        images = fn.crop_mirror_normalize(images, dtype=out_dtype, output_layout="HWC" if loader.channels_last
                                          else "CHW", crop=[size, size], mean=[255 * m for m in loader.mean],
                                          std=[255 * s for s in loader.std], mirror=mirror)
        return images, labels_

    return pipe()


class DaliLoader(Loader):
    backend = "dali"

    def _batches(self, epoch: int):
        from nvidia.dali.plugin.base_iterator import LastBatchPolicy
        from nvidia.dali.plugin.pytorch import DALIGenericIterator

        files, labels = self.shard(epoch)
        where = self.split.root / self.split.split
        try:
            pipe = _pipeline(self, files, labels, self.epoch_seed(epoch))
            pipe.build()
            it = DALIGenericIterator(pipe, ["images", "labels"], reader_name="Reader", auto_reset=False,
                                     last_batch_policy=LastBatchPolicy.DROP if self.drop_last
                                     else LastBatchPolicy.PARTIAL)
        except RuntimeError as e:
            raise DataError(f"{where}: DALI could not start: {_summary(e)}") from None
        done = 0
        try:
            while True:
                try:
                    out = next(it)
                except StopIteration:
                    return
                except RuntimeError as e:  # a file that passed the scan but does not decode
                    raise DataError(self._decode_error(where, epoch, done, e)) from None
                done += 1
                yield self._finish(out[0]["images"], out[0]["labels"], hwc=self.channels_last)
        finally:
            del it, pipe

    def _decode_error(self, where, epoch: int, done: int, e: RuntimeError) -> str:
        """DALI's message does not name the file: look for it, with PIL, among the batches the pipeline
        may have been working on (the next one and the prefetched one after it)."""
        from stnas.data.pil import decode_problem

        files, _ = self.shard(epoch)
        candidates = files[done * self.batch_size:(done + 3) * self.batch_size]
        for path in candidates:
            why = decode_problem(path)
            if why:
                return f"{path}: cannot decode ({why}); remove or replace the file (DALI: {_summary(e)})"
        first = candidates[0] if candidates else "?"
        return (f"{where}: DALI failed on one of {len(candidates)} files from {first} on (PIL decodes them all): "
                f"{_summary(e)}")


def _summary(e: Exception) -> str:
    """The informative lines of a DALI error, without the pipeline-definition traceback it quotes."""
    useful, quoting = [], False
    for line in (ln.strip() for ln in str(e).splitlines()):
        if line.startswith("which was used in the pipeline definition"):
            quoting = True
        elif line.startswith("encountered:"):
            quoting = False
        elif line and not quoting and not line.startswith(("Critical error in pipeline",
                                                            "Current pipeline object is no longer valid")):
            useful.append(line.rstrip(",:"))
    text = "; ".join(dict.fromkeys(useful))
    return text[:400] if text else type(e).__name__
