"""The ``stnas`` command.

    stnas search [--space tas|tas-wide|demo|FILE] [--data DIR] [--budget-madds 320M ...] [--optimizer sgld|sgd]
                 [--seed 0] [--out DIR] [--resume]
    stnas space info [--space ...]
    stnas evaluate --checkpoint OUT/supernet.ckpt --archs ARCHS.json [--data DIR] [--csv FILE]
    stnas export --checkpoint OUT/supernet.ckpt --arch ARCH.json [--data DIR] --out MODEL.pt
    stnas retrain ARCH.json [--space ...] [--data DIR] [--epochs N] [--out DIR] [--resume]

With no ``--data`` every command uses the built-in demo dataset (written once to the cache folder) and,
for ``search``, the small ``demo`` space; a full demo search takes a few minutes on two CPU cores.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

log = logging.getLogger("stnas")

_UNITS = {"": 1, "k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6, "g": 1e9, "G": 1e9}


def parse_count(text: str) -> float:
    """'320M', '3.2e8', '0.32G' -> a number."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgG]?)\s*", str(text))
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (examples: 320M, 3.2e8, 0.32G)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _add_data_args(p, batch_default=None):
    p.add_argument("--data", type=Path, default=None,
                   help="ImageFolder root with train/<class>/* and val/<class>/* (default: the built-in demo dataset)")
    p.add_argument("--batch-size", type=int, default=batch_default, help="images per batch (default: by space)")
    p.add_argument("--loader", choices=["auto", "dali", "pil"], default="auto",
                   help="data pipeline: DALI when it is installed (default), or the PIL fallback")
    p.add_argument("--threads", type=int, default=None, help="decoding threads (default: all cores)")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when available)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="bf16: autocast with fp32 master weights; auto (default): bf16 on CUDA, fp32 on the CPU")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stnas", description="One-shot NAS at hardware speed (ST-NAS).")
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("search", help="train the SGLD supernet proxy and evolve architectures under a budget")
    s.add_argument("--space", default=None, help="built-in space name (tas, tas-wide, demo, mobilenetv2) or a YAML/JSON file "
                   "(default: demo without --data, tas with it)")
    _add_data_args(s)
    s.add_argument("--budget-madds", type=parse_count, nargs="+", default=None,
                   help="MAdds budget(s), e.g. 320M 500M (default: the middle of the space's range)")
    s.add_argument("--budget-params", type=parse_count, default=None, help="optional parameter budget, e.g. 5.5M")
    s.add_argument("--optimizer", choices=["sgld", "sgd"], default="sgld",
                   help="shared-weight sampler: SGLD (ST-NAS) or plain SGD (the baseline)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", type=Path, default=Path("stnas-search"), help="output folder (default: ./stnas-search)")
    s.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    g = s.add_argument_group("supernet schedule (defaults: by space)")
    g.add_argument("--burn-in", type=int, default=None, help="steps before the first snapshot")
    g.add_argument("--snapshots", type=int, default=None, help="K, snapshots of the shared weights")
    g.add_argument("--snapshot-every", type=int, default=None, help="steps between snapshots")
    g.add_argument("--lr", type=float, default=None)
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--weight-decay", type=float, default=None)
    g.add_argument("--temperature", type=float, default=None, help="SGLD temperature T (noise sqrt(2 lr T / N))")
    g.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
    e = s.add_argument_group("evolution")
    e.add_argument("--population", type=int, default=None)
    e.add_argument("--generations", type=int, default=None)
    e.add_argument("--eval-images", type=int, default=None,
                   help="held-out images per score, kept on the device (default: all of val/ for small spaces, "
                        "10000 for ImageNet-scale ones)")
    e.add_argument("--stability", choices=["run", "full"], default="run",
                   help="run: across this run's snapshots; full: also train SGLD and SGD with two seeds")

    sp = sub.add_parser("space", help="search spaces")
    spsub = sp.add_subparsers(dest="space_command", required=True)
    info = spsub.add_parser("info", help="print a space's size and MAdds range as JSON")
    info.add_argument("--space", default="tas", help="built-in name or file (default: tas)")

    ev = sub.add_parser("evaluate", help="score architectures with a trained supernet (CSV)")
    ev.add_argument("--checkpoint", type=Path, required=True, help="supernet.ckpt of a search")
    ev.add_argument("--archs", type=Path, required=True,
                    help="JSON file: an architecture, a list of them, or an exported best_*.json")
    _add_data_args(ev)
    ev.add_argument("--csv", type=Path, default=None, help="output CSV (default: next to --archs)")

    ex = sub.add_parser("export", help="a standalone model of one architecture with the supernet's weights")
    ex.add_argument("--checkpoint", type=Path, required=True, help="supernet.ckpt of a search")
    ex.add_argument("--arch", type=Path, required=True, help="architecture JSON (e.g. best_*.json)")
    _add_data_args(ex)
    ex.add_argument("--out", type=Path, required=True, help="model file to write (.pt, safe to load)")

    rt = sub.add_parser("retrain", help="train an architecture's standalone model from scratch")
    rt.add_argument("arch", type=Path, help="architecture JSON (e.g. best_*.json)")
    rt.add_argument("--space", default=None, help="space of the architecture (default: the one named in the file)")
    _add_data_args(rt)
    rt.add_argument("--epochs", type=int, default=None)
    rt.add_argument("--lr", type=float, default=None)
    rt.add_argument("--weight-decay", type=float, default=None)
    rt.add_argument("--seed", type=int, default=0)
    rt.add_argument("--out", type=Path, default=Path("stnas-retrain"))
    rt.add_argument("--resume", action="store_true")
    return parser


# Per-space defaults: the demo must finish within minutes on 2 CPU cores; ImageNet-scale spaces get
# SPOS-like settings.
# ImageNet: the held-out images are decoded once and kept on the GPU so that scoring never waits for
# JPEG decoding; 10,000 of them at 224 px take 3 GB in bf16 (all 50,000 of a SPOS-style split would take
# 15 GB), and a 1% accuracy difference is then 100 images.
_DEMO = dict(batch_size=64, burn_in=330, snapshots=3, snapshot_every=44, lr=0.1, weight_decay=5e-4,
             temperature=1e-2, population=12, generations=4, epochs=15, eval_images=None)
_IMAGENET = dict(batch_size=256, burn_in=50000, snapshots=5, snapshot_every=2000, lr=0.1, weight_decay=4e-5,
                 temperature=1e-3, population=50, generations=20, epochs=120, eval_images=10_000)


def _defaults(space) -> dict:
    return _DEMO if space.resolution <= 64 else _IMAGENET


def _init_distributed(device_name: str | None) -> tuple[int, int]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): NCCL when the run trains on
    GPUs, gloo on CPUs (``--device cpu`` on a GPU machine too). Multi-node runs use torchrun's rendezvous
    (--nnodes, --rdzv-endpoint); nothing here changes."""
    import os

    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or dist.is_initialized():
        return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    dev = _device(device_name)
    if dev.type == "cuda":
        gpus = torch.cuda.device_count()
        if dev.index >= gpus:  # NCCL needs one GPU per process; two ranks on one GPU would fail in NCCL
            raise ValueError(f"torchrun started local rank {dev.index} but this machine has {gpus} GPU(s): use "
                             f"--nproc_per_node={gpus}, or --device cpu to train on the CPU (gloo)")
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _device(name):
    import os

    import torch

    local = int(os.environ.get("LOCAL_RANK", "0"))  # under torchrun: this process's GPU
    if name is None:
        return torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local)
    return dev


def _amp(args) -> bool | None:
    """--precision as the amp switch of the search (None: decide by device)."""
    return {"auto": None, "bf16": True, "fp32": False}[args.precision]


def _data_root(args) -> Path:
    from stnas.data import demo_dataset

    if args.data is not None:
        return args.data
    log.info("no --data: using the built-in demo dataset")
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_world_size() > 1:  # rank 0 writes it, the others wait
        if dist.get_rank() == 0:
            demo_dataset()
        dist.barrier()
    return demo_dataset()


def _search_data(args, space, batch_size, seed=0, eval_images=None):
    import torch

    from stnas.search.data import SearchData
    from stnas.search.proxy import _rank_world, use_amp

    dev = _device(args.device)
    # Under bf16 autocast the convolutions read bf16 anyway: keeping the batches in bf16 halves the memory
    # of the held-out set on the device and the bytes of every training batch.
    dtype = torch.bfloat16 if use_amp(dev, _amp(args)) else torch.float32
    rank, world = _rank_world()
    data = SearchData(_data_root(args), space.resolution, batch_size, seed=seed, eval_images=eval_images,
                      shard_id=rank, num_shards=world,
                      channels_last=dev.type == "cuda", dtype=dtype, backend=args.loader, num_threads=args.threads,
                      device=dev if dev.type == "cuda" else None)
    if data.num_classes != space.num_classes:
        raise ValueError(f"the data has {data.num_classes} classes but space {space.name!r} classifies into "
                         f"{space.num_classes}; use a space file with num_classes: {data.num_classes}")
    return data, dev


def _search_data_of_run(args, space, ck):
    """The data settings of the search that wrote checkpoint ``ck`` (the batch size and the images
    behind BN recalibration change scores), unless overridden."""
    run = ck.get("config", {}).get("data", {})
    batch = args.batch_size or run.get("batch_size") or _defaults(space)["batch_size"]
    return _search_data(args, space, batch, seed=run.get("seed", 0), eval_images=run.get("eval_images"))


def _setup_logging(out: Path | None, name: str) -> None:
    import os

    if int(os.environ.get("RANK", "0")) != 0:  # one log per run, from rank 0
        logging.basicConfig(level=logging.WARNING, force=True)
        return
    handlers = [logging.StreamHandler(sys.stderr)]
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(out / name))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=handlers, force=True)


def cmd_search(args) -> int:
    from stnas.search.evolution import EvolutionConfig
    from stnas.search.proxy import ProxyConfig
    from stnas.search.stnas import SearchConfig, run_search
    from stnas.spaces import Space

    _setup_logging(args.out, "search.log")
    rank, world = _init_distributed(args.device)
    space = Space.load(args.space or ("demo" if args.data is None else "tas"))
    d = _defaults(space)

    def pick(value, key):
        return d[key] if value is None else value

    proxy = ProxyConfig(optimizer=args.optimizer, burn_in=pick(args.burn_in, "burn_in"),
                        snapshots=pick(args.snapshots, "snapshots"),
                        snapshot_every=pick(args.snapshot_every, "snapshot_every"), lr=pick(args.lr, "lr"),
                        momentum=args.momentum, weight_decay=pick(args.weight_decay, "weight_decay"),
                        temperature=pick(args.temperature, "temperature") if args.optimizer == "sgld" else 0.0,
                        seed=args.seed, checkpoint_every=args.checkpoint_every)
    evo = EvolutionConfig(population=pick(args.population, "population"),
                          generations=pick(args.generations, "generations"),
                          parents=max(1, pick(args.population, "population") // 2), seed=args.seed)
    for b in args.budget_madds or []:
        space.check_budget(b, args.budget_params)
    data, dev = _search_data(args, space, pick(args.batch_size, "batch_size"), seed=args.seed,
                             eval_images=pick(args.eval_images, "eval_images"))
    log.info("space %s: %d stem edges, %d branch edges, %.3g architectures; data %s (%d train images, %s loader); "
             "device %s", space.name, len(space.stem_edges), len(space.branch_edges), space.count_architectures(),
             data.root, data.train_size, data.backend_used, dev)
    cfg = SearchConfig(proxy=proxy, evolution=evo, budgets_madds=list(args.budget_madds or []),
                       budget_params=args.budget_params, stability=args.stability, amp=_amp(args))
    summary = run_search(space, data, cfg, args.out, resume=args.resume, device=dev, progress=not args.no_progress)
    if rank != 0:
        return 0
    for name, entry in summary["best"].items():
        print(f"best under {name} MAdds: score {entry['score']:.4f}, {entry['madds'] / 1e6:.2f}M MAdds, "
              f"{entry['params'] / 1e6:.3f}M params -> {args.out / ('best_' + name + '.json')}")
    print(f"outputs in {args.out}: scores.csv, pareto.csv, pareto.png, stability.json, search.log")
    return 0


def _load_archs(path: Path, space):
    from stnas.spaces import Arch, SpaceError, read_arch_json

    data = read_arch_json(path, what="--archs")
    items = data if isinstance(data, list) else [data]
    archs = []
    for k, item in enumerate(items):
        try:
            archs.append(space.validate(Arch.from_dict(item)))
        except SpaceError as e:
            raise SpaceError(f"--archs {path}, entry {k}: {e}") from None
    return archs


def _space_of_checkpoint(path: Path):
    from stnas.search.checkpoint import load_checkpoint
    from stnas.spaces import Space

    ck = load_checkpoint(path, kind="supernet")
    return Space.from_dict(ck["space"], source=str(path)), ck


def cmd_evaluate(args) -> int:
    import csv
    import statistics

    from stnas.search.stnas import score_archs

    _setup_logging(None, "")
    space, ck = _space_of_checkpoint(args.checkpoint)
    archs = _load_archs(args.archs, space)
    data, dev = _search_data_of_run(args, space, ck)
    accs = score_archs(args.checkpoint, archs, data, dev, progress=not args.no_progress, amp=_amp(args))
    out = args.csv or args.archs.with_suffix(".scores.csv")
    with out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["score", "madds", "params", "snapshot_accuracies", "arch"])
        for a, acc in zip(archs, accs):
            madds, params = space.cost(a)
            w.writerow([f"{statistics.fmean(acc):.6f}", madds, params, json.dumps(acc), a.to_json()])
    print(f"scored {len(archs)} architecture(s) over {len(accs[0])} snapshots -> {out}")
    return 0


def cmd_export(args) -> int:
    from stnas.search.checkpoint import save_checkpoint
    from stnas.spaces import Arch
    from stnas.supernet import SuperNet, build, recalibrate_bn

    _setup_logging(None, "")
    space, ck = _space_of_checkpoint(args.checkpoint)
    arch = space.validate(Arch.load(args.arch))
    data, dev = _search_data_of_run(args, space, ck)
    net = SuperNet(space)
    net.load_state_dict(ck["snapshots"][-1] if ck["snapshots"] else ck["model"])
    model = build(arch, space).inherit(net)
    recalibrate_bn(model, None, [x.float() for x in data.recal_batches("cpu")])  # the model is fp32, on the CPU
    madds, params = space.cost(arch)
    save_checkpoint(args.out, {"space": space.to_dict(), "arch": arch.to_dict(), "model": model.state_dict(),
                               "madds": madds, "params": params}, kind="model")
    print(f"wrote {args.out}: {space.name} architecture, {madds / 1e6:.2f}M MAdds, {params / 1e6:.3f}M params, "
          f"weights from the supernet's last snapshot with BN recalibrated")
    return 0


def cmd_retrain(args) -> int:
    from stnas.search.retrain import RetrainConfig, retrain
    from stnas.spaces import Arch, Space, read_arch_json

    raw = read_arch_json(args.arch)  # before the output folder exists: a wrong path leaves nothing behind
    _setup_logging(args.out, "retrain.log")
    name = args.space or (raw.get("space") if isinstance(raw, dict) else None) or "demo"
    space = Space.load(name)
    arch = space.validate(Arch.from_dict(raw))
    d = _defaults(space)
    cfg = RetrainConfig(epochs=args.epochs or d["epochs"], lr=args.lr or d["lr"],
                        weight_decay=args.weight_decay if args.weight_decay is not None else d["weight_decay"],
                        seed=args.seed)
    dev = _device(args.device)
    result = retrain(space, arch, _data_root(args), cfg, args.out, batch_size=args.batch_size or d["batch_size"],
                     device=dev, resume=args.resume, loader=args.loader, threads=args.threads,
                     progress=not args.no_progress, amp=_amp(args))
    print(f"retrained {space.name} architecture: val top-1 {100 * result['val_top1']:.2f}% after {cfg.epochs} "
          f"epochs -> {args.out}")
    return 0


def cmd_space_info(args) -> int:
    from stnas.spaces import Space

    print(json.dumps(Space.load(args.space).info(), indent=2))
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from stnas.search.checkpoint import CheckpointError
    from stnas.spaces import SpaceError

    try:
        from stnas.data import DataError
    except ImportError:  # pragma: no cover - the data package is part of stnas
        DataError = SpaceError
    handlers = {"search": cmd_search, "evaluate": cmd_evaluate, "export": cmd_export, "retrain": cmd_retrain,
                "space": cmd_space_info}
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("\nstnas: interrupted; the checkpoint is saved, continue with the same command and --resume",
              file=sys.stderr)
        return 130
    except (SpaceError, CheckpointError, DataError, FileExistsError, FloatingPointError, ValueError) as e:
        print(f"stnas {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
