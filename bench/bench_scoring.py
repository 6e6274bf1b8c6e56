"""Scoring throughput: BN recalibration + held-out accuracy of many architectures of a single-path
supernet, stnas against the way a user of plain PyTorch scores them.

    python bench/bench_scoring.py --out PATH [--device cuda|cpu] [--space demo] [--resolution 32]
                                  [--batch 64] [--recal-batches 4] [--eval-images 2000] [--archs 12]

Implementations, each scoring the same architectures on the same fixed batches (one snapshot):
  spos          the baseline, SPOS's recipe as its code writes it, on bench/spos_baseline.py's supernet: per
                architecture, reset every BatchNorm (cumulative average), run the recalibration batches in
                training mode without gradients, then the held-out batches in eval mode; channels_last,
                plus bf16 autocast on a GPU (the strong baseline of bench_supernet.py)
  stnas_alone   stnas's evaluator (stnas.evaluate.snapshot.SnapshotEvaluator) with share=False: every
                architecture on its own, with the fused BatchNorm + activation
  stnas         the same with the stage prefixes the architectures share computed once
                (stnas.evaluate.prefix), as `stnas search` scores
Architecture sets: random (independent samples of the space) and evolution (one generation of
children of the search's evolution: mutations and crossovers of its parents, which is what a search
scores after its first generation).

Per row: architectures/s (median of --reps calls after --warmup), the MAdds a call runs (counted with
hooks on every convolution and linear layer), the FLOP floor of that work at a measured matmul peak and
the fraction of it reached, the work of the baseline's scoring over the row's (what sharing saves), and
the ratio to the baseline measured in the same run.
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, table, time_fn, write_results  # noqa: E402
from bench_supernet import measure_matmul_peak, space_at  # noqa: E402
from spos_baseline import SposSupernet  # noqa: E402

from stnas.evaluate.snapshot import SnapshotEvaluator  # noqa: E402
from stnas.spaces import Space  # noqa: E402
from stnas.strategies.evolution import EvolutionConfig, evolve  # noqa: E402
from stnas.supernet import SuperNet  # noqa: E402

IMPLS = ("spos", "stnas_alone", "stnas")


def arch_sets(space: Space, n: int, seed: int = 0) -> dict[str, list]:
    """``random``: n samples; ``evolution``: the n architectures the search's evolution scores in its
    second generation (the first scored at random; every architecture new, as the search scores them)."""
    rng = random.Random(seed)
    calls: list[list] = []

    def score(archs):
        calls.append(list(archs))
        return [random.Random(a.to_json()).random() for a in archs]

    evolve(space, score, EvolutionConfig(population=n, generations=1, parents=max(2, n // 3), seed=seed))
    return {"random": [space.sample(rng) for _ in range(n)], "evolution": calls[1]}


def spos_scores(net: nn.Module, archs, recal, evals, amp: bool, device) -> list[float]:
    """SPOS's scoring loop, per architecture."""
    accs = []
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        for arch in archs:
            for m in net.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.reset_running_stats()
                    m.momentum = None
            net.train()
            for x in recal:
                net(x, arch)
            net.eval()
            correct, seen = 0, 0
            for x, y in evals:
                correct += (net(x, arch).argmax(1) == y).sum()
                seen += y.numel()
            accs.append(int(correct) / seen)
    return accs


class Impl:
    def __init__(self, impl: str, space: Space, device: torch.device):
        self.impl, self.device = impl, device
        self.amp = device.type == "cuda"
        torch.manual_seed(0)
        self.net = (SposSupernet(space) if impl == "spos" else SuperNet(space)).to(device)
        self.net = self.net.to(memory_format=torch.channels_last)

    def score(self, archs, recal, evals):
        if self.impl == "spos":
            return spos_scores(self.net, archs, recal, evals, self.amp, self.device)
        ev = SnapshotEvaluator(self.net, [self.net.state_dict()], recal, evals, progress=False, amp=self.amp,
                               share=self.impl == "stnas")
        return ev.score_many(archs)

    def madds_per_image(self, archs, space: Space) -> float:
        """MAdds a call runs per image (of the recalibration and held-out sets alike), counted on 2-image
        batches with hooks on every convolution and linear layer."""
        total = [0]

        def count(m, inputs, out):
            if isinstance(m, nn.Conv2d):
                total[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
            else:
                total[0] += out.numel() * m.in_features
        hooks = [m.register_forward_hook(count) for m in self.net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        try:
            x = torch.randn(2, 3, space.resolution, space.resolution, device=self.device)
            self.score(archs, [x], [(x, torch.zeros(2, dtype=torch.long, device=self.device))])
        finally:
            for h in hooks:
                h.remove()
        return total[0] / 2 / 2  # two batches of two images


def data(space: Space, args, device):
    g = torch.Generator().manual_seed(0)

    def images(n):
        x = torch.randn(n, 3, space.resolution, space.resolution, generator=g)
        return x.to(device).contiguous(memory_format=torch.channels_last)
    recal = [images(args.batch) for _ in range(args.recal_batches)]
    evals = []
    for start in range(0, args.eval_images, args.batch):
        n = min(args.batch, args.eval_images - start)
        evals.append((images(n), torch.randint(0, space.num_classes, (n,), generator=g).to(device)))
    return recal, evals


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="JSON output path")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--space", default=None, help="chain space (default: demo on the CPU, tas on a GPU)")
    p.add_argument("--resolution", type=int, default=None, help="input size (default: the space's; 224 on a GPU)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: 64 on the CPU, 256 on a GPU, "
                                                             "as `stnas search`)")
    p.add_argument("--recal-batches", type=int, default=4, help="BN recalibration batches (default: 4, as "
                                                                 "`stnas search`)")
    p.add_argument("--eval-images", type=int, default=None,
                   help="held-out images (default: 2000 on the CPU as the demo search; 2560 on a GPU)")
    p.add_argument("--archs", type=int, default=None, help="architectures per call (default: 12 on the CPU, "
                                                           "as the demo's population; 20 on a GPU)")
    p.add_argument("--sets", default="random,evolution", help="architecture sets (default: random,evolution)")
    p.add_argument("--impls", default=",".join(IMPLS), help=f"implementations (default: {','.join(IMPLS)})")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per row (default: 1)")
    p.add_argument("--reps", type=int, default=3, help="timed calls per row (default: 3)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_scoring: --device cuda but CUDA is not available")
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    name = args.space or ("tas" if gpu else "demo")
    args.resolution = args.resolution or (224 if gpu else Space.load(name).resolution)
    args.batch = args.batch or (256 if gpu else 64)
    args.eval_images = args.eval_images or (2560 if gpu else 2000)
    args.archs = args.archs or (20 if gpu else 12)
    space = space_at(name, args.resolution)
    recal, evals = data(space, args, device)
    images = sum(x.shape[0] for x in recal) + sum(y.numel() for _, y in evals)
    sets = arch_sets(space, args.archs)
    peak = measure_matmul_peak(device)
    config = {k: v for k, v in vars(args).items() if k != "out"} | {"space": name, "images_per_arch": images}
    rows: list[dict] = []

    def save():  # after every row: a run stopped part-way keeps what it measured
        write_results(args.out, {"benchmark": "scoring", "environment": environment(device), "config": config,
                                 "matmul_peak_flops": peak, "rows": rows})
    for set_name in args.sets.split(","):
        archs = sets[set_name]
        for impl in args.impls.split(","):
            row = {"impl": impl, "set": set_name, "archs": len(archs)}
            try:
                runner = Impl(impl, space, device)
                stats = time_fn(lambda: runner.score(archs, recal, evals), warmup=args.warmup, reps=args.reps,
                                device=device, max_seconds=None)
                madds = runner.madds_per_image(archs, space) * images
                floor_s = 2 * madds / peak
                row |= {"median_s": stats["median_s"], "min_s": stats["min_s"], "reps": stats["reps"],
                        "archs_per_s": len(archs) / stats["median_s"], "madds": madds, "floor_s": floor_s,
                        "of_floor": floor_s / stats["median_s"]}
            except Exception as e:  # a failing implementation is a row with its error, never a silent skip
                row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            rows.append(row)
            save()
        base = next((r for r in rows if r["set"] == set_name and r["impl"] == "spos" and "median_s" in r), None)
        for r in rows:
            if r["set"] == set_name and base and "median_s" in r:
                r["speedup_vs_spos"] = base["median_s"] / r["median_s"]
                r["baseline_work_ratio"] = base["madds"] / r["madds"]
        save()
    table(rows, [("impl", "impl", ""), ("set", "set", ""), ("archs_per_s", "archs/s", ".3g"),
                 ("median_s", "median s", ".3g"), ("of_floor", "of FLOP floor", ".2f"),
                 ("baseline_work_ratio", "spos work / work", ".2f"), ("speedup_vs_spos", "x spos", ".2f")],
          id_keys=("set",))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
