"""Shared helpers of the stnas microbenchmarks: timing, the machine's copy bandwidth, the environment
record, JSON output and a plain-text table.

Every benchmark reports, for each implementation measured in the same run: the median time, the
effective bandwidth computed from the op's byte floor (bytes that any implementation must move), that
bandwidth as a fraction of the measured copy bandwidth of the machine, and the ratio to the baselines.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
import re
import statistics
import subprocess
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
IMAGENET_SAMPLE_TAR = REPO_ROOT.parent / "shared" / "data" / "imagenet-sample" / "imagenet-sample-1000.tar"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}  # --dtype choices


def ensure_stnas_importable() -> None:
    """Make ``import stnas`` work from a source checkout that was not pip-installed."""
    try:
        import stnas  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(REPO_ROOT))


# ----------------------------------------------------------------------------------------------------
# argparse helpers

def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def add_memory_format_arg(parser, what: str) -> None:
    """--memory-format channels_last|contiguous (default channels_last: what the searches run), applied to
    ``what``; :func:`memory_format` reads it."""
    parser.add_argument("--memory-format", choices=("channels_last", "contiguous"), default="channels_last",
                        help=f"layout of {what} (default channels_last: what the searches run)")


def memory_format(args):
    """The torch.memory_format of ``--memory-format``."""
    return torch.channels_last if args.memory_format == "channels_last" else torch.contiguous_format


def add_common_args(parser) -> None:
    """--device, --threads, --warmup, --reps, --max-seconds, --out."""
    parser.add_argument("--device", choices=("cpu", "cuda"), default=default_device(),
                        help="device to run on (default: cuda if available, else cpu)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (torch.set_num_threads); default: torch's default")
    parser.add_argument("--warmup", type=int, default=None,
                        help="warm-up calls per measurement (default: 3 on cpu, 10 on cuda)")
    parser.add_argument("--reps", type=int, default=None,
                        help="timed calls per measurement (default: per benchmark and device, see its --help)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="stop timing one measurement after this many seconds once 3 reps are done "
                             "(default: 3 on cpu, 10 on cuda); keeps slow reference backends bounded")
    parser.add_argument("--copy-bytes", type=int, default=None,
                        help="size of the copy used to measure the machine's bandwidth "
                             "(default: 1 GiB on cuda, 256 MiB on cpu)")
    parser.add_argument("--out", default=None, help="JSON output path (default: bench/results/<op>_<device>.json)")


def resolve_common_args(args, *, cpu_reps: int = 10, cuda_reps: int = 100) -> torch.device:
    """Apply --threads, fill device-dependent defaults, return the torch.device."""
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available in this torch build / machine")
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    if args.warmup is None:
        args.warmup = 10 if cuda else 3
    if args.reps is None:
        args.reps = cuda_reps if cuda else cpu_reps
    if args.max_seconds is None:
        args.max_seconds = 10.0 if cuda else 3.0
    if args.copy_bytes is None:
        args.copy_bytes = (1 << 30) if cuda else (256 << 20)
    return device


def parse_int_list(text: str) -> list[int]:
    return [int(x) for x in re.split(r"[,\s]+", text.strip()) if x]


# ----------------------------------------------------------------------------------------------------
# timing

def synchronize(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn, warmup: int = 3, reps: int = 10, *, device: torch.device | str | None = None,
            max_seconds: float | None = None, min_reps: int = 3) -> dict:
    """Time ``fn()``: ``warmup`` untimed calls, then up to ``reps`` timed calls (fewer when ``max_seconds``
    of timed calls have passed and ``min_reps`` are done).

    On CUDA each call is bracketed by CUDA events (time on the stream, launch gaps included) after a
    synchronize; on CPU by ``time.perf_counter``. Returns seconds: median, min, max, mean, p10, p90 and
    the number of timed calls. No cache flush between calls.
    """
    device = torch.device(device) if device is not None else None
    cuda = device is not None and device.type == "cuda"
    t_warm = time.perf_counter()
    for i in range(max(0, warmup)):
        fn()
        if max_seconds is not None and time.perf_counter() - t_warm > max_seconds / 2:
            break  # a slow implementation (the reference backend on CPU) is warm after one call
    synchronize(device)
    times: list[float] = []
    start_all = time.perf_counter()
    if cuda:
        events = []
        for i in range(max(1, reps)):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            events.append((start, end))
            if max_seconds is not None and i + 1 >= min_reps and (i + 1) % 10 == 0:
                end.synchronize()
                if time.perf_counter() - start_all > max_seconds:
                    break
        torch.cuda.synchronize(device)
        times = [s.elapsed_time(e) * 1e-3 for s, e in events]
    else:
        for i in range(max(1, reps)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
            if max_seconds is not None and i + 1 >= min_reps and time.perf_counter() - start_all > max_seconds:
                break
    return summarize(times)


def summarize(times: list[float]) -> dict:
    ts = sorted(times)

    def q(p: float) -> float:
        if len(ts) == 1:
            return ts[0]
        x = p * (len(ts) - 1)
        lo, hi = math.floor(x), math.ceil(x)
        return ts[lo] + (ts[hi] - ts[lo]) * (x - lo)

    return {"median_s": statistics.median(ts), "min_s": ts[0], "max_s": ts[-1], "mean_s": statistics.fmean(ts),
            "p10_s": q(0.1), "p90_s": q(0.9), "reps": len(ts)}


def profile_calls(fn, calls: int, device: torch.device | str) -> dict:
    """Run ``fn()`` ``calls`` times under torch.profiler; per call, what ran, by self time. On CUDA it keeps
    GPU kernel events only (an operator's device time is its kernels' again) and adds the GPU's busy time
    and the number of kernels: busy time against the call's wall time shows what launches and gaps cost.
    On the CPU it lists operators."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile as torch_profile

    device = torch.device(device)
    cuda = device.type == "cuda"
    with torch_profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        for _ in range(calls):
            fn()
        synchronize(device)
    events = list(prof.key_averages())
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    kernels = [e for e in events if e.device_type == DeviceType.CUDA] if cuda else []
    if kernels:
        events = kernels
    events.sort(key=lambda e: getattr(e, key, 0), reverse=True)
    out = {"events": [{"name": e.key, "self_ms_per_call": getattr(e, key, 0) / 1e3 / calls,
                       "count_per_call": e.count / calls} for e in events]}
    if kernels:  # busy time only from kernel events: summing operators too would count it twice
        out["gpu_busy_ms_per_call"] = sum(getattr(e, key, 0) for e in kernels) / 1e3 / calls
        out["kernels_per_call"] = sum(e.count for e in kernels) / calls
    return out


def measure_copy_bandwidth(device: torch.device | str, nbytes: int = 256 << 20, warmup: int = 3,
                           reps: int = 10) -> dict:
    """The machine's copy bandwidth: ``dst.copy_(src)`` of ``nbytes`` (float32), counted as bytes read +
    bytes written over the median time. On CPU it uses the current ``torch.get_num_threads()``."""
    device = torch.device(device)
    n = max(1, nbytes // 4)
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    stats = time_fn(lambda: dst.copy_(src), warmup, reps, device=device)
    moved = 2 * n * 4
    out = {"bytes_copied": n * 4, "bytes_moved": moved, "gbps": moved / stats["median_s"] / 1e9,
           "gbps_best": moved / stats["min_s"] / 1e9, **stats}
    if device.type == "cpu":
        out["threads"] = torch.get_num_threads()
    del src, dst
    return out


# ----------------------------------------------------------------------------------------------------
# environment and output

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{_cpu_model()} ({os.cpu_count()} cores)"


def device_slug(device: torch.device | str) -> str:
    """Short file-name-safe name of the device: 'cuda-nvidia-h100-80gb-hbm3', 'cpu-amd-epyc-2c'."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{_cpu_model()} {os.cpu_count()}c"
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return f"{device.type}-{slug}" if not slug.startswith(device.type) else slug


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def environment(device: torch.device | str) -> dict:
    """Where and with what a benchmark ran."""
    device = torch.device(device)
    env = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "device_name": device_name(device),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
    }
    try:
        import triton
        env["triton"] = triton.__version__
    except Exception as exc:  # noqa: BLE001 - any import failure is just recorded
        env["triton"] = f"unavailable ({type(exc).__name__}: {exc})"
    try:
        import stnas
        env["stnas"] = getattr(stnas, "__version__", "unknown")
        env["stnas_path"] = os.path.dirname(stnas.__file__)
    except Exception as exc:  # noqa: BLE001
        env["stnas"] = f"unavailable ({type(exc).__name__}: {exc})"
    commit = _git("rev-parse", "HEAD")
    env["git_commit"] = commit
    if commit is not None:
        status = _git("status", "--porcelain", "--untracked-files=no")
        env["git_dirty"] = bool(status)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        env["gpu_sm_count"] = props.multi_processor_count
        env["gpu_capability"] = f"{props.major}.{props.minor}"
    for var in ("STNAS_BACKEND", "TRITON_INTERPRET", "OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES"):
        if os.environ.get(var) is not None:
            env[var] = os.environ[var]
    return env


def default_out(op: str, device: torch.device | str) -> Path:
    return RESULTS_DIR / f"{op}_{device_slug(device)}.json"


def write_results(path: str | os.PathLike, payload: dict) -> Path:
    """Write ``payload`` as JSON atomically (temporary file in the same folder + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=False, default=str)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def backend_report(op: str, device: torch.device) -> tuple[list[str], dict[str, str]]:
    """(available backends of ``op`` on ``device``, {unavailable backend: reason}); prints both."""
    from stnas.ops import _backend

    available, missing = [], {}
    for b in _backend.BACKENDS:
        why = _backend.unavailable_reason(op, b, device)
        if why:
            missing[b] = why
        else:
            available.append(b)
    print(f"{op} on {device}: available backends: {', '.join(available) or 'none'}")
    for b, why in missing.items():
        print(f"  unavailable: {b}: {why}")
    return available, missing


def error_string(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    first = msg[0] if msg else ""
    return f"{type(exc).__name__}: {first}"[:500]


# ----------------------------------------------------------------------------------------------------
# table

def fmt(value, spec: str = ".3g") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return format(value, spec)
    return str(value)


def table(rows: list[dict], columns: list[tuple[str, str, str]], file=None,
          id_keys: tuple[str, ...] = ("K", "mode")) -> str:
    """Print ``rows`` as an aligned text table. ``columns``: (key, header, format spec); a key absent
    from a row prints '-'. Rows with an 'error' key get it printed under the table. Returns the text."""
    header = [h for _, h, _ in columns]
    body = [[fmt(r.get(k), spec) if spec else fmt(r.get(k)) for k, _, spec in columns] for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in body)) if body else len(h) for i, h in enumerate(header)]

    def line(cells):
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [line(header), "  ".join("-" * w for w in widths)]
    out += [line(cells) for cells in body]
    errors = [r for r in rows if r.get("error")]
    for r in errors:
        ident = " ".join(f"{k}={r[k]}" for k in id_keys if k in r)
        out.append(f"! {r.get('impl', '?')}{' ' + ident if ident else ''}: {r['error']}")
    text = "\n".join(out)
    print(text, file=file or sys.stdout, flush=True)
    return text


def timing_fields(stats: dict, floor_bytes: int, copy_gbps: float) -> dict:
    """median/min time, GB/s from the byte floor and its fraction of the copy bandwidth."""
    gbps = floor_bytes / stats["median_s"] / 1e9
    return {"median_ms": stats["median_s"] * 1e3, "min_ms": stats["min_s"] * 1e3,
            "p10_ms": stats["p10_s"] * 1e3, "p90_ms": stats["p90_s"] * 1e3, "reps": stats["reps"],
            "floor_bytes": floor_bytes, "gbps": gbps, "frac_copy_bw": gbps / copy_gbps if copy_gbps else None}


def add_ratios(rows: list[dict], baselines: dict[str, str], group_keys: tuple[str, ...] = ()) -> None:
    """For each row, ``speedup_vs_<tag>`` = baseline median / row median, the baseline taken from the row
    of implementation ``baselines[tag]`` with the same values of ``group_keys`` (None when it errored)."""
    index = {}
    for r in rows:
        if r.get("median_ms") is not None:
            index[(r["impl"], *(r.get(k) for k in group_keys))] = r["median_ms"]
    for r in rows:
        for tag, impl in baselines.items():
            base = index.get((impl, *(r.get(k) for k in group_keys)))
            mine = r.get("median_ms")
            r[f"speedup_vs_{tag}"] = base / mine if base is not None and mine else None


# ----------------------------------------------------------------------------------------------------
# real JPEGs for the data and end-to-end benchmarks

def jpeg_folder(tar_path: Path, dest: Path, files: int, classes: int) -> list[Path]:
    """Extract the JPEGs of ``tar_path`` under dest/src and link them ``files`` times over ``classes``
    folders of dest/train; returns the extracted originals."""
    src = dest / "src"
    with tarfile.open(tar_path) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.lower().endswith((".jpeg", ".jpg"))]
        if not members:
            raise SystemExit(f"{tar_path}: no JPEG inside")
        tar.extractall(src, members=members, filter="data")
    originals = sorted(src / m.name for m in members)
    for k in range(files):
        folder = dest / "train" / f"class_{k % classes:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{k:06d}.jpg"
        try:
            os.link(originals[k % len(originals)], target)
        except OSError:  # a file system without hard links
            shutil.copyfile(originals[k % len(originals)], target)
    return originals
