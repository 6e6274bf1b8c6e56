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

from stnas.runtime import is_main, release_log

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
        if len(first) > 200:  # torch's messages run long: keep whole words, and say that it is cut
            first = first[:200].rsplit(" ", 1)[0] + " ..."
        raise CheckpointError(f"checkpoint {path} cannot be read: it is truncated, corrupt or not a safe "
                              f"stnas checkpoint ({first})") from None
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


# Settings a resumed run may change: where the data lies and how it is read, where the table lies, and
# how often checkpoints are written. Anything else in config.json changes the result.
RESUME_FREE = frozenset({"root", "loader", "benchmark", "metric", "checkpoint_every"})


def start_run(out, config: dict, checkpoints: Sequence, resume: bool, free=RESUME_FREE) -> None:
    """Begin, or continue, a run in ``out``: every refusal comes before anything in ``out`` changes.

    A run whose checkpoint(s) exist is refused without ``resume``; a resumed run whose settings differ
    from the ``config.json`` it wrote is refused, naming every setting that differs (keys whose last
    part is in ``free`` may change). Only then is ``config.json`` written and the log that
    :func:`stnas.runtime.setup_logging` held (``hold=True``) released to ``out``."""
    out = Path(out)
    existing = [Path(p) for p in checkpoints if Path(p).exists()]
    if existing and not resume:
        raise FileExistsError(f"{existing[0]} exists: pass --resume to continue that run, or choose another --out")
    path = out / "config.json"
    config = json.loads(json.dumps(config))  # the form it is written in (tuples as lists)
    if resume and existing and path.exists():
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{path} cannot be read ({e}): the run cannot be checked for --resume") from None
        changed = _changed_settings(saved, config, free)
        if changed:
            shown = ", ".join(f"{k} (saved {a!r}, now {b!r})" for k, a, b in changed[:6])
            more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
            raise CheckpointError(f"--resume with other settings than {path}: {shown}{more}; resume with the same "
                                  "options or choose another --out")
    write_json(path, config)
    release_log()


def _changed_settings(saved, now, free, prefix: str = "") -> list[tuple]:
    """(dotted key, saved, now) for every leaf that differs, nested dicts walked key by key."""
    if isinstance(saved, dict) and isinstance(now, dict):
        out = []
        for k in sorted(set(saved) | set(now), key=str):
            if k in free:
                continue
            out += _changed_settings(saved.get(k), now.get(k), free, f"{prefix}{k}.")
        return out
    return [] if saved == now else [(prefix.rstrip("."), saved, now)]


def written_files(out) -> str:
    """Every file and folder a run left in ``out``, for the closing message (never a fixed list that
    forgets one)."""
    names = [p.name + ("/" if p.is_dir() else "") for p in sorted(Path(out).iterdir()) if not p.name.startswith(".")]
    return ", ".join(names)


class OutputError(ValueError):
    """An output folder that cannot be used: a file, not writable, or in use by another run."""


def check_output_dir(path) -> Path:
    """``path`` as an output folder that exists and is writable (created if missing), checked before any
    work so that a run never fails at its end for a folder it could not write; one OutputError
    otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"--out {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"--out {path} cannot be written ({e.strerror or e})") from None
    return path


def check_output_file(path) -> Path:
    """``path`` as an output file (``export --out``): its folder exists or can be made and is writable,
    and ``path`` is not a folder; checked before any work, one OutputError otherwise."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"--out {path} is a folder; give the file to write (e.g. {path / 'model.pt'})")
    try:
        check_output_dir(path.parent)
    except OutputError as e:
        raise OutputError(f"--out {path}: its folder {path.parent} cannot be written "
                          f"({str(e).rsplit('(', 1)[-1]}") from None
    return path


class OutputLock:
    """An exclusive claim on an output folder for one run (``.stnas.lock`` holding the owner's pid and
    host). A second run into the same folder is refused in one line; a lock left by a process that no
    longer runs on this host is taken over. Only rank 0 of a distributed run holds it."""

    NAME = ".stnas.lock"

    def __init__(self, folder):
        self.path = Path(folder) / self.NAME
        self.held = False

    def __enter__(self) -> "OutputLock":
        if not is_main():
            return self
        import socket

        me = f"{os.getpid()} {socket.gethostname()}"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is not None:
                    raise OutputError(f"{self.path.parent} is in use by another stnas run (pid {owner[0]} on "
                                      f"{owner[1]}); wait for it or choose another --out") from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(me + "\n")
            self.held = True
            return self
        raise OutputError(f"{self.path}: cannot take the lock")

    def _owner(self):
        """(pid, host) of a live owner, None when the lock is stale or unreadable."""
        import socket

        try:
            pid_text, host = self.path.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        if host != socket.gethostname():
            return (pid, host)  # another machine's run: assume it is alive
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return (pid, host)

    def __exit__(self, *exc):
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
        return False
