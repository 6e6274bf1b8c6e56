"""An ImageFolder split (``ROOT/<split>/<class>/<image>``) scanned into files and labels.

The class index is the position of the class folder's name in sorted order. Every file is checked
cheaply at scan time, so that no pipeline ever meets a file it cannot decode:
- by extension (images only) and by its first bytes (JPEG, PNG, BMP, TIFF, WebP signatures);
- a JPEG must end with its end-of-image marker (FF D9) within the last 64 bytes: a truncated download
  lacks it. DALI would stop the whole pipeline on such a file, PIL would fill the rest with grey.
Files that fail are skipped and counted by reason (``.skipped``), with one warning per split.
Grayscale and CMYK JPEGs are valid: both pipelines decode them to RGB.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from stnas.data.errors import DataError

log = logging.getLogger("stnas.data")

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
_SIGNATURES = {
    "jpeg": (b"\xff\xd8\xff",),
    "png": (b"\x89PNG\r\n\x1a\n",),
    "bmp": (b"BM",),
    "tiff": (b"II*\x00", b"MM\x00*"),
    "webp": (b"RIFF",),
}


def sniff(path: Path) -> str | None:
    """The image format of ``path`` from its first bytes, 'truncated-jpeg', or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            fmt = next((k for k, sigs in _SIGNATURES.items() if any(head.startswith(s) for s in sigs)), None)
            if fmt == "webp" and head[8:12] != b"WEBP":
                return None
            if fmt == "jpeg":
                size = os.fstat(f.fileno()).st_size
                f.seek(max(0, size - 64))
                if b"\xff\xd9" not in f.read():
                    return "truncated-jpeg"
            return fmt
    except OSError:
        return None


@dataclass
class ImageFolderSplit:
    root: Path
    split: str
    classes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)

    @classmethod
    def scan(cls, root, split: str) -> "ImageFolderSplit":
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError(f"data folder {root} does not exist")
        folder = root / split
        if not folder.is_dir():
            have = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise DataError(f"data folder {root} has no '{split}' split (expected {root}/{split}/<class>/<image>; "
                            f"found folders: {have or 'none'})")
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if not classes:
            raise DataError(f"{folder} has no class folders (expected {folder}/<class>/<image>)")
        out = cls(root, split, classes)
        empty = []
        for index, name in enumerate(classes):
            kept = 0
            for entry in sorted(os.scandir(folder / name), key=lambda e: e.name):
                if not entry.is_file():
                    continue
                path = Path(entry.path)
                if path.suffix.lower() not in IMAGE_EXTENSIONS:
                    out.skipped["not an image (extension)"] += 1
                    continue
                fmt = sniff(path)
                if fmt is None:
                    out.skipped["not an image (content)"] += 1
                    continue
                if fmt == "truncated-jpeg":
                    out.skipped["truncated JPEG"] += 1
                    continue
                out.files.append(entry.path)
                out.labels.append(index)
                kept += 1
            if kept == 0:
                empty.append(name)
        if empty:
            out.skipped["empty class"] += len(empty)
            log.warning("%s: %d class folder(s) hold no image: %s%s (their class indices stay reserved)", folder,
                        len(empty), ", ".join(empty[:5]), " ..." if len(empty) > 5 else "")
        if not out.files:
            raise DataError(f"{folder}: no readable image in {len(classes)} class folder(s)")
        bad = {k: v for k, v in out.skipped.items() if k != "empty class"}
        if bad:
            log.warning("%s: skipped %d file(s): %s", folder, sum(bad.values()),
                        ", ".join(f"{v} {k}" for k, v in sorted(bad.items())))
        return out

    def __len__(self) -> int:
        return len(self.files)


def shard_range(n: int, shard_id: int, num_shards: int) -> tuple[int, int]:
    """The contiguous slice of ``n`` samples that shard ``shard_id`` reads (DALI's readers split so)."""
    if num_shards < 1 or not 0 <= shard_id < num_shards:
        raise DataError(f"shard_id must be in [0, num_shards), got shard_id={shard_id}, num_shards={num_shards}")
    return n * shard_id // num_shards, n * (shard_id + 1) // num_shards
