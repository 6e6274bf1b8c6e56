"""Images per second of the ``stnas.data`` training pipeline: DALI against the PIL loader (the baseline),
measured in the same run on real ImageNet JPEGs.

    python bench/bench_data.py --out PATH [--device cpu|cuda] [--tar PATH] [--files 4000] [--classes 10]
                               [--batch 256] [--size 224] [--threads N] [--seconds S]

The 1,000 JPEGs of the tar (median 500x375) are extracted into a temporary folder and repeated, by hard
links, into ``--files`` files over ``--classes`` class folders of ``train/``. Every implementation runs
the same training pipeline (random resized crop to --size, flip, normalise, float32 NCHW batches of
--batch, last partial batch dropped) with --threads CPU threads (DALI) or worker processes (PIL):
  pil          stnas.data, backend='pil': PIL decode in DataLoader workers
  dali-cpu     stnas.data, backend='dali' on the CPU (decoders.image device='cpu')
  dali-mixed   stnas.data, backend='dali' with nvJPEG (device='mixed'); only with --device cuda
One repetition is one epoch. Reported per implementation: the median over repetitions of the steady-state
rate (images of batches 3..end over their time), the median whole-epoch rate (start-up included), and
the ratio to 'pil'. The floor: a single thread's plain PIL decode rate of the same files (no resize)
times --threads is the rate a CPU pipeline reaches if decoding were all it did and it scaled perfectly;
each CPU row reports its fraction of it.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

try:
    from bench import common
except ImportError:  # run as `python bench/bench_data.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import common

common.ensure_stnas_importable()

from stnas import data as stdata

DEFAULT_TAR = common.IMAGENET_SAMPLE_TAR
SKIP_BATCHES = 2  # batches at the start of an epoch left out of the steady-state rate (pipeline filling)


def decode_floor(originals: list[Path], seconds: float) -> dict:
    """One thread's plain PIL decode rate (open + RGB + load), the work any CPU pipeline must do."""
    from PIL import Image

    n, t0 = 0, time.perf_counter()
    while n < 50 or time.perf_counter() - t0 < seconds:
        with Image.open(originals[n % len(originals)]) as im:
            im.convert("RGB").load()
        n += 1
    dt = time.perf_counter() - t0
    return {"images": n, "seconds": dt, "images_per_s": n / dt}


def measure(loader, seconds: float, min_reps: int = 2, max_reps: int = 20) -> dict:
    """Epochs until ``seconds`` have passed (at least ``min_reps``) after an untimed warm-up."""
    for i, _ in enumerate(loader):  # warm-up (page cache, DALI's first build): a few batches of one epoch
        if i == SKIP_BATCHES:
            break
    steady, whole = [], []
    t_start = time.perf_counter()
    while len(whole) < max_reps and (len(whole) < min_reps or time.perf_counter() - t_start < seconds):
        t0 = time.perf_counter()
        t_mark, n_after = None, 0
        for i, (x, _) in enumerate(loader):
            if i == SKIP_BATCHES - 1:
                t_mark = time.perf_counter()
            elif i >= SKIP_BATCHES:
                n_after += x.shape[0]
        t1 = time.perf_counter()
        whole.append(loader.size // loader.batch_size * loader.batch_size / (t1 - t0))
        if t_mark is not None and n_after:
            steady.append(n_after / (t1 - t_mark))
    return {"reps": len(whole), "images_per_s": statistics.median(steady) if steady else None,
            "images_per_s_min": min(steady) if steady else None, "images_per_s_max": max(steady) if steady else None,
            "epoch_images_per_s": statistics.median(whole)}


def versions() -> dict:
    out = {}
    for name, module in (("dali", "nvidia.dali"), ("pillow", "PIL"), ("numpy", "numpy")):
        try:
            out[name] = __import__(module, fromlist=["__version__"]).__version__
        except Exception as e:  # noqa: BLE001 - a missing library is recorded, not fatal
            out[name] = f"unavailable ({type(e).__name__}: {e})"
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="JSON output path")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=common.default_device())
    parser.add_argument("--tar", type=Path, default=DEFAULT_TAR, help=f"ImageNet sample tar (default {DEFAULT_TAR})")
    parser.add_argument("--files", type=int, default=4000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="DALI CPU threads and PIL worker processes (default: all cores)")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds per implementation (after "
                        "a warm-up of a few batches; at least 2 epochs)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available on this machine")
    if not args.tar.is_file():
        raise SystemExit(f"--tar {args.tar}: no such file (the ImageNet sample of ../shared/data)")
    if args.files < args.batch * (SKIP_BATCHES + 1):
        raise SystemExit(f"--files {args.files}: need at least {args.batch * (SKIP_BATCHES + 1)} for --batch "
                         f"{args.batch} (a steady-state window after {SKIP_BATCHES} batches)")
    device = torch.device(args.device)
    # The load average shows whether other work shared the cores during the run.
    env = {**common.environment(device), **versions(), "threads": args.threads,
           "loadavg_1min_before": os.getloadavg()[0]}
    print(f"{env['device_name']}; torch {env['torch']}, DALI {env['dali']}, Pillow {env['pillow']}; "
          f"{args.threads} threads")

    impls = [("pil", "pil", None), ("dali-cpu", "dali", None)]
    if device.type == "cuda":
        impls.append(("dali-mixed", "dali", device))
    rows = []
    with tempfile.TemporaryDirectory(prefix="stnas-bench-data-") as tmp:
        t0 = time.perf_counter()
        originals = common.jpeg_folder(args.tar, Path(tmp), args.files, args.classes)
        print(f"{args.files} files over {args.classes} classes from {len(originals)} JPEGs "
              f"({time.perf_counter() - t0:.1f} s)")
        floor = decode_floor(originals, seconds=3.0)
        ceiling = floor["images_per_s"] * args.threads
        print(f"PIL decode only, 1 thread: {floor['images_per_s']:.0f} img/s -> ceiling {ceiling:.0f} img/s")
        for name, backend, dev in impls:
            row = {"impl": name, "backend": backend, "decode_device": "mixed" if dev is not None else "cpu"}
            try:
                loader = stdata.make_loader(Path(tmp), "train", batch_size=args.batch, image_size=args.size,
                                            num_threads=args.threads, backend=backend, device=dev, seed=0)
                row.update(measure(loader, args.seconds))
                if dev is None and row["images_per_s"]:
                    row["frac_decode_ceiling"] = row["images_per_s"] / ceiling
            except Exception as e:  # noqa: BLE001 - a failing implementation is a row with its error
                row["error"] = common.error_string(e)
            rows.append(row)
            print(f"  {name}: {common.fmt(row.get('images_per_s'), '.0f')} img/s", flush=True)
    base = next((r.get("images_per_s") for r in rows if r["impl"] == "pil"), None)
    for r in rows:
        r["ratio_vs_pil"] = r["images_per_s"] / base if base and r.get("images_per_s") else None
    common.table(rows, [("impl", "impl", ""), ("images_per_s", "img/s", ".0f"),
                        ("images_per_s_min", "min", ".0f"), ("images_per_s_max", "max", ".0f"),
                        ("epoch_images_per_s", "epoch img/s", ".0f"), ("reps", "epochs", ""),
                        ("frac_decode_ceiling", "of ceiling", ".2f"), ("ratio_vs_pil", "vs pil", ".2f")])
    env["loadavg_1min_after"] = os.getloadavg()[0]
    payload = {
        "benchmark": "data_loader",
        "environment": env,
        "config": {"tar": str(args.tar), "files": args.files, "classes": args.classes, "batch": args.batch,
                   "size": args.size, "threads": args.threads, "seconds": args.seconds, "dtype": "float32",
                   "layout": "NCHW", "pipeline": "train: random resized crop, flip, normalise; drop last",
                   "steady_state_skips_batches": SKIP_BATCHES},
        "decode_floor": {**floor, "ceiling_images_per_s": ceiling},
        "rows": rows,
    }
    common.write_results(args.out, payload)
    print(f"wrote {args.out}")
    return payload


if __name__ == "__main__":
    main()
