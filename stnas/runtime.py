"""What every command and trainer shares at run time: rank and world of a distributed run, the device,
the precision policy, progress bars, and the guard that turns SIGTERM into a clean interrupt.

Nothing here knows a method: a trainer asks ``rank_world()`` and ``autocast(...)``, a command asks
``device(...)``; the policy lives in one place.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading

import torch


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the process group, (0, 1) outside one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Rank 0 writes the outputs of a distributed run; every rank computes them alike."""
    return rank_world()[0] == 0


def barrier() -> None:
    if rank_world()[1] > 1:
        torch.distributed.barrier()


def device(name: str | None = None) -> torch.device:
    """``name`` as a device (cuda without an index: this process's local GPU under torchrun); None: cuda
    when available, else cpu. A device this machine lacks is one ValueError."""
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if name is None:
        return torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {name!r} is not a device (cpu, cuda or cuda:N)") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name!r}: stnas runs on cpu or cuda[:N]")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local)
    return dev


def use_amp(dev: torch.device, amp: bool | None = None) -> bool:
    """Whether training and scoring run in bf16 autocast: ``amp`` when given, else on CUDA devices only
    (bf16 convolutions are slow on most CPUs)."""
    return torch.device(dev).type == "cuda" if amp is None else bool(amp)


def search_channels_last(dev: torch.device) -> bool:
    """Whether the searches (ST-NAS, DARTS, DrNAS, GOLD-NAS) feed and keep their activations and weights
    channels_last: on CUDA and on the CPU, where oneDNN's NHWC convolutions and pooling are faster (2 CPU
    cores, 2026-12-03: the ST-NAS demo search 50 s against 72 s NCHW; one DrNAS step on the NAS-Bench-201
    skeleton, batch 64 x 2, one thread: 3.1 s against 4.9 s, docs/toponas.md; GOLD-NAS on darts-gold-demo,
    batch 32: 113 against 142 ms)."""
    return torch.device(dev).type in ("cuda", "cpu")


def autocast(dev: torch.device, enabled: bool):
    """The mixed precision of training, scoring and retraining: bf16 autocast on ``dev`` when enabled
    (master weights stay fp32)."""
    return torch.autocast(torch.device(dev).type, dtype=torch.bfloat16, enabled=enabled)


def progress(total: int, initial: int, desc: str, enabled: bool):
    """A progress bar (tqdm) that stays silent when disabled, and on ranks other than 0."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled or not is_main(), leave=False,
                dynamic_ncols=True)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def interrupt_guard():
    """Inside the block, SIGTERM raises KeyboardInterrupt as Ctrl-C does, so that the caller's handler
    writes its checkpoint either way (signals can only be set from the main thread; elsewhere this does
    nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def init_distributed(device_name: str | None) -> tuple[int, int]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): NCCL when the run trains on
    GPUs, gloo on CPUs (``--device cpu`` on a GPU machine too). Multi-node runs use torchrun's rendezvous
    (--nnodes, --rdzv-endpoint); nothing here changes."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or dist.is_initialized():
        return rank_world()
    dev = device(device_name)
    if dev.type == "cuda":
        gpus = torch.cuda.device_count()
        if dev.index >= gpus:  # NCCL needs one GPU per process; two ranks on one GPU would fail in NCCL
            raise ValueError(f"torchrun started local rank {dev.index} but this machine has {gpus} GPU(s): use "
                             f"--nproc_per_node={gpus}, or --device cpu to train on the CPU (gloo)")
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return rank_world()


def setup_logging(out=None, name: str = "", hold: bool = False) -> None:
    """INFO to stderr, and to ``out/name`` when given; ranks other than 0 log warnings only.

    ``hold``: keep the file's lines in memory until :func:`release_log` (called once a run's checks
    have passed), so that a refused run leaves the output folder's log as it was."""
    import sys
    from pathlib import Path

    global _HELD
    _HELD = None
    if int(os.environ.get("RANK", "0")) != 0:  # one log per run, from rank 0
        logging.basicConfig(level=logging.WARNING, force=True)
        return
    handlers = [logging.StreamHandler(sys.stderr)]
    if out is not None and name:
        Path(out).mkdir(parents=True, exist_ok=True)
        handler = _HeldFileHandler(Path(out) / name, hold)  # no file until a line is logged (and released)
        handlers.append(handler)
        _HELD = handler if hold else None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=handlers, force=True)


_HELD = None


def release_log() -> None:
    """Write the log lines held since :func:`setup_logging` (``hold=True``) and log straight to the
    file from now on. Calling it again, or without a held log, does nothing."""
    global _HELD
    if _HELD is not None:
        _HELD.write_held()
        _HELD = None


class _HeldFileHandler(logging.FileHandler):
    """A file handler that keeps its records until :meth:`write_held` (when ``hold``). (Not ``release``:
    that is ``logging.Handler``'s lock release, called after every record.)"""

    def __init__(self, path, hold: bool):
        super().__init__(path, delay=True)
        self.held: list | None = [] if hold else None

    def emit(self, record):
        if self.held is not None:
            self.held.append(record)
        else:
            super().emit(record)

    def write_held(self):
        held, self.held = self.held or [], None
        for record in held:
            super().emit(record)
