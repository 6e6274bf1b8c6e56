"""TopoNAS's simplification (stnas.supernet.toponas) against the unsimplified mixed supernet: per mixed edge,
per search step, and the search's end result.

    python bench/bench_toponas.py [--device cpu|cuda] [--space nb201] [--batch 64] [--weighting dirichlet]
                                  [--modes plain,unmerged,merged,merged-nokn,exact] [--steps N] [--warmup W]
                                  [--parts edge,skip_pool,step,search] [--search-epochs E] [--seeds 0,1]
                                  [--search-modes unmerged,merged] [--benchmark CSV]
                                  [--memory-format channels_last|contiguous] [--out PATH] [--plot PNG]
    python bench/bench_toponas.py --replot RESULTS.json --plot PNG      (draw an earlier run, measure nothing)

1. edge: one NAS-Bench-201 mixed edge (all 5 ops) at each stage's width and resolution (C16@32px,
   C32@16px, C64@8px), ``--batch`` images, forward + backward of ``(out * g).sum()`` to the input, the
   op weights and the architecture weights: MixedCell with two nodes (the unmerged edge: ops one by one,
   ReLU and pooling shared per source, masked_path_sum) against SimplifiedMixedCell (merged).
1b. skip_pool (``--parts skip_pool``): the merged edge's skip + 3x3 average pooling, forward + backward to
   x and both weights, at the same widths: ``eager`` (``w_skip * x + w_pool * avg_pool2d(x)`` with
   autograd, the code a user would write) against skip_pool's impls (``pool``: avg_pool2d with a written
   backward; ``cpp``: the CPU's C++ pass; ``triton``: CUDA's kernel), with the byte floor (x, out, g, x, dx)
   over the measured copy bandwidth (bench/common.measure_copy_bandwidth) and the fraction reached.
2. step: the search step `stnas search --method drnas|darts` takes (DifferentiableTrainer.train_step:
   architecture step on one batch, weight step on another; bench_mixed_supernet's TrainerStep) on
   MixedCellNet(space, weighting, simplify=...).
   Rows: ``unmerged`` (simplify off), ``merged`` (--simplify: one BN per edge, kernel normalisation),
   ``merged-nokn`` (no kernel normalisation), ``exact`` (norm="none": no BN on the conv group), and
   ``plain``, the baseline a user would otherwise write: bench/nb201_plain.py's AutoDL/NASLib-style
   supernet (every op its own ReLU-conv-BN, ``sum(w * op(x))`` per edge) stepped with a whole backward in
   both steps, as their code does (bench_mixed_supernet's SearchStep). Ratios to both ``unmerged`` (what
   --simplify changes) and ``plain``.
3. search (``--parts search``): DrNAS/DARTS searches (``--methods``, ``--search-epochs``) on the built-in
   demo data (nb201-demo space) in each of ``--search-modes`` (default: unmerged and merged, i.e. without
   and with --simplify), the same seeds (``--seeds``), and the derived cell's NAS-Bench-201 table accuracy.

All modes run in ``--memory-format`` (default channels_last: what the searches run on the CPU and on
CUDA, stnas.runtime.search_channels_last), inputs, activations and weights alike.

Time: median over the timed calls after the warm-up (edge part: bench/common.time_fn per row; step part:
every mode built and warmed first, then ``--reps`` rounds of one call per mode, so that a drift of a
shared machine's speed falls on all modes alike); on the CPU also the median process CPU time of the same
calls (``cpu_ms``: steadier than wall time on a shared machine; run with ``--threads 1`` for it to mean
single-thread work). Step floor: the FLOPs the step performs (torch.utils.flop_counter over one call:
convolutions and matmuls, forward and the gradients the backward computes) over the measured matmul peak
(bench_supernet.measure_matmul_peak), and the fraction of it reached (``frac_of_floor``). Peak activation
memory: the bytes of the tensors autograd saves for backward (torch.autograd.graph.saved_tensors_hooks, one
count per storage, parameters, buffers and the input batches excluded; the larger of the step's two
passes), on an extra untimed call; on CUDA also torch.cuda.max_memory_allocated (edge: over the timed
calls; step: over one more call of the mode alone).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from dataclasses import asdict
import tempfile
import time
from pathlib import Path

import torch

try:
    from bench import common
except ImportError:  # run as `python bench/bench_toponas.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import common

common.ensure_stnas_importable()

from stnas.spaces import Space  # noqa: E402

try:
    from bench.bench_mixed_supernet import SavedTensorMeter, SearchStep, TrainerStep, load_space, matmul_peak
    from bench.nb201_plain import PlainDartsSupernet
except ImportError:
    from bench_mixed_supernet import SavedTensorMeter, SearchStep, TrainerStep, load_space, matmul_peak
    from nb201_plain import PlainDartsSupernet

MODES = {"unmerged": None, "merged": {}, "merged-nokn": {"kernel_norm": False},
         "exact": {"norm": "none", "kernel_norm": False}}
# The step a user would otherwise write (step part only): bench/nb201_plain.py's supernet (AutoDL-Projects /
# NASLib style, every op with its own ReLU-conv-BN, sum(w * op(x)) per edge) under bench_mixed_supernet's
# SearchStep (whole backward in both steps, as their code takes it).
PLAIN = "plain"
MEMORY_METHOD = ("saved_activation_mib: bytes of the tensors autograd saves for backward (saved_tensors_hooks, one "
                 "count per storage; parameters, buffers and inputs excluded); for a step the larger of its two passes")
DEFAULT_TABLE = common.REPO_ROOT.parent / "shared" / "data" / "nb201" / "nats_bench.csv"


# ---------------------------------------------------------------------- 1. one mixed edge

def edge_module(mode: str, space: Space, channels: int, device, fmt):
    from stnas.supernet.mixed import MixedCell
    from stnas.supernet.toponas import Simplify, SimplifiedMixedCell

    torch.manual_seed(0)
    opts = MODES[mode]
    cell = (MixedCell(2, space.ops, channels) if opts is None
            else SimplifiedMixedCell(2, space.ops, channels, 1, Simplify(**opts))).to(device, memory_format=fmt)
    cell._plan = cell.plan([[True] * len(space.ops)])
    return cell.train()


def bench_edge(mode: str, space: Space, channels: int, size: int, args, device) -> dict:
    row = {"part": "edge", "mode": mode, "channels": channels, "size": size}
    try:
        fmt = common.memory_format(args)
        cell = edge_module(mode, space, channels, device, fmt)
        g = torch.Generator(device="cpu").manual_seed(1)
        x = torch.randn(args.batch, channels, size, size, generator=g).to(device, memory_format=fmt).requires_grad_(True)
        beta = torch.randn(1, len(space.ops), generator=g).to(device).requires_grad_(True)
        grad_out = torch.randn(args.batch, channels, size, size, generator=g).to(device, memory_format=fmt)
        params = [x, beta, *cell.parameters()]

        def call(meter=None):
            with meter if meter is not None else contextlib.nullcontext():
                out = cell(x, beta.softmax(-1))
                loss = (out * grad_out).sum()
            torch.autograd.grad(loss, params, allow_unused=True)

        time_into(row, call, args, device)
        exclude = {t.untyped_storage().data_ptr() for t in [x, grad_out, *cell.parameters(), *cell.buffers()]}
        meter = SavedTensorMeter(exclude)
        call(meter)
        row["saved_activation_mib"] = meter.nbytes / 2 ** 20
    except Exception as exc:  # noqa: BLE001 - a failing row says why
        row["error"] = common.error_string(exc)
    return row


class CpuTimed:
    """``fn`` that also records the process CPU time of each call: on a CPU shared with other jobs it is the
    steadier figure (with --threads 1, the work done rather than the wall time the scheduler gave)."""

    def __init__(self, fn):
        self.fn, self.times = fn, []

    def __call__(self):
        t0 = time.process_time()
        self.fn()
        self.times.append(time.process_time() - t0)

    def median_ms(self, last: int) -> float:
        import statistics

        return statistics.median(self.times[-last:]) * 1e3


def time_into(row: dict, fn, args, device) -> dict:
    """Time ``fn`` (warm-up, repeats, median; ``args.max_seconds`` caps it) into ``row``: median/p10/p90
    in ms, the reps, and the peak CUDA memory on a GPU or the median process CPU time on the CPU."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timed = CpuTimed(fn)
    stats = common.time_fn(timed, args.warmup, args.reps, device=device, max_seconds=args.max_seconds)
    if device.type == "cuda":
        row["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    else:
        row["cpu_ms"] = timed.median_ms(stats["reps"])
    row.update({"median_ms": stats["median_s"] * 1e3, "p10_ms": stats["p10_s"] * 1e3,
                "p90_ms": stats["p90_s"] * 1e3, "reps": stats["reps"]})
    return stats


# ---------------------------------------------------------------------- 1b. the skip + pooling pass

SKIP_POOL_IMPLS = ("eager", "pool", "cpp", "triton")


def bench_skip_pool(impl: str, channels: int, size: int, args, device, copy_gbps: float) -> dict:
    """Forward + backward (to x and both weights) of ``w_skip * x + w_pool * avgpool(x)``: ``eager`` is the
    code a user would write (the two terms with autograd); the others are stnas.supernet.toponas.skip_pool's
    impls. Byte floor: x read and out written forward, g and x read and dx written backward (5 tensors)."""
    from stnas.supernet.toponas import skip_pool

    row = {"part": "skip_pool", "impl": impl, "mode": impl, "channels": channels, "size": size}
    if impl == "cpp" and device.type != "cpu":
        row["error"] = "skipped: the C++ pass runs on CPU tensors"
        return row
    if impl == "triton" and device.type != "cuda":
        row["error"] = "skipped: Triton on the CPU is its interpreter (a correctness tool, not timed)"
        return row
    try:
        fmt = common.memory_format(args)
        g = torch.Generator(device="cpu").manual_seed(2)
        x = torch.randn(args.batch, channels, size, size, generator=g).to(device, memory_format=fmt).requires_grad_()
        grad_out = torch.randn(args.batch, channels, size, size, generator=g).to(device, memory_format=fmt)
        w = torch.tensor([0.4, 0.7], device=device, requires_grad=True)

        def call():
            if impl == "eager":
                out = w[0] * x + w[1] * torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
            else:
                out = skip_pool(x, w[0], w[1], True, impl)
            torch.autograd.grad(out, [x, w], grad_out)

        stats = time_into(row, call, args, device)
        row.update(common.timing_fields(stats, 5 * x.numel() * x.element_size(), copy_gbps))
    except Exception as exc:  # noqa: BLE001 - a failing row says why
        row["error"] = common.error_string(exc)
    return row


# ---------------------------------------------------------------------- 2. one search step

def build_step(mode: str, space: Space, args, device, batches):
    """The search step of ``mode`` as a callable (``saved_bytes()`` measures its activation memory)."""
    from stnas.supernet.mixed import MixedCellNet

    torch.manual_seed(args.seed)
    fmt = common.memory_format(args)
    if mode == PLAIN:
        model = PlainDartsSupernet(space, args.weighting).to(device, memory_format=fmt).train()
        return SearchStep(model, model, batches)
    model = MixedCellNet(space, weighting=args.weighting, simplify=MODES[mode])
    return TrainerStep(model.to(device, memory_format=fmt).train(), batches, compile=False)


def step_flops(step) -> int:
    """FLOPs of one step as torch.utils.flop_counter counts them (convolutions and matmuls, forward and
    the backward's computed outputs only: a gradient a step does not ask for is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def bench_steps(modes: list[str], space: Space, args, device, batches, peak: float) -> list[dict]:
    """Every mode's step, built first and then timed in interleaved rounds (one call of each mode per
    round), so that a drift of the machine's speed falls on all modes alike."""
    rows, steps = {}, {}
    for mode in modes:
        rows[mode] = row = {"part": "step", "mode": mode}
        t0 = time.perf_counter()
        try:
            steps[mode] = step = build_step(mode, space, args, device, batches)
            for _ in range(max(1, args.warmup)):
                step()
            common.synchronize(device)
        except Exception as exc:  # noqa: BLE001 - a failing row says why
            row["error"] = common.error_string(exc)
        row["wall_s"] = time.perf_counter() - t0
    times = {m: [] for m in steps}
    cpu = {m: [] for m in steps}
    for _ in range(max(1, args.reps)):
        for mode, step in list(steps.items()):
            try:
                common.synchronize(device)
                t0, c0 = time.perf_counter(), time.process_time()
                step()
                common.synchronize(device)
                times[mode].append(time.perf_counter() - t0)
                cpu[mode].append(time.process_time() - c0)
            except Exception as exc:  # noqa: BLE001
                rows[mode]["error"] = common.error_string(exc)
                del steps[mode]
    for mode, step in steps.items():
        row, stats = rows[mode], common.summarize(times[mode])
        row.update({"median_ms": stats["median_s"] * 1e3, "p10_ms": stats["p10_s"] * 1e3,
                    "p90_ms": stats["p90_s"] * 1e3, "reps": stats["reps"],
                    "images_per_s": 2 * args.batch / stats["median_s"]})
        if device.type == "cpu":
            row["cpu_ms"] = common.summarize(cpu[mode])["median_s"] * 1e3
        row["step_gflop"] = step_flops(step) / 1e9
        if peak == peak:  # not NaN
            row["floor_ms"] = row["step_gflop"] * 1e9 / peak * 1e3
            row["frac_of_floor"] = row["floor_ms"] / row["median_ms"]
        row["saved_activation_mib"] = step.saved_bytes() / 2 ** 20
        if device.type == "cuda":  # on one more, untimed call of this mode alone
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            step()
            row["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    return [rows[m] for m in modes]


# ---------------------------------------------------------------------- 3. the search's end result

def bench_search(method: str, mode: str, seed: int, args, device, table) -> dict:
    """One DrNAS/DARTS search on the built-in demo data (nb201-demo), the derived cell and its table entry."""
    from stnas.data import data_root
    from stnas.data.bilevel import BilevelData
    from stnas.methods.drnas import DrNASConfig, run_drnas
    from stnas.supernet.toponas import Simplify
    from stnas.train.differentiable import DifferentiableConfig

    row = {"part": "search", "method": method, "mode": mode, "seed": seed, "epochs": args.search_epochs}
    simplify = False if MODES[mode] is None else Simplify(**MODES[mode])
    t0 = time.perf_counter()
    try:
        space = Space.load("nb201-demo")
        data = BilevelData(data_root(None), space.resolution, 64, seed=seed, backend="pil", num_threads=args.threads,
                           device=device if device.type == "cuda" else None)
        cfg = DrNASConfig(weighting="dirichlet" if method == "drnas" else "softmax",
                          train=DifferentiableConfig(epochs=args.search_epochs, seed=seed))
        if simplify:
            cfg.simplify = asdict(simplify)  # a dict of options (the CLI's --simplify is True = the defaults)
        with tempfile.TemporaryDirectory() as out:
            summary = run_drnas(space, data, cfg, Path(out), device=device, progress=False, table=table, seed=seed)
        row.update({"derived": summary["derived"]["nb201"], "table": summary.get("table")})
    except Exception as exc:  # noqa: BLE001
        row["error"] = common.error_string(exc)
    row["wall_s"] = time.perf_counter() - t0
    return row


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser)
    parser.add_argument("--space", default="nb201", help="cell space of the step and edge parts (default nb201)")
    parser.add_argument("--batch", type=int, default=64, help="images per batch (default 64)")
    parser.add_argument("--weighting", choices=("softmax", "dirichlet"), default="dirichlet")
    parser.add_argument("--modes", default=",".join([PLAIN, *MODES]),
                        help=f"comma list of {PLAIN} (the step part's AutoDL/NASLib-style baseline), "
                             f"{', '.join(MODES)} (default: all)")
    parser.add_argument("--parts", default="edge,step",
                        help="comma list of edge, skip_pool, step, search (default edge,step)")
    parser.add_argument("--steps", type=int, default=None, help="timed calls per row (same as --reps)")
    parser.add_argument("--seed", type=int, default=0)
    common.add_memory_format_arg(parser, "the edge and step parts, both modes")
    parser.add_argument("--search-epochs", type=int, default=3, help="epochs of each search of the search part")
    parser.add_argument("--seeds", default="0,1", help="seeds of the search part (default 0,1)")
    parser.add_argument("--methods", default="darts,drnas", help="methods of the search part (default darts,drnas)")
    parser.add_argument("--search-modes", default="unmerged,merged",
                        help="modes of the search part (default unmerged,merged: without and with --simplify)")
    parser.add_argument("--benchmark", type=Path, default=DEFAULT_TABLE,
                        help="NAS-Bench-201 table for the search part (default: the shared data's nats_bench.csv)")
    parser.add_argument("--plot", type=Path, default=None,
                        help="also draw the step rows (time and memory per mode) into this PNG")
    parser.add_argument("--replot", type=Path, default=None, metavar="RESULTS_JSON",
                        help="measure nothing: draw --plot from the step rows of an earlier run's JSON")
    args = parser.parse_args(argv)
    if args.replot is not None:
        return replot(args.replot, args.plot)
    device = common.resolve_common_args(args, cpu_reps=5, cuda_reps=50)
    if args.steps is not None:
        args.reps = args.steps
    modes = [m for m in args.modes.split(",") if m]
    parts = [p for p in args.parts.split(",") if p]
    for m in modes:
        if m not in MODES and m != PLAIN:
            raise SystemExit(f"bench_toponas: unknown mode {m!r} (modes: {PLAIN}, {', '.join(MODES)})")
    space = load_space(args.space, None, None)
    out = Path(args.out) if args.out else common.default_out("toponas", device)
    env = common.environment(device)
    print(f"# TopoNAS simplification on {env['device_name']} | torch {env['torch']} | threads {torch.get_num_threads()}")
    config = {"space": space.to_dict(), "batch": args.batch, "weighting": args.weighting, "modes": modes,
              "mode_options": {m: MODES.get(m, "bench/nb201_plain.py, whole backward") for m in modes},
              "parts": parts, "reps": args.reps,
              "warmup": args.warmup, "max_seconds": args.max_seconds, "seed": args.seed, "dtype": "fp32",
              "memory_format": args.memory_format}
    rows: list[dict] = []

    def payload() -> dict:
        return {"benchmark": "toponas", "environment": env, "config": config,
                "memory_methods": {"saved_activation_mib": MEMORY_METHOD,
                                   **({"peak_memory_mib": "torch.cuda.max_memory_allocated over the timed calls"}
                                      if device.type == "cuda" else {})},
                "rows": rows}

    def ratios():
        for ref in ("unmerged", PLAIN):
            base = {(r["part"], r.get("channels")): r for r in rows if r.get("mode") == ref and "median_ms" in r}
            for r in rows:
                b = base.get((r["part"], r.get("channels")))
                if b is not None and "median_ms" in r:
                    r[f"speedup_vs_{ref}"] = b["median_ms"] / r["median_ms"]
                    if "cpu_ms" in r and "cpu_ms" in b:
                        r[f"cpu_speedup_vs_{ref}"] = b["cpu_ms"] / r["cpu_ms"]
                    r[f"memory_vs_{ref}"] = r["saved_activation_mib"] / b["saved_activation_mib"]

    # Each stage's width and resolution (NAS-Bench-201: C16 @ 32 px, C32 @ 16 px, C64 @ 8 px).
    widths = [(space.stage_channels[s], space.resolution // 2 ** s) for s in range(len(space.stage_channels))]
    if "edge" in parts:
        for c, size in widths:
            for mode in [m for m in modes if m != PLAIN]:
                row = bench_edge(mode, space, c, size, args, device)
                rows.append(row)
                ratios()
                print(f"edge C{c}@{size}px {mode:12s} " + (row.get("error") or
                      f"{row['median_ms']:8.2f} ms  {row['saved_activation_mib']:7.1f} MiB saved"), flush=True)
                common.write_results(out, payload())
    if "skip_pool" in parts:
        copy = common.measure_copy_bandwidth(device, args.copy_bytes)
        config["copy_bandwidth_gbps"] = copy["gbps"]
        pool_rows = []
        for c, size in widths:
            for impl in SKIP_POOL_IMPLS:
                row = bench_skip_pool(impl, c, size, args, device, copy["gbps"])
                pool_rows.append(row)
                print(f"skip_pool C{c}@{size}px {impl:8s} " + (row.get("error") or
                      f"{row['median_ms']:8.3f} ms  {row['frac_copy_bw']:.2f} of copy bandwidth"), flush=True)
        common.add_ratios(pool_rows, {"eager": "eager"}, ("channels",))
        rows.extend(pool_rows)
        common.write_results(out, payload())
    if "step" in parts:
        g = torch.Generator(device="cpu").manual_seed(args.seed)
        shape = (args.batch, space.in_channels, space.resolution, space.resolution)
        batches = [(torch.randn(shape, generator=g).to(device, memory_format=common.memory_format(args)),
                    torch.randint(0, space.num_classes, (args.batch,), generator=g).to(device)) for _ in range(2)]
        peak, how = matmul_peak(device)
        config["step_floor"] = {"peak_flops": peak, "peak_method": how,
                                "flops": "torch.utils.flop_counter.FlopCounterMode over one step"}
        for row in bench_steps(modes, space, args, device, batches, peak):
            rows.append(row)
            print(f"step {row['mode']:12s} " + (row.get("error") or
                  f"{row['median_ms']:9.1f} ms  {row['step_gflop']:6.1f} GFLOP  "
                  f"{row['saved_activation_mib']:7.1f} MiB saved"), flush=True)
        ratios()
        common.write_results(out, payload())
    if "search" in parts:
        from stnas.benchmarks import NB201Table

        table = NB201Table.load(args.benchmark) if Path(args.benchmark).is_file() else None
        if table is None:
            print(f"search part: no table at {args.benchmark}: derived cells without table accuracy")
        config["search"] = {"space": "nb201-demo", "data": "built-in demo digits", "epochs": args.search_epochs,
                            "seeds": args.seeds, "methods": args.methods, "modes": args.search_modes,
                            "benchmark": str(args.benchmark) if table is not None else None}
        for method in [m for m in args.methods.split(",") if m]:
            for seed in [int(s) for s in args.seeds.split(",") if s]:
                for mode in [m for m in args.search_modes.split(",") if m]:
                    row = bench_search(method, mode, seed, args, device, table)
                    rows.append(row)
                    print(f"search {method} seed {seed} {mode}: " + (row.get("error") or
                          f"{row['derived']} {row.get('table')} ({row['wall_s']:.0f} s)"), flush=True)
                    common.write_results(out, payload())
    print()
    pool_rows = [r for r in rows if r["part"] == "skip_pool"]
    if pool_rows:
        common.table(pool_rows, [("channels", "C", ""), ("impl", "impl", ""), ("median_ms", "median ms", ".3f"),
                                 ("speedup_vs_eager", "x vs eager", ".2f"), ("gbps", "GB/s", ".1f"),
                                 ("frac_copy_bw", "of copy bw", ".2f")], id_keys=("channels", "impl"))
        print()
    main_rows = [r for r in rows if r["part"] in ("edge", "step")]
    if main_rows:
        columns = [("part", "part", ""), ("channels", "C", ""), ("mode", "mode", ""),
                   ("median_ms", "median ms", ".2f"), ("reps", "reps", ""),
                   ("speedup_vs_unmerged", "x vs unmerged", ".2f"), ("speedup_vs_plain", "x vs plain", ".2f"),
                   ("cpu_ms", "CPU ms", ".2f"), ("cpu_speedup_vs_unmerged", "CPU x", ".2f"),
                   ("step_gflop", "GFLOP", ".1f"), ("frac_of_floor", "of floor", ".2f"),
                   ("saved_activation_mib", "saved act MiB", ".1f"), ("memory_vs_unmerged", "mem vs unmerged", ".2f")]
        if device.type == "cuda":
            columns.append(("peak_memory_mib", "peak MiB", ".0f"))
        common.table(main_rows, columns, id_keys=("part", "mode"))
        print(f"memory: {MEMORY_METHOD}")
    if args.plot is not None:
        draw(rows, env, args.plot)
    print(f"wrote {out}")
    return payload()


def draw(rows: list[dict], env: dict, path: Path) -> None:
    from stnas.plots import plot_step_modes

    title = f"TopoNAS --simplify: one DrNAS search step per mode ({env.get('device_name', '?')})"
    if plot_step_modes([r for r in rows if r.get("part") == "step"], path, title):
        print(f"wrote {path}")
    else:
        print(f"--plot: no timed step rows to draw ({path} not written)")


def replot(results: Path, path: Path | None) -> dict:
    if path is None:
        raise SystemExit("bench_toponas: --replot needs --plot PATH (the PNG to write)")
    try:
        data = json.loads(Path(results).read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"bench_toponas: cannot read {results}: {exc}") from None
    draw(data.get("rows", []), data.get("environment", {}), path)
    return data


if __name__ == "__main__":
    main()
