"""Everything stnas writes, written atomically: checkpoints, JSON, CSV and text files.

A file is written to a temporary file in the same folder, flushed to disk, then renamed over the
target, so a crash or Ctrl-C while writing leaves the previous version intact and never a half-written
one. In a distributed run only rank 0 writes (every rank computes the same content).

A checkpoint is a ``torch.save`` of plain containers, tensors and numbers, read back with
``torch.load(weights_only=True)``, which refuses arbitrary objects: a checkpoint from elsewhere can
never run code.
"""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from stnas.runtime import is_main

FORMAT = "stnas-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, of another program, or of another kind."""


def atomic_write(path, write: Callable, binary: bool = False) -> Path:
    """``write(f)`` into a temporary file beside ``path``, flushed and renamed over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path, data) -> None:
    if is_main():
        atomic_write(path, lambda f: f.write(json.dumps(data, indent=2) + "\n"))


def write_text(path, text: str) -> None:
    if is_main():
        atomic_write(path, lambda f: f.write(text))


def write_csv(path, rows: Sequence[dict], columns: Sequence[str]) -> None:
    def write(f):
        w = csv.DictWriter(f, list(columns))
        w.writeheader()
        w.writerows(rows)

    if is_main():
        atomic_write(path, write)


def save_checkpoint(path, payload: dict, kind: str) -> Path:
    """Write ``payload`` as a checkpoint of ``kind`` ('supernet', 'model', ...); every rank may call it,
    rank 0 writes."""
    data = {"format": FORMAT, "version": VERSION, "kind": kind, **payload}
    if not is_main():
        return Path(path)
    buffer = io.BytesIO()
    torch.save(data, buffer)
    return atomic_write(path, lambda f: f.write(buffer.getbuffer()), binary=True)


def load_checkpoint(path, kind: str | None = None, required: Sequence[str] = ()) -> dict:
    """A checkpoint's content; a CheckpointError when it is missing, unreadable, not stnas's, of another
    kind, or lacks one of the ``required`` fields."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, foreign pickle, ...: one message, not torch's traceback
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {path} cannot be read: it is truncated, corrupt or not a safe "
                              f"stnas checkpoint ({first[:200]})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not an stnas checkpoint")
    if data.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {data.get('version')}, this stnas reads "
                              f"version {VERSION}")
    if kind is not None and data.get("kind") != kind:
        raise CheckpointError(f"checkpoint {path} holds a {data.get('kind')!r}, expected a {kind!r}")
    missing = [k for k in required if k not in data]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks the field(s) {missing}: it was not written by a complete "
                              f"stnas run")
    return data
