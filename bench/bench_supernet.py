"""End-to-end supernet training throughput: stnas against a plain-PyTorch SPOS-style supernet.

    python bench/bench_supernet.py --out PATH [--device cuda|cpu] [--space tas] [--resolution 224]
                                   [--batch 256] [--steps 20] [--reps 3] [--data synthetic,jpeg]

Implementations, each training the same sequence of sampled architectures of the space:
  stnas            the training step of `stnas search` (stnas.methods.stnas.proxy_trainer: the supernet,
                   its fused BatchNorm + activation, masked_path_sum at the nodes, the fused SGLD step),
                   channels_last, plus bf16 autocast on a GPU, fed by the DALI loader (jpeg) or by device
                   tensors (synthetic)
  spos             bench/spos_baseline.py: nn.ModuleList of choices per layer, Python sums at the nodes,
                   torch.optim.SGD + randn_like noise, fp32 NCHW, fed by the PIL DataLoader with all cores
  stnas_fp32       stnas's step in fp32 and NCHW, as the baseline runs (separates what precision and layout
                   give from what the rest of stnas gives)
  spos_compile     the same under torch.compile (one graph per sampled architecture: recompiles are
                   counted in the time, as a user would pay them)
  spos_strong      the strong baseline: the same SPOS-style supernet as a competent user writes it, bf16
                   autocast and channels_last on a GPU, fp32 channels_last on the CPU (where bf16 autocast
                   is no gain)
  spos_strong_compile  the strong baseline under torch.compile
Per implementation and data source: images/s (median over --reps windows of --steps steps after
--warmup), peak memory, MAdds per image of the architectures trained, achieved FLOP/s (3 x 2 x MAdds
per image: forward and backward) against a measured matmul peak, and the top kernels by self time
from torch.profiler.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (IMAGENET_SAMPLE_TAR, ensure_stnas_importable, environment, jpeg_folder,  # noqa: E402
                    profile_calls, synchronize, time_fn, write_results)

ensure_stnas_importable()
from spos_baseline import SposSupernet, sgd_with_noise_step  # noqa: E402

from stnas.methods.stnas import ProxyConfig, arch_of_step, proxy_trainer  # noqa: E402
from stnas.spaces import Space  # noqa: E402
from stnas.supernet import SuperNet  # noqa: E402

LR, MOMENTUM, WD, TEMPERATURE, DATASET = 0.1, 0.9, 4e-5, 1e-3, 1_281_167


def space_at(name: str, resolution: int) -> Space:
    data = Space.load(name).to_dict()
    data["input"]["resolution"] = resolution
    return Space.from_dict(data)


def measure_matmul_peak(device: torch.device) -> float:
    """FLOP/s of a large matmul in the training precision (bf16 on a GPU, fp32 on the CPU)."""
    n = 8192 if device.type == "cuda" else 1024
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n ** 3 / time_fn(lambda: a @ b, warmup=3, reps=5, device=device)["median_s"]


class Runner:
    """One implementation: ``step(x, y, i)`` trains step i's architecture on a batch."""

    def __init__(self, impl: str, space: Space, device: torch.device, seed: int = 0):
        self.impl, self.space, self.device = impl, space, device
        torch.manual_seed(seed)
        gpu = device.type == "cuda"
        # The plain baseline stays as a user first writes it (fp32, NCHW); the strong one adds the two lines
        # a competent user adds: channels_last, and bf16 autocast where it pays (a GPU).
        strong = impl.startswith("spos_strong")
        self.amp = impl in ("stnas", "spos_strong", "spos_strong_compile") and gpu
        # stnas runs channels_last on the CPU too, as the strong baseline does: on 2 quiet EPYC cores
        # (2026-12-03) channels_last took the SPOS baseline from 119 to 143 img/s (median of 4 rows) at 64 px.
        self.channels_last = impl == "stnas" or strong
        if impl.startswith("stnas"):
            # The trainer `stnas search` runs, step for step (its train_step), without its data loop.
            self.net = SuperNet(space).to(device)
            if self.channels_last:
                self.net = self.net.to(memory_format=torch.channels_last)
            cfg = ProxyConfig(lr=LR, momentum=MOMENTUM, weight_decay=WD, temperature=TEMPERATURE,
                              dataset_size=DATASET, seed=0)
            self.trainer = proxy_trainer(self.net, lambda epoch: iter(()), 1, DATASET, cfg, device=device,
                                           progress=False, channels_last=self.channels_last, amp=self.amp)
            self.model = self.net
        else:
            self.net = SposSupernet(space).to(device)
            if self.channels_last:
                self.net = self.net.to(memory_format=torch.channels_last)
            self.opt = torch.optim.SGD(self.net.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
            self.model = torch.compile(self.net) if impl.endswith("_compile") else self.net
        self.loss_fn = nn.CrossEntropyLoss()

    def step(self, x, y, i):
        if self.impl.startswith("stnas"):
            self.trainer.step = i
            self.trainer.train_step((x, y))
            return
        arch = arch_of_step(self.space, 0, i)
        self.opt.zero_grad(set_to_none=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            loss = self.loss_fn(self.model(x, arch), y)
        loss.backward()
        sgd_with_noise_step(self.opt, LR, TEMPERATURE, DATASET)


def batches(kind: str, impl: str, args, space: Space, device: torch.device, root: Path | None):
    """Endless (x, y) batches: device tensors, or the implementation's loader over real JPEGs."""
    if kind == "synthetic":
        g = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn(args.batch, 3, space.resolution, space.resolution, generator=g).to(device)
        y = torch.randint(0, space.num_classes, (args.batch,), generator=g).to(device)
        while True:
            yield x, y
    from stnas.data import make_loader

    backend = "dali" if impl.startswith("stnas") else "pil"
    loader = make_loader(root, "train", batch_size=args.batch, image_size=space.resolution,
                         backend=backend, num_threads=args.threads, seed=0,
                         device=device if (backend == "dali" and device.type == "cuda") else None)
    while True:
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def run_one(impl: str, kind: str, args, space: Space, device: torch.device, root, peak: float) -> dict:
    if impl.endswith("_compile"):  # every data source pays its own compilations, from a cold dynamo cache
        torch._dynamo.reset()
        from torch._dynamo.utils import counters

        counters.clear()
    runner = Runner(impl, space, device)
    source = batches(kind, impl, args, space, device, root)
    i = 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        x, y = next(source)
        runner.step(x, y, i)
        i += 1
        print(".", end="", flush=True)  # warm-up steps can take minutes (compilations)
    synchronize(device)
    warm_s = time.perf_counter() - t0
    rates, archs = [], []
    for _ in range(args.reps):
        t = time.perf_counter()
        for _ in range(args.steps):
            x, y = next(source)
            runner.step(x, y, i)
            archs.append(arch_of_step(space, 0, i))
            i += 1
        synchronize(device)
        rates.append(args.steps * args.batch / (time.perf_counter() - t))
    madds = statistics.fmean(space.madds(a) for a in archs)
    ips = statistics.median(rates)
    flops = 3 * 2 * madds * ips
    row = {"impl": impl, "data": kind, "images_per_s": ips, "images_per_s_all": rates, "warmup_s": warm_s,
           "madds_per_image": madds, "achieved_flops": flops, "peak_flops": peak, "of_peak": flops / peak}
    if device.type == "cuda":
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    else:
        import resource

        row["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    if impl.endswith("_compile"):
        from torch._dynamo.utils import counters

        # Graphs compiled in this row (one per sampled architecture until dynamo's recompile limit, after
        # which the forward runs eagerly): what the time above paid for.
        row["dynamo_unique_graphs"] = int(counters["stats"]["unique_graphs"])
        row["dynamo_recompile_limit"] = int(torch._dynamo.config.recompile_limit)
    if args.profile_steps:
        row.update(profile(runner, source, i, args.profile_steps, device))
        if "gpu_busy_ms_per_step" in row:  # the rest of the step's wall time is the GPU waiting for the host
            row["gpu_busy_fraction"] = row["gpu_busy_ms_per_step"] / (1e3 * args.batch / ips)
    del runner, source
    return row


def run_loader(impl: str, args, space: Space, device: torch.device, root) -> dict:
    """The data pipeline of ``impl`` alone on real JPEGs (batches delivered to the device, no training):
    the rate the training step must stay below for the data never to be its bottleneck."""
    source = batches("jpeg", impl, args, space, device, root)
    for _ in range(args.warmup):
        next(source)
    synchronize(device)
    rates = []
    for _ in range(args.reps):
        t = time.perf_counter()
        for _ in range(args.steps):
            next(source)
        synchronize(device)
        rates.append(args.steps * args.batch / (time.perf_counter() - t))
    del source
    return {"impl": f"{impl}_loader_only", "data": "jpeg", "images_per_s": statistics.median(rates),
            "images_per_s_all": rates}


def profile(runner, source, i, steps, device, top=8) -> dict:
    """The top kernels by self time per step (GPU kernels on CUDA, operators on the CPU), and on CUDA the
    GPU's busy time per step: against the step's wall time it says how much launch gaps could cost (what
    CUDA graphs could win back)."""
    step_index = iter(range(i, i + steps))

    def step():
        x, y = next(source)
        runner.step(x, y, next(step_index))

    prof = profile_calls(step, steps, device)
    out = {"top_kernels": [{"name": e["name"], "self_ms_per_step": e["self_ms_per_call"],
                            "calls_per_step": e["count_per_call"]} for e in prof["events"][:top]]}
    if "gpu_busy_ms_per_call" in prof:
        out["gpu_busy_ms_per_step"] = prof["gpu_busy_ms_per_call"]
        out["kernels_per_step"] = prof["kernels_per_call"]
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="JSON results file")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--space", default="tas")
    p.add_argument("--resolution", type=int, default=None, help="default: 224 on a GPU, 64 on the CPU")
    p.add_argument("--batch", type=int, default=None, help="default: 256 on a GPU, 32 on the CPU")
    p.add_argument("--steps", type=int, default=None, help="steps per timed window (default 20 GPU, 3 CPU)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=None, help="default 10 GPU, 2 CPU")
    p.add_argument("--data", default="synthetic,jpeg", help="comma list of synthetic, jpeg")
    p.add_argument("--impls", default="stnas,stnas_fp32,spos,spos_compile,spos_strong,spos_strong_compile")
    p.add_argument("--tar", type=Path, default=IMAGENET_SAMPLE_TAR, help="ImageNet sample tar for --data jpeg")
    p.add_argument("--files", type=int, default=4000, help="JPEG files (the tar's images replicated)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--profile-steps", type=int, default=3)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    args.resolution = args.resolution or (224 if gpu else 64)
    args.batch = args.batch or (256 if gpu else 32)
    args.steps = args.steps or (20 if gpu else 3)
    args.warmup = args.warmup if args.warmup is not None else (10 if gpu else 2)
    torch.set_num_threads(args.threads)
    space = space_at(args.space, args.resolution)
    kinds = [k for k in args.data.split(",") if k]
    tmp = Path(tempfile.mkdtemp(prefix="stnas-bench-supernet-"))
    try:
        root = None
        if "jpeg" in kinds:
            if not args.tar.is_file():
                raise SystemExit(f"bench_supernet: {args.tar} not found; pass --tar, or --data synthetic")
            jpeg_folder(args.tar, tmp / "jpeg", args.files, classes=10)
            root = tmp / "jpeg"
        peak = measure_matmul_peak(device)
        rows = []
        config = {"space": args.space, "resolution": args.resolution, "batch": args.batch, "steps": args.steps,
                  "reps": args.reps, "warmup": args.warmup, "threads": args.threads,
                  "files": args.files if root else None, "lr": LR, "temperature": TEMPERATURE}

        def save():  # after every row: a run stopped part-way keeps the rows it finished
            write_results(args.out, {"benchmark": "supernet", "environment": environment(device), "config": config,
                                     "matmul_peak_flops": peak, "rows": rows})
        for kind in kinds:
            for impl in args.impls.split(","):
                print(f"{impl:13s} {kind:9s} ...", end="", flush=True)
                try:
                    row = run_one(impl, kind, args, space, device, root, peak)
                    print(f" {row['images_per_s']:9.1f} img/s  ({100 * row['of_peak']:.1f}% of the matmul peak)")
                except Exception as e:  # a failing implementation is a row with its error, never a silent skip
                    row = {"impl": impl, "data": kind, "error": f"{type(e).__name__}: {str(e)[:300]}"}
                    print(f" failed: {row['error']}")
                rows.append(row)
                save()
        if root is not None:
            for impl in ("stnas", "spos"):
                if impl in args.impls.split(","):
                    print(f"{impl + ' loader':23s} ...", end="", flush=True)
                    try:
                        row = run_loader(impl, args, space, device, root)
                        print(f" {row['images_per_s']:9.1f} img/s (data alone)")
                    except Exception as e:  # e.g. DALI not installed: a row with the reason
                        row = {"impl": f"{impl}_loader_only", "data": "jpeg",
                               "error": f"{type(e).__name__}: {str(e)[:300]}"}
                        print(f" failed: {row['error']}")
                    rows.append(row)
        for kind in kinds:
            # An impl listed more than once (interleaved rows, against a machine whose load drifts) counts
            # by the median of its rows; the ratios are of those medians, and on the last stnas row.
            rates: dict[str, list[float]] = {}
            for r in rows:
                if r["data"] == kind and "images_per_s" in r:
                    rates.setdefault(r["impl"], []).append(r["images_per_s"])
            med = {impl: statistics.median(v) for impl, v in rates.items()}
            by = {r["impl"]: r for r in rows if r["data"] == kind and "images_per_s" in r}
            if kind == "jpeg" and "stnas" in med and "stnas_loader_only" in med:
                # DALI alone against the training step it feeds (the target: >= 1.5x).
                by["stnas"]["loader_over_step"] = med["stnas_loader_only"] / med["stnas"]
            if "stnas" in med:
                by["stnas"]["median_images_per_s_of_impl"] = med
                for base in ("spos", "spos_compile", "spos_strong", "spos_strong_compile"):
                    if base in med:
                        by["stnas"][f"x_vs_{base}"] = med["stnas"] / med[base]
        save()
        print(f"wrote {args.out}")
        for r in rows:
            if "x_vs_spos" in r or "x_vs_spos_strong" in r:
                print(f"stnas/{r['data']} (medians of each impl's rows): {r.get('x_vs_spos', math.nan):.2f}x spos, "
                      f"{r.get('x_vs_spos_compile', math.nan):.2f}x spos_compile, "
                      f"{r.get('x_vs_spos_strong', math.nan):.2f}x spos_strong, "
                      f"{r.get('x_vs_spos_strong_compile', math.nan):.2f}x spos_strong_compile")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
