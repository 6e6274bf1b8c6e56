"""GOLD-NAS search step as pruning proceeds: stnas's gated supernet (a pruned op is never called; its path
is masked in ``masked_path_sum``) against a plain PyTorch supernet that computes every op and multiplies
the pruned ones by zero (what a gate-times-mask implementation does).

The ops are pruned by hand, progressively (a random order fixed by the seed, the same for both), to
fractions of the gated ops; at each level: one search step (forward + backward of the loss, gates and
weights) in images/s, peak memory (CUDA: max allocated; CPU: the growth of the peak RSS, coarse), and
the MAdds of the architecture left, so that the step time can be compared with the MAdds left.

    python bench/bench_goldnas.py --device cpu --space darts-gold-demo --batch 32 --out /tmp/gold.json
"""
from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

common.ensure_stnas_importable()

import torch  # noqa: E402
from torch import nn  # noqa: E402


class PlainGatedNet(nn.Module):
    """The baseline: the same modules, every op computed, ``sigmoid(alpha) * mask`` as its weight (a
    pruned op costs its full compute and is multiplied by zero)."""

    def __init__(self, gated):
        super().__init__()
        self.g = gated

    def forward(self, x):
        from stnas.spaces.darts_cell import EDGES

        net = self.g
        w = torch.sigmoid(net.alpha) * net.mask
        s0 = s1 = net.stem(x)
        for c, cell in enumerate(net.cells):
            states = [cell.pre0(s0), cell.pre1(s1)]
            for dst in range(2, 6):
                total = None
                for e, (d, src) in enumerate(EDGES):
                    if d != dst:
                        continue
                    for o, op in enumerate(net.space.ops):
                        y = w[c, e, o] * cell.edges[f"{d}<-{src}"][op](states[src])
                        total = y if total is None else total + y
                states.append(total)
            s0, s1 = s1, torch.cat(states[2:], 1)
        return net.classifier(s1.mean((2, 3)))


def peak_bytes(device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(p)
    p.add_argument("--space", default="darts-gold-demo", help="a darts-gold space (default: darts-gold-demo)")
    p.add_argument("--batch", type=int, default=32, help="images per step (default: 32)")
    p.add_argument("--levels", default="0,25,50,75,90", help="percent of the gated ops pruned, in order")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.out is None:
        raise SystemExit("--out PATH is required (results are written only where you say)")
    device = common.resolve_common_args(args, cpu_reps=5, cuda_reps=30)
    from stnas.spaces import Space
    from stnas.supernet.gated import GatedCellNet

    torch.manual_seed(args.seed)
    space = Space.load(args.space)
    net = GatedCellNet(space).to(device)
    plain = PlainGatedNet(net)
    x = torch.randn(args.batch, space.in_channels, space.resolution, space.resolution, device=device)
    y = torch.randint(0, space.num_classes, (args.batch,), device=device)
    order = torch.randperm(net.mask.numel(), generator=torch.Generator().manual_seed(args.seed))
    loss_fn = nn.CrossEntropyLoss()

    def step(model):
        def run():
            net.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
        return run

    rows = []
    full_madds = space.cost(space.full()).madds - space.fixed_cost().madds
    for level in common.parse_int_list(args.levels):
        keep = torch.ones(net.mask.numel(), dtype=torch.bool)
        keep[order[: level * net.mask.numel() // 100]] = False
        net.prune_mask(keep.view_as(net.mask))
        arch = net.derive()
        madds = space.cost(arch).madds
        for impl, model in (("stnas", net), ("plain_zero", plain)):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            before = peak_bytes(device)
            stats = common.time_fn(step(model), warmup=args.warmup, reps=args.reps, device=device,
                                   max_seconds=args.max_seconds)
            rows.append({"impl": impl, "pruned_pct": level, "kept_ops": net.kept_count(), "madds_M": madds / 1e6,
                         "cell_madds_frac": (madds - space.fixed_cost().madds) / full_madds,
                         "median_ms": stats["median_s"] * 1e3, "img_per_s": args.batch / stats["median_s"],
                         "peak_MiB": (peak_bytes(device) - (0 if device.type == "cuda" else before)) / 2 ** 20,
                         "reps": stats["reps"]})
    common.add_ratios(rows, {"plain": "plain_zero"}, group_keys=("pruned_pct",))
    base = {r["impl"]: r["median_ms"] for r in rows if r["pruned_pct"] == rows[0]["pruned_pct"]}
    for r in rows:  # step time relative to the unpruned step, to set against the MAdds left
        r["time_frac"] = r["median_ms"] / base[r["impl"]]
        mf = r["madds_M"] / rows[0]["madds_M"]
        r["madds_frac"] = mf
    common.table(rows, [("impl", "impl", ""), ("pruned_pct", "pruned %", ""), ("kept_ops", "kept", ""),
                        ("madds_M", "MAdds M", ".3g"), ("madds_frac", "MAdds frac", ".3f"),
                        ("median_ms", "step ms", ".1f"), ("time_frac", "time frac", ".3f"),
                        ("img_per_s", "img/s", ".1f"), ("peak_MiB", "peak MiB", ".0f"),
                        ("speedup_vs_plain", "vs plain", ".2f")], id_keys=("pruned_pct",))
    common.write_results(args.out, {"benchmark": "goldnas_step", "space": space.name, "batch": args.batch,
                                    "environment": common.environment(device), "rows": rows,
                                    "note": "CPU peak memory is the growth of the process's peak RSS (coarse)"})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
