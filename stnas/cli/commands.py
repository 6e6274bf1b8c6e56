"""The handlers of the ``stnas`` subcommands: each reads its arguments, checks them before any long
work, and hands over to the library. The options every command shares (data, device, precision,
progress) are declared once, in :func:`add_data_args`."""
from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger("stnas")


def add_data_args(p) -> None:
    p.add_argument("--data", type=Path, default=None,
                   help="ImageFolder root with train/<class>/* and val/<class>/* (default: the built-in demo dataset)")
    p.add_argument("--batch-size", type=int, default=None, help="images per batch (default: by method and space)")
    p.add_argument("--loader", choices=["auto", "dali", "pil"], default="auto",
                   help="data pipeline: DALI when it is installed (default), or the PIL fallback")
    p.add_argument("--threads", type=int, default=None, help="decoding threads (default: all cores)")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when available)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="bf16: autocast with fp32 master weights; auto (default): bf16 on CUDA, fp32 on the CPU")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def amp_of(args) -> bool | None:
    """--precision as the amp switch (None: decide by device)."""
    return {"auto": None, "bf16": True, "fp32": False}[args.precision]


def _device(name):
    from stnas.runtime import device

    return device(name)


def _check_common(args) -> None:
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")


# ---------------------------------------------------------------------- search

def cmd_search(args) -> int:
    from stnas.io import OutputLock, check_output_dir, write_json, written_files
    from stnas.methods import RunContext, get_method
    from stnas.runtime import init_distributed, release_log, setup_logging

    _check_common(args)
    method = get_method(args.method)
    rank, world = init_distributed(args.device)
    ctx = RunContext(space=args.space, data=args.data, out=args.out, resume=args.resume, device=_device(args.device),
                     amp=amp_of(args), seed=args.seed, batch_size=args.batch_size, loader=args.loader,
                     threads=args.threads, progress=not args.no_progress, rank=rank, world=world)
    method.check(args, ctx)
    if rank == 0:
        check_output_dir(args.out)
    with OutputLock(args.out):  # one run per output folder: a second is refused before it writes anything
        setup_logging(args.out, "search.log", hold=True)  # released once the run's checks pass
        summary = method.run(args, ctx)
        release_log()
    if rank != 0:
        return 0
    if not (args.out / "summary.json").exists():
        write_json(args.out / "summary.json", summary)
    method.report(summary, ctx)
    print(f"outputs in {args.out}: {written_files(args.out)}")  # what is there, never a list that forgets one
    return 0


# ---------------------------------------------------------------------- ST-NAS supernet commands

def _search_data_of_run(args, space, ck):
    """The data settings of the search that wrote checkpoint ``ck`` (the batch size and the images
    behind BN recalibration change scores), unless overridden."""
    from stnas.methods import RunContext
    from stnas.methods.stnas import search_data, space_defaults

    run = ck.get("config", {}).get("data", {})
    batch = args.batch_size or run.get("batch_size") or space_defaults(space)["batch_size"]
    ctx = RunContext(space=None, data=args.data, out=Path("."), resume=False, device=_device(args.device),
                     amp=amp_of(args), seed=0, batch_size=batch, loader=args.loader, threads=args.threads,
                     progress=not args.no_progress)
    return search_data(ctx, space, batch, seed=run.get("seed", 0), eval_images=run.get("eval_images")), ctx.device


def check_arch_space(item, space, what: str, against: str) -> None:
    """An architecture file that names its space (``best_*.json``, ``derived.json``, ``arch.json`` do)
    must be of ``space``: another space's architecture can fit a supernet by chance and be scored or
    built silently on the wrong one."""
    from stnas.spaces import SpaceError

    given = item.get("space") if isinstance(item, dict) else None
    name = given.get("name") if isinstance(given, dict) else given
    if name is not None and name != space.name:
        raise SpaceError(f"{what} is an architecture of space {name!r}, but {against} is of space {space.name!r}")


def _load_archs(path: Path, space, against: str):
    from stnas.spaces import SpaceError, read_arch_json

    data = read_arch_json(path, what="--archs")
    items = data if isinstance(data, list) else [data]
    if not items:
        raise SpaceError(f"--archs {path} holds no architecture (an empty list)")
    archs = []
    for k, item in enumerate(items):
        check_arch_space(item, space, f"--archs {path}" + (f", entry {k}," if len(items) > 1 else ""), against)
        try:
            archs.append(space.arch_from_dict(item))
        except SpaceError as e:
            raise SpaceError(f"--archs {path}, entry {k}: {e}") from None
    return archs


def _space_of_checkpoint(path: Path):
    from stnas.io import load_checkpoint
    from stnas.spaces import Space

    ck = load_checkpoint(path, kind="supernet", required=("space", "config", "model"))
    return Space.from_dict(ck["space"], source=str(path)), ck


def cmd_evaluate(args) -> int:
    import statistics

    from stnas.io import write_csv
    from stnas.methods.stnas import score_archs
    from stnas.runtime import setup_logging

    _check_common(args)
    setup_logging()
    space, ck = _space_of_checkpoint(args.checkpoint)
    if "snapshots" not in ck:
        raise ValueError(f"{args.checkpoint} is not an ST-NAS supernet checkpoint (it holds no snapshots)")
    archs = _load_archs(args.archs, space, f"the checkpoint {args.checkpoint}")
    data, dev = _search_data_of_run(args, space, ck)
    accs = score_archs(args.checkpoint, archs, data, dev, progress=not args.no_progress, amp=amp_of(args))
    out = args.csv or args.archs.with_suffix(".scores.csv")
    rows = []
    for a, acc in zip(archs, accs):
        madds, params = space.cost(a)
        rows.append({"score": f"{statistics.fmean(acc):.6f}", "madds": madds, "params": params,
                     "snapshot_accuracies": json.dumps(acc), "arch": json.dumps(a.to_dict())})
    write_csv(out, rows, ["score", "madds", "params", "snapshot_accuracies", "arch"])
    print(f"scored {len(archs)} architecture(s) over {len(accs[0])} snapshots -> {out}")
    return 0


def cmd_export(args) -> int:
    from stnas.io import check_output_file, save_checkpoint
    from stnas.runtime import setup_logging
    from stnas.spaces import read_arch_json
    from stnas.supernet import SuperNet, build, recalibrate_bn

    _check_common(args)
    setup_logging()
    check_output_file(args.out)  # before the work, not after it
    space, ck = _space_of_checkpoint(args.checkpoint)
    weights = ck["snapshots"][-1] if ck.get("snapshots") else ck["model"]
    if any(k.startswith("backbone.") for k in weights):
        raise ValueError(f"{args.checkpoint} is a detector's checkpoint (CR-NAS --task detection); export makes "
                         "classifiers: take a classification supernet's checkpoint")
    raw = read_arch_json(args.arch)
    check_arch_space(raw, space, f"--arch {args.arch}", f"the checkpoint {args.checkpoint}")
    arch = space.arch_from_dict(raw)
    data, dev = _search_data_of_run(args, space, ck)
    net = SuperNet(space)
    net.load_state_dict(weights)
    model = build(arch, space).inherit(net)
    recalibrate_bn(model, None, [x.float() for x in data.recal_batches("cpu")])  # the model is fp32, on the CPU
    madds, params = space.cost(arch)
    save_checkpoint(args.out, {"space": space.to_dict(), "arch": arch.to_dict(), "model": model.state_dict(),
                               "madds": madds, "params": params}, kind="model")
    source = "the supernet's last snapshot" if ck.get("snapshots") else "the supernet's final weights (no snapshots)"
    print(f"wrote {args.out}: {space.name} architecture, {madds / 1e6:.2f}M MAdds, {params / 1e6:.3f}M params, "
          f"weights from {source} with BN recalibrated")
    return 0


# ---------------------------------------------------------------------- retrain, rank, space

def cmd_retrain(args) -> int:
    from dataclasses import replace

    from stnas.data import data_root
    from stnas.io import OutputLock, check_output_dir
    from stnas.runtime import setup_logging
    from stnas.spaces import Space, read_arch_json
    from stnas.train.retrain import default_recipe, retrain

    _check_common(args)
    for name in ("epochs", "lr"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            raise ValueError(f"--{name} must be > 0, got {value}")
    raw = read_arch_json(args.arch)  # before the output folder exists: a wrong path leaves nothing behind
    name = args.space or (raw.get("space") if isinstance(raw, dict) else None) or "demo"
    space = Space.load(name)
    check_arch_space(raw, space, f"{args.arch}", f"--space {args.space}")
    arch = space.arch_from_dict(raw)
    dev = _device(args.device)
    cfg = default_recipe(space, demo_data=args.data is None)
    cfg = replace(cfg, seed=args.seed, **{k: v for k, v in (("epochs", args.epochs), ("lr", args.lr),
                                                              ("weight_decay", args.weight_decay),
                                                              ("batch_size", args.batch_size)) if v is not None})
    check_output_dir(args.out)
    with OutputLock(args.out):
        setup_logging(args.out, "retrain.log", hold=True)  # released once the run's checks pass
        result = retrain(space, arch, data_root(args.data), cfg, args.out, device=dev, resume=args.resume,
                         loader=args.loader, threads=args.threads, progress=not args.no_progress, amp=amp_of(args))
    print(f"retrained {space.name} architecture: val top-1 {100 * result['val_top1']:.2f}% after {cfg.epochs} "
          f"epochs -> {args.out}")
    return 0


def cmd_rank(args) -> int:
    from stnas.benchmarks import NB201Table
    from stnas.evaluate.rank_outputs import write_rank_report

    given = [p for p in (args.scores, args.scores_file) if p is not None]
    if not given:
        raise ValueError("give the scores CSV: stnas rank SCORES.csv --benchmark ... (or --scores SCORES.csv)")
    if len(given) == 2 and given[0] != given[1]:
        raise ValueError(f"two scores files given ({given[0]} and --scores {given[1]}): give one")
    scores = given[0]
    if not scores.is_file():
        raise ValueError(f"scores file {scores} does not exist")
    table = NB201Table.load(args.benchmark)
    out = args.out or scores.parent
    report = write_rank_report(scores, table, out, metric=args.metric, score_column=args.score_column)
    print(f"{report['n']} architectures: Kendall tau {report['kendall_tau']:.3f}, Spearman rho "
          f"{report['spearman_rho']:.3f}, top-5% overlap {report['top5pct_overlap']:.3f}, top-10% overlap "
          f"{report['top10pct_overlap']:.3f}, regret {report['regret']:.2f} -> {out / 'rank.json'}, "
          f"{out / 'rank.png'}")
    return 0


def cmd_space(args) -> int:
    from stnas.spaces import Space, builtin_spaces

    if args.space_command == "info":
        print(json.dumps(Space.load(args.space).info(), indent=2))
        return 0
    rows = []
    for name in builtin_spaces():
        info = Space.load(name).info()
        rows.append((name, info["type"], f"{info['architectures']:.3g}",
                     f"{info['madds_min'] / 1e6:.3g}-{info['madds_max'] / 1e6:.3g}M",
                     f"{info['params_min'] / 1e6:.3g}-{info['params_max'] / 1e6:.3g}M", str(info["resolution"])))
    head = ("name", "type", "architectures", "MAdds", "params", "px")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    for r in [head] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


HANDLERS = {"search": cmd_search, "evaluate": cmd_evaluate, "export": cmd_export, "retrain": cmd_retrain,
            "rank": cmd_rank, "space": cmd_space}
