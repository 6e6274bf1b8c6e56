"""The built-in demo dataset: scikit-learn's handwritten digits (1,797 8x8 images, 10 classes; UCI
optical recognition of handwritten digits) upscaled to 32x32 and written once as a JPEG ImageFolder,
so that commands run without ``--data`` go through the same pipeline as ImageNet.

Split: per class, every fifth image (in scikit-learn's order) goes to ``val``, the rest to ``train``
(1,442 / 355). Written into a temporary folder, then renamed into place, so an interrupted write never
leaves a half dataset behind; the ``.complete`` marker is written last, and a folder without it is
rewritten. Two processes writing at once both finish, one rename wins, the other copy is discarded.
Location: ``$STNAS_CACHE/demo-digits-v1`` (default ``~/.cache/stnas``).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

NAME = "demo-digits-v1"
SIZE = 32


def cache_dir() -> Path:
    """$STNAS_CACHE, or ~/.cache/stnas."""
    return Path(os.environ.get("STNAS_CACHE") or Path.home() / ".cache" / "stnas").expanduser()


def demo_dataset(root=None) -> Path:
    """The demo ImageFolder's root (``train/`` and ``val/``), written on first use."""
    target = Path(root) if root is not None else cache_dir() / NAME
    if (target / ".complete").is_file():
        return target
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        seen = {}
        for k, (img, label) in enumerate(zip(digits.images, digits.target)):
            label = int(label)
            n = seen.get(label, 0)
            seen[label] = n + 1
            split = "val" if n % 5 == 4 else "train"
            folder = tmp / split / f"{label}"
            folder.mkdir(parents=True, exist_ok=True)
            gray = (np.asarray(img, np.float32) * (255 / 16)).clip(0, 255).astype(np.uint8)
            big = Image.fromarray(gray, "L").resize((SIZE, SIZE), Image.BICUBIC).convert("RGB")
            big.save(folder / f"{k:04d}.jpg", quality=95)
        (tmp / ".complete").write_text(f"{len(digits.images)} images\n")
        if (target / ".complete").is_file():  # another process finished first
            shutil.rmtree(tmp)
            return target
        if target.exists():  # an interrupted earlier attempt (no marker)
            shutil.rmtree(target)
        try:
            os.replace(tmp, target)
        except OSError:  # another process renamed its copy in between
            if not (target / ".complete").is_file():
                raise
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def data_root(root=None) -> Path:
    """``root`` when given, else the demo dataset's root (written by rank 0 of a distributed run while
    the others wait)."""
    if root is not None:
        return Path(root)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        if dist.get_rank() == 0:
            demo_dataset()
        dist.barrier()
    return demo_dataset()
