"""Search-step throughput and memory of a mixed (DARTS / DrNAS) NAS-Bench-201 supernet: stnas against the
plain-PyTorch supernet a user would otherwise write.

    python bench/bench_mixed_supernet.py [--device cpu|cuda] [--space nb201] [--batch 64] [--weighting dirichlet]
                                         [--impls plain,plain+compile,stnas] [--steps N] [--warmup W]
                                         [--memory-format channels_last|contiguous] [--out PATH]

One search step, as DARTS / DrNAS (first order) take it:
  architecture step  forward + backward on a validation batch, Adam on the architecture parameters
                     (lr 3e-4, betas (0.5, 0.999), weight decay 1e-3)
  weight step        forward + backward on a training batch, gradient clipping at norm 5, SGD on the
                     weights (lr 0.025, momentum 0.9, weight decay 3e-4)
on fixed random batches (``--batch`` images each, at the space's resolution, 32 px for nb201), fp32, every
implementation in ``--memory-format`` (default channels_last, what the searches run; batches and weights).

Implementations, on the same space (``--space``, nb201 = C16 N5 by default) and weighting:
  plain          bench/nb201_plain.py: nn.ModuleList of the 5 ops per edge, ``sum(w * op(x))`` at every edge
                 (AutoDL-Projects / NASLib style)
  plain+compile  torch.compile of the same supernet (its compilation is timed apart, in ``first_step_s``);
                 a failure to compile is a row with the error
  stnas          the step `stnas search --method drnas|darts` takes: DifferentiableTrainer.train_step on
                 stnas.supernet.mixed.MixedCellNet(space, weighting) (same optimisers and settings)
  stnas+compile  the same with the trainer's compile=True (torch.compile of the mixed supernet)
Per row: the median step time over --steps timed steps (common.time_fn) after --warmup, images/s (a step
counts 2 x batch images), the ratio to plain, peak memory, and the FLOP floor: the analytic MAdds of the
supernet's forward (every conv and linear layer of every candidate op, counted with hooks on the plain
supernet), x 2 FLOPs, x 3 for forward + backward, x 2 batches, over the measured matmul peak
(bench_supernet.measure_matmul_peak): the shortest step the convolutions allow, and the fraction of it
reached. Memory: on CUDA torch.cuda.max_memory_allocated over the timed steps (weights, optimiser
state and data included); on every device, the bytes of the tensors that autograd saves for backward
(torch.autograd.graph.saved_tensors_hooks, one count per storage, parameters excluded), the larger of the
step's two passes, measured on an extra, untimed step.
"""
from __future__ import annotations

import argparse
import gc
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn

try:
    from bench import common
except ImportError:  # run as `python bench/bench_mixed_supernet.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import common

common.ensure_stnas_importable()

from stnas.spaces import Space  # noqa: E402

try:
    from bench.nb201_plain import PlainDartsSupernet
except ImportError:
    from nb201_plain import PlainDartsSupernet

IMPLS = ("plain", "plain+compile", "stnas", "stnas+compile")
ARCH_LR, ARCH_BETAS, ARCH_WD = 3e-4, (0.5, 0.999), 1e-3
W_LR, W_MOMENTUM, W_WD, GRAD_CLIP = 0.025, 0.9, 3e-4, 5.0
SEARCH_STEPS = 100 * (25_000 // 64)  # the full DrNAS search on CIFAR-10, for the projection column
MEMORY_METHOD = ("saved_activation_mib: bytes of the tensors autograd saves for backward (saved_tensors_hooks, "
                 "one count per storage, parameters excluded), the larger of the step's two passes")
CUDA_MEMORY_METHOD = "peak_memory_mib: torch.cuda.max_memory_allocated over the timed steps"


def load_space(name: str, channels: int | None, cells_per_stage: int | None) -> Space:
    space = Space.load(name)
    if channels is None and cells_per_stage is None:
        return space
    data = space.to_dict()
    if channels is not None:
        data["skeleton"]["channels"] = channels
    if cells_per_stage is not None:
        data["skeleton"]["cells_per_stage"] = cells_per_stage
    return Space.from_dict(data)


def matmul_peak(device: torch.device) -> tuple[float, str]:
    """(FLOP/s, how): bench_supernet's matmul peak measurement."""
    try:
        from bench_supernet import measure_matmul_peak
    except Exception as exc:  # noqa: BLE001 - bench_supernet imports much of stnas; say why and go on
        return math.nan, f"unavailable: bench_supernet.measure_matmul_peak cannot be imported ({common.error_string(exc)})"
    how = ("bench_supernet.measure_matmul_peak: " + ("8192^3 bf16 matmul" if device.type == "cuda"
                                                    else "1024^3 fp32 matmul"))
    return measure_matmul_peak(device), how


def count_madds(model: nn.Module, space: Space, device: torch.device) -> int:
    """MAdds per image of one forward of ``model``: every Conv2d (out elements x cin/groups x kh x kw) and
    Linear (in x out) that runs, counted with forward hooks on a one-image batch."""
    total = [0]

    def hook(mod, inputs, out):
        if isinstance(mod, nn.Conv2d):
            kh, kw = mod.kernel_size
            total[0] += out[0].numel() * (mod.in_channels // mod.groups) * kh * kw
        else:
            total[0] += mod.in_features * mod.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.randn(1, space.in_channels, space.resolution, space.resolution, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total[0]


class SavedTensorMeter:
    """Bytes autograd saves for backward inside the ``with`` block: each storage counted once,
    parameters (and any other storages in ``exclude``) not counted."""

    def __init__(self, exclude: set[int]):
        self.exclude, self.seen = exclude, {}

    def _pack(self, t):
        try:
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr not in self.exclude and ptr not in self.seen:
                self.seen[ptr] = storage.nbytes()
        except Exception:  # noqa: BLE001 - a tensor without storage (fake, sparse): not counted
            pass
        return t

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)

    @property
    def nbytes(self) -> int:
        return sum(self.seen.values())


def build_model(impl: str, space: Space, weighting: str, device: torch.device) -> nn.Module:
    if impl in ("plain", "plain+compile"):
        return PlainDartsSupernet(space, weighting).to(device)
    if impl in ("stnas", "stnas+compile"):
        try:
            from stnas.supernet.mixed import MixedCellNet
        except ImportError as exc:
            raise RuntimeError(f"stnas.supernet.mixed.MixedCellNet cannot be imported ({common.error_string(exc)})") \
                from None
        return MixedCellNet(space, weighting=weighting).to(device)
    raise ValueError(f"unknown implementation {impl!r} (implementations: {', '.join(IMPLS)})")


class SearchStep:
    """One search step of ``model`` (architecture step on the validation batch, then weight step on the
    training batch); ``forward`` is the module or its compiled form."""

    def __init__(self, model: nn.Module, forward, batches):
        self.model, self.forward = model, forward
        (self.xt, self.yt), (self.xv, self.yv) = batches
        self.arch_params = list(model.arch_parameters())
        self.weight_params = list(model.weight_parameters())
        self.a_opt = torch.optim.Adam(self.arch_params, lr=ARCH_LR, betas=ARCH_BETAS, weight_decay=ARCH_WD)
        self.w_opt = torch.optim.SGD(self.weight_params, lr=W_LR, momentum=W_MOMENTUM, weight_decay=W_WD)
        self.loss_fn = nn.CrossEntropyLoss()

    def arch_step(self, meter=None):
        self.a_opt.zero_grad(set_to_none=True)
        loss = self._loss(self.xv, self.yv, meter)
        loss.backward()
        self.a_opt.step()

    def weight_step(self, meter=None):
        self.w_opt.zero_grad(set_to_none=True)
        loss = self._loss(self.xt, self.yt, meter)
        loss.backward()
        nn.utils.clip_grad_norm_(self.weight_params, GRAD_CLIP)
        self.w_opt.step()

    def _loss(self, x, y, meter):
        if meter is None:
            return self.loss_fn(self.forward(x), y)
        with meter:
            return self.loss_fn(self.forward(x), y)

    def __call__(self):
        self.arch_step()
        self.weight_step()

    def saved_bytes(self) -> int:
        """The larger of the two passes' saved-for-backward bytes, on one extra step."""
        exclude = {p.untyped_storage().data_ptr() for p in self.model.parameters()}
        exclude |= {b.untyped_storage().data_ptr() for b in self.model.buffers()}
        exclude |= {t.untyped_storage().data_ptr() for t in (self.xt, self.yt, self.xv, self.yv)}
        arch, weight = SavedTensorMeter(exclude), SavedTensorMeter(exclude)
        self.arch_step(arch)
        self.weight_step(weight)
        return max(arch.nbytes, weight.nbytes)


class TrainerStep(SearchStep):
    """stnas's search step: the DifferentiableTrainer's own arch_step and weight_step."""

    def __init__(self, model: nn.Module, batches, compile: bool):
        from stnas.train.differentiable import DifferentiableConfig, DifferentiableTrainer

        self.model = model
        (self.xt, self.yt), (self.xv, self.yv) = batches
        cfg = DifferentiableConfig(epochs=1, lr=W_LR, momentum=W_MOMENTUM, weight_decay=W_WD, grad_clip=GRAD_CLIP,
                                   arch_lr=ARCH_LR, arch_betas=ARCH_BETAS, arch_weight_decay=ARCH_WD)
        self.trainer = DifferentiableTrainer(model, lambda epoch: iter(()), 1, cfg, progress=False,
                                             compile=compile)

    def arch_step(self, meter=None):
        if meter is None:
            return self.trainer.arch_step(self.xv, self.yv)
        with meter:
            return self.trainer.arch_step(self.xv, self.yv)

    def weight_step(self, meter=None):
        if meter is None:
            return self.trainer.weight_step(self.xt, self.yt)
        with meter:
            return self.trainer.weight_step(self.xt, self.yt)

    def __call__(self):
        self.trainer.train_step(((self.xt, self.yt), (self.xv, self.yv)))


def run_one(impl: str, args, space: Space, device: torch.device, batches, floor_flops: float, peak: float) -> dict:
    row: dict = {"impl": impl, "weighting": args.weighting}
    t_row = time.perf_counter()
    try:
        torch.manual_seed(0)
        if impl.endswith("+compile"):
            torch._dynamo.reset()
        model = build_model(impl, space, args.weighting, device).to(memory_format=common.memory_format(args))
        model.train()
        row["weight_params"] = sum(p.numel() for p in model.weight_parameters())
        row["arch_params"] = sum(p.numel() for p in model.arch_parameters())
        forward = torch.compile(model) if impl == "plain+compile" else model
        if impl.startswith("stnas"):
            step = TrainerStep(model, batches, compile=impl == "stnas+compile")
        else:
            step = SearchStep(model, forward, batches)
        t0 = time.perf_counter()
        step()  # the first step: torch.compile compiles here
        common.synchronize(device)
        row["first_step_s"] = time.perf_counter() - t0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        stats = common.time_fn(step, args.warmup, args.reps, device=device, max_seconds=args.max_seconds)
        if device.type == "cuda":
            row["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
        median = stats["median_s"]
        row.update({"median_ms": median * 1e3, "min_ms": stats["min_s"] * 1e3, "p10_ms": stats["p10_s"] * 1e3,
                    "p90_ms": stats["p90_s"] * 1e3, "steps": stats["reps"],
                    "images_per_s": 2 * args.batch / median,
                    # A projection, not a measurement: DrNAS's 100 epochs on CIFAR-10 are 100 x 390 such steps
                    # (25,000 training images per half, batch 64), data loading and epoch outputs left out.
                    "projected_100_epoch_search_min": median * SEARCH_STEPS / 60,
                    "floor_gflops_per_s": floor_flops / median / 1e9,
                    "floor_ms": floor_flops / peak * 1e3 if peak == peak else None,
                    "of_peak": floor_flops / peak / median if peak == peak else None})
        try:
            row["saved_activation_mib"] = step.saved_bytes() / 2 ** 20
        except Exception as exc:  # noqa: BLE001 - e.g. hooks refused by a compiled graph
            row["saved_activation_error"] = common.error_string(exc)
        if impl.endswith("+compile"):
            from torch._dynamo.utils import counters

            row["dynamo_unique_graphs"] = int(counters["stats"]["unique_graphs"])
            row["dynamo_graph_breaks"] = int(sum(counters["graph_break"].values()))
        del step, forward, model
    except Exception as exc:  # noqa: BLE001 - a failing implementation is a row with its error, never a crash
        row["error"] = common.error_string(exc)
    row["wall_s"] = time.perf_counter() - t_row
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser)
    parser.add_argument("--space", default="nb201", help="a cell space: built-in name or file (default nb201)")
    parser.add_argument("--channels", type=int, default=None, help="override the space's C (skeleton.channels)")
    parser.add_argument("--cells-per-stage", type=int, default=None, help="override the space's N")
    parser.add_argument("--batch", type=int, default=64, help="images per batch; a step takes two (default 64)")
    parser.add_argument("--weighting", choices=("softmax", "dirichlet"), default="dirichlet",
                        help="edge weights of every implementation: softmax (DARTS) or Dirichlet (DrNAS); "
                             "default dirichlet")
    parser.add_argument("--impls", default=None,
                        help=f"comma list of {', '.join(IMPLS)} (default: all on cuda; plain,stnas on cpu, where "
                             "torch.compile of the plain supernet alone takes minutes)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed search steps per implementation (same as --reps; default 5 on cpu, 50 on "
                             "cuda); when given, --max-seconds no longer cuts the timing short unless also given")
    parser.add_argument("--seed", type=int, default=0)
    common.add_memory_format_arg(parser, "every implementation")
    args = parser.parse_args(argv)
    cap_given = args.max_seconds is not None
    device = common.resolve_common_args(args, cpu_reps=5, cuda_reps=50)
    if args.steps is not None:
        args.reps = args.steps
        if not cap_given:
            args.max_seconds = None
    impls = [i for i in (args.impls or (",".join(IMPLS) if device.type == "cuda" else "plain,stnas")).split(",") if i]
    unknown = [i for i in impls if i not in IMPLS]
    if unknown:
        raise SystemExit(f"bench_mixed_supernet: unknown implementation(s) {unknown} (choose from {', '.join(IMPLS)})")
    space = load_space(args.space, args.channels, args.cells_per_stage)
    if space.kind != "cell":
        raise SystemExit(f"bench_mixed_supernet: --space {args.space} is a {space.kind!r} space; a mixed supernet "
                         "takes a cell space (nb201)")
    out = Path(args.out) if args.out else common.default_out("mixed_supernet", device)

    env = common.environment(device)
    print(f"# mixed supernet search step on {env['device_name']} | torch {env['torch']} | "
          f"threads {torch.get_num_threads()}")
    g = torch.Generator(device="cpu").manual_seed(args.seed)
    shape = (args.batch, space.in_channels, space.resolution, space.resolution)
    batches = [(torch.randn(shape, generator=g).to(device, memory_format=common.memory_format(args)),
                torch.randint(0, space.num_classes, (args.batch,), generator=g).to(device)) for _ in range(2)]
    torch.manual_seed(args.seed)
    madds = count_madds(PlainDartsSupernet(space, args.weighting).to(device), space, device)
    floor_flops = 2 * madds * 3 * 2 * args.batch  # 2 FLOPs per MAdd, fwd + bwd, 2 batches
    peak, peak_how = matmul_peak(device)
    print(f"space {space.name}: C={space.channels} N={space.cells_per_stage}, {space.resolution}px, batch "
          f"{args.batch} x 2, weighting {args.weighting}; supernet forward {madds / 1e6:.1f} M MAdds/image, "
          f"FLOP floor {floor_flops / 1e9:.2f} GFLOP/step; matmul peak "
          f"{peak / 1e9:.1f} GFLOP/s ({peak_how})")

    config = {"space": space.to_dict(), "batch": args.batch, "images_per_step": 2 * args.batch,
              "weighting": args.weighting, "impls": impls, "steps": args.reps, "warmup": args.warmup,
              "max_seconds": args.max_seconds, "threads": torch.get_num_threads(), "seed": args.seed,
              "arch_optimizer": {"name": "Adam", "lr": ARCH_LR, "betas": list(ARCH_BETAS), "weight_decay": ARCH_WD},
              "weight_optimizer": {"name": "SGD", "lr": W_LR, "momentum": W_MOMENTUM, "weight_decay": W_WD,
                                   "grad_clip": GRAD_CLIP},
              "dtype": "fp32", "memory_format": args.memory_format}
    memory = {"saved_activation_mib": MEMORY_METHOD}
    if device.type == "cuda":
        memory["peak_memory_mib"] = CUDA_MEMORY_METHOD
    rows: list[dict] = []

    def payload() -> dict:
        return {"benchmark": "mixed_supernet", "environment": env, "config": config,
                "madds_per_image": madds, "floor_flops_per_step": floor_flops, "matmul_peak_flops": peak,
                "matmul_peak_how": peak_how, "memory_methods": memory, "rows": rows}

    for impl in impls:
        print(f"{impl:14s} ...", end="", flush=True)
        row = run_one(impl, args, space, device, batches, floor_flops, peak)
        if "error" in row:
            print(f" failed: {row['error']}")
        else:
            print(f" {row['median_ms']:9.1f} ms/step  {row['images_per_s']:8.1f} img/s  (first step "
                  f"{row['first_step_s']:.1f} s)")
        rows.append(row)
        common.add_ratios(rows, {"plain": "plain"})
        plain = next((r for r in rows if r["impl"] == "plain" and "saved_activation_mib" in r), None)
        for r in rows:
            if plain is not None and "saved_activation_mib" in r:
                r["memory_vs_plain"] = r["saved_activation_mib"] / plain["saved_activation_mib"]
        common.write_results(out, payload())  # after every row: a run stopped part-way keeps its rows

    columns = [("impl", "impl", ""), ("median_ms", "median ms", ".1f"), ("steps", "steps", ""),
               ("images_per_s", "img/s", ".1f"), ("speedup_vs_plain", "x vs plain", ".2f"),
               ("saved_activation_mib", "saved act MiB", ".0f"), ("memory_vs_plain", "mem vs plain", ".2f"),
               ("floor_gflops_per_s", "floor GFLOP/s", ".3g"), ("of_peak", "of peak", ".1%"),
               ("first_step_s", "first step s", ".1f"),
               ("projected_100_epoch_search_min", "100-epoch search min (projected)", ".1f")]
    if device.type == "cuda":
        columns.insert(7, ("peak_memory_mib", "peak MiB", ".0f"))
    print()
    common.table(rows, columns, id_keys=("weighting",))
    print(f"memory: {MEMORY_METHOD}" + (f"; {CUDA_MEMORY_METHOD}" if device.type == "cuda" else ""))
    print(f"wrote {out}")
    return payload()


if __name__ == "__main__":
    main()
