"""An ImageFolder split (``ROOT/<split>/<class>/<image>``) scanned into files and labels.

The class index is the position of the class folder's name in sorted order. Every file is checked
cheaply at scan time, so that no pipeline ever meets a file it cannot decode:
- by extension (images only) and by its first bytes (JPEG, PNG, BMP, TIFF, WebP signatures);
- a JPEG must hold its end-of-image marker (FF D9) in its last 1 KiB, a PNG its IEND chunk in its last
  12 bytes: a truncated download lacks them. (FF D9 cannot occur by chance in JPEG entropy-coded data,
  where FF is always followed by 00 or a restart marker, so trailing junk of up to 1 KiB is tolerated.)
  DALI would stop the whole pipeline on such a file, and PIL refuses it too.
Files that fail are skipped and counted by reason (``.skipped``), with one warning per split. A file
that passes but still does not decode (corruption inside the data) stops the epoch with a DataError
that names it. Grayscale and CMYK JPEGs are valid: both pipelines decode them to RGB.
The checks read two small pieces of each file, in a thread pool: ImageNet's 1.28 M files scan in
seconds from a warm page cache; a full decode of each would take many CPU-minutes.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
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


_TAIL = 1024  # bytes searched for a JPEG's end-of-image marker


def sniff(path) -> str | None:
    """The image format of ``path`` from its first bytes ('jpeg', 'png', ...), 'truncated' when a JPEG
    or PNG lacks its end marker, or None when it is no image we read (or cannot be read)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            fmt = next((k for k, sigs in _SIGNATURES.items() if any(head.startswith(s) for s in sigs)), None)
            if fmt == "webp" and head[8:12] != b"WEBP":
                return None
            if fmt in ("jpeg", "png"):
                size = os.fstat(f.fileno()).st_size
                f.seek(max(0, size - _TAIL))
                tail = f.read()
                if fmt == "jpeg" and b"\xff\xd9" not in tail or fmt == "png" and b"IEND" not in tail[-12:]:
                    return "truncated"
            return fmt
    except OSError:
        return None


@dataclass
class ImageFolderSplit:
    """The files of one split with their class indices; ``skipped``: reason -> count of files (and, for
    'empty class', of class folders) left out; ``skipped_examples``: a few of the skipped paths."""

    root: Path
    split: str
    classes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    skipped_examples: list[str] = field(default_factory=list)

    @classmethod
    def scan(cls, root, split: str) -> ImageFolderSplit:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError(f"data folder {root} " + ("is not a folder" if root.exists() else "does not exist"))
        folder = root / split
        if not folder.is_dir():
            have = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise DataError(f"data folder {root} has no '{split}' split (expected {root}/{split}/<class>/<image>; "
                            f"found folders: {have or 'none'})")
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if not classes:
            raise DataError(f"{folder} has no class folders (expected {folder}/<class>/<image>)")
        out = cls(root, split, classes)
        candidates = []
        for index, name in enumerate(classes):
            for entry in sorted(os.scandir(folder / name), key=lambda e: e.name):
                if not entry.is_file():
                    continue
                if os.path.splitext(entry.name)[1].lower() not in IMAGE_EXTENSIONS:
                    out._skip("not an image (extension)", entry.path)
                    continue
                candidates.append((entry.path, index))
        with ThreadPoolExecutor(max_workers=min(16, 2 * (os.cpu_count() or 1))) as pool:
            formats = list(pool.map(sniff, [p for p, _ in candidates], chunksize=256))
        kept = Counter()
        for (path, index), fmt in zip(candidates, formats):
            if fmt is None:
                out._skip("not an image (content)", path)
            elif fmt == "truncated":
                out._skip("truncated", path)
            else:
                out.files.append(path)
                out.labels.append(index)
                kept[index] += 1
        empty = [name for index, name in enumerate(classes) if not kept[index]]
        if empty:
            out.skipped["empty class"] += len(empty)
            _warn_once("%s: %d class folder(s) hold no image: %s%s (their class indices stay reserved)", folder,
                       len(empty), ", ".join(empty[:5]), " ..." if len(empty) > 5 else "")
        if not out.files:
            raise DataError(f"{folder}: no readable image in {len(classes)} class folder(s)")
        bad = {k: v for k, v in out.skipped.items() if k != "empty class"}
        if bad:
            _warn_once("%s: skipped %d file(s): %s (e.g. %s)", folder, sum(bad.values()),
                       ", ".join(f"{v} {k}" for k, v in sorted(bad.items())), ", ".join(out.skipped_examples))
        return out

    def _skip(self, reason: str, path: str) -> None:
        self.skipped[reason] += 1
        if len(self.skipped_examples) < 3:
            self.skipped_examples.append(path)

    def __len__(self) -> int:
        return len(self.files)

    def portion(self, index: int, parts: int) -> "ImageFolderSplit":
        """Part ``index`` of ``parts`` equal parts, taken per class (within a class, files in name
        order): each part keeps the class balance. Bilevel NAS trains weights on one half of the training
        split and the architecture on the other (DARTS, DrNAS); an ImageFolder lists files class by class,
        so "the first half" would hold only the first classes."""
        if not 0 <= index < parts:
            raise DataError(f"portion: index must be in [0, {parts}), got {index}")
        by_class: dict[int, list[str]] = {}
        for f, y in zip(self.files, self.labels):
            by_class.setdefault(y, []).append(f)
        out = ImageFolderSplit(self.root, self.split, list(self.classes))
        for y in sorted(by_class):
            files = by_class[y]
            lo, hi = len(files) * index // parts, len(files) * (index + 1) // parts
            out.files.extend(files[lo:hi])
            out.labels.extend([y] * (hi - lo))
        if not out.files:
            raise DataError(f"{self.root / self.split}: part {index + 1} of {parts} holds no image "
                            f"({len(self.files)} images in all)")
        return out


_WARNED: set = set()


def _warn_once(fmt: str, *args) -> None:
    """A split is scanned by every loader that reads it (training, recalibration, the halves of a
    bilevel search): say what was skipped once per process, not once per loader."""
    key = (fmt, *map(str, args))
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning(fmt, *args)


def shard_range(n: int, shard_id: int, num_shards: int) -> tuple[int, int]:
    """The contiguous slice of ``n`` samples that shard ``shard_id`` reads (DALI's readers split so)."""
    if num_shards < 1 or not 0 <= shard_id < num_shards:
        raise DataError(f"shard_id must be in [0, num_shards), got shard_id={shard_id}, num_shards={num_shards}")
    return n * shard_id // num_shards, n * (shard_id + 1) // num_shards
