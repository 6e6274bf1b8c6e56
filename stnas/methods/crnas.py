"""CR-NAS (Liang, Zhang, Wang, Gong, Qiao, Ouyang, Yan, "Computation Reallocation for Object Detection",
ICLR 2020, arXiv 1912.11234): keep a ResNet backbone's computation, reallocate it (blocks per stage,
then a dilation per block), searched on the detection task itself.

What is the paper's and what is ours is in ``docs/crnas.md``. In short, the paper's: the stage space
(four stages, total N fixed, CR-NAS's stage sets), the spatial space (dilation 1/2/3 on every block's
centre 3x3), SPOS-style uniformly sampled supernets (one for stages, one for dilations, the dilations
sharing the 3x3 weights), the hierarchical search (allocation first, then a greedy block-by-block beam
search with K = 3 whose partial architectures are scored with the open blocks drawn at random anew for
every validation batch), arch-train / arch-val split of the training data, Faster R-CNN + FPN. Ours:
every schedule and size below, the spatial supernet starting from the stage supernet's weights, the
stage step scoring every admissible allocation (a uniform sample of them past ``max_allocations``),
BatchNorm on batch statistics when scoring a supernet, and the final comparison: both networks
fine-tuned alike from the stage supernet's weights, where the paper retrains both detectors.

The recipe (:func:`run_crnas`):

1. stage supernet: single-path training, each step an allocation drawn uniformly from the admissible
   ones, every dilation 1 (``stage_supernet.ckpt``);
2. stage search: every allocation scored on arch-val (detection: COCO AP; classification: top-1);
3. spatial supernet: the best allocation, each step every block's dilation drawn uniformly
   (``spatial_supernet.ckpt``, initialised from the stage supernet);
4. spatial search: :func:`stnas.strategies.beam.beam_search` over the dilations, block by block, K = 3;
5. the found architecture and the original (the skeleton's own allocation, dilation 1) scored on the
   held-out split (detection: ``val``; classification: ``val/``) in the supernets;
6. the same two as standalone networks on one budget: each takes the stage supernet's weights (both
   allocations trained there alike) and is fine-tuned ``final_epochs`` on the same batches, then
   scored on the held-out split (``finetune_found.ckpt``, ``finetune_original.ckpt``).

Outputs in ``out``: ``result.json`` (allocation, per-block dilations, the scores of found and original
in the supernets, ``scores``, and fine-tuned, ``fine_tuned``), ``arch.json`` (the found architecture
with its space), ``stages.csv`` / ``stages.png`` (every allocation's score), ``beam.csv`` /
``beam.png`` (the beams after every block), the supernet and fine-tuning checkpoints (exact resume
with ``--resume``), ``config.json``, ``summary.json``, ``search.log``.
"""
from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from stnas.io import load_checkpoint, start_run, write_csv, write_json
from stnas.methods.base import Method, RunContext, add_checkpoint_every_argument, positive, register
from stnas.plots import plot_crnas_beam, plot_crnas_stages
from stnas.runtime import autocast, progress, use_amp
from stnas.spaces import Space
from stnas.spaces.resnet import ResNetArch, ResNetSpace
from stnas.strategies.beam import BeamConfig, beam_search, complete

log = logging.getLogger("stnas.search")


@dataclass
class CRNASConfig:
    task: str = "detection"          # or "classification" (the cheaper scorer)
    detector: str = "faster_rcnn"    # or "retinanet"
    stage_epochs: int = 12
    spatial_epochs: int = 6
    final_epochs: int = 4            # fine-tuning of the found and of the original network each (0: none)
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 8
    beam_k: int = 3                  # CR-NAS: 3
    max_allocations: int = 64        # the stage step scores every allocation up to this many, else a sample
    arch_val_images: int = 48        # detection: images of the training split held out to score architectures
    eval_batch: int = 12
    seed: int = 0
    checkpoint_every: int = 200

    def __post_init__(self):
        if self.task not in ("detection", "classification"):
            raise ValueError(f"--task must be detection or classification, got {self.task!r}")
        if self.stage_epochs < 1 or self.spatial_epochs < 0 or self.final_epochs < 0:
            raise ValueError("--stage-epochs must be >= 1, --spatial-epochs and --final-epochs >= 0")
        if self.beam_k < 1 or self.max_allocations < 1:
            raise ValueError("--beam-k and --max-allocations must be >= 1")


# ---------------------------------------------------------------------- samplers: functions of the step alone

def stage_arch(space: ResNetSpace, seed: int, step: int) -> ResNetArch:
    """Step ``step`` of the stage supernet: a uniform allocation, every dilation 1."""
    blocks = random.Random(f"{seed}:stage:{step}").choice(space.allocations)
    return ResNetArch(blocks, (1,) * space.total)


def spatial_arch(space: ResNetSpace, blocks: tuple[int, ...], seed: int, step: int) -> ResNetArch:
    """Step ``step`` of the spatial supernet: the found allocation, a uniform dilation per block."""
    rng = random.Random(f"{seed}:spatial:{step}")
    return ResNetArch(tuple(blocks), tuple(rng.choice(space.dilation_choices) for _ in range(space.total)))


class PartialScorer:
    """Scores partial architectures (gene tuples with open decisions) by ``evaluate(arch_of_batch)``,
    the open decisions drawn anew for every validation batch (CR-NAS); the draws of a partial are a
    function of (seed, partial), so a score is reproducible. Scores are cached per partial."""

    def __init__(self, space: Space, evaluate, seed: int, desc: str = "scoring", show: bool = True):
        self.space, self.evaluate, self.seed, self.desc, self.show = space, evaluate, seed, desc, show
        self.cache: dict[tuple, float] = {}

    def __call__(self, partials) -> list[float]:
        new = [p for p in dict.fromkeys(tuple(p) for p in partials) if p not in self.cache]
        bar = progress(len(new), 0, self.desc, self.show)
        for p in new:
            rng = random.Random(f"{self.seed}:score:{p}")
            self.cache[p] = float(self.evaluate(lambda i, p=p, rng=rng: complete(self.space, p, rng)))
            bar.update(1)
        bar.close()
        return [self.cache[tuple(p)] for p in partials]


# ---------------------------------------------------------------------- the tasks

def inherit_state(net: torch.nn.Module, weights: dict) -> torch.nn.Module:
    """Load a standalone network's tensors from a supernet's state dict ``weights``, by name (the
    standalone network's names are a subset of the supernet's). Returns ``net``."""
    own = net.state_dict()
    missing = [k for k in own if k not in weights]
    if missing:
        raise ValueError(f"the supernet's weights lack {len(missing)} of the network's tensors, e.g. {missing[0]}")
    net.load_state_dict({k: weights[k] for k in own})
    return net


class ClassificationTask:
    """Top-1 of the supernet (its classifier head) on ImageFolder data; the shared single-path trainer."""

    metric = "top-1 (%)"

    def __init__(self, space, data, cfg: CRNASConfig, device, amp: bool):
        from stnas.supernet.resnet import ResNetNet

        self.space, self.data, self.cfg, self.device, self.amp = space, data, cfg, device, amp
        self.net = ResNetNet(space).to(device)
        self.steps_per_epoch = data.steps_per_epoch

    def trainer(self, sampler, epochs: int, checkpoint: Path, settings: dict, show: bool):
        from stnas.train.single_path import SinglePathTrainer

        opt = torch.optim.SGD(self.net.parameters(), lr=self.cfg.lr, momentum=self.cfg.momentum,
                              weight_decay=self.cfg.weight_decay)
        return SinglePathTrainer(self.net, self.data.train_epoch, self.steps_per_epoch, epochs * self.steps_per_epoch,
                                 opt, sampler, settings=settings, identity={"space": self.space.to_dict()},
                                 resumable=("checkpoint_every",), checkpoint=checkpoint,
                                 checkpoint_every=self.cfg.checkpoint_every, device=self.device, progress=show,
                                 amp=self.amp, channels_last=self.device.type == "cuda")

    def standalone(self, arch: ResNetArch, weights: dict) -> None:
        """From now on the task trains and scores the standalone ResNet of ``arch``, its weights taken
        from a supernet's state dict."""
        from stnas.supernet.resnet import ResNetNet

        self.net = inherit_state(ResNetNet(self.space, arch), weights).to(self.device)

    @torch.no_grad()
    def evaluate(self, arch_of_batch, split: str = "arch-val", batch_stats: bool = True) -> float:
        """Top-1 (%); ``batch_stats``: BatchNorm on each batch's statistics (a supernet), else on the
        running ones (a standalone network)."""
        import contextlib

        from stnas.supernet.resnet import batch_statistics

        net = self.net
        was = net.training
        net.eval()
        correct = seen = 0
        bn = batch_statistics(net) if batch_stats else contextlib.nullcontext()
        try:
            with torch.random.fork_rng(devices=[]), bn, autocast(self.device, self.amp):
                for i, (x, y) in enumerate(self.data.eval_batches(self.device)):
                    correct += int((net(x, arch_of_batch(i)).argmax(1) == y).sum())
                    seen += y.numel()
        finally:
            net.train(was)
        return round(100.0 * correct / max(seen, 1), 4)

    def evaluate_full(self, arch_of_batch, split: str = "val", batch_stats: bool = True) -> float:
        return self.evaluate(arch_of_batch, split, batch_stats)

    def describe(self) -> dict:
        return {"task": "classification", **self.data.describe()}


class DetectionTask:
    """COCO AP of torchvision's detector with the supernet backbone, on COCO-format data."""

    metric = "COCO AP (%)"

    def __init__(self, space, root: Path, cfg: CRNASConfig, device, amp: bool):
        from stnas.data.coco import CocoSplit, arch_split, coco_splits
        from stnas.detection.model import DetectorConfig, build_detector

        self.space, self.cfg, self.device, self.amp = space, cfg, device, amp
        train_name, val_name = coco_splits(root)
        self.root = Path(root)
        full = CocoSplit(root, train_name)
        self.val = CocoSplit(root, val_name)
        self.train, self.arch_val = arch_split(full, cfg.arch_val_images)
        self.det_cfg = DetectorConfig.for_resolution(space.resolution, cfg.detector)
        self.net = build_detector(space, full.num_classes, self.det_cfg).to(device)
        self.steps_per_epoch = len(self.train) // cfg.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(f"{len(self.train)} arch-train images give no batch of {cfg.batch_size}; lower --batch-size")

    def train_epoch(self, epoch: int):
        return self.train.batches(self.cfg.batch_size, epoch, self.cfg.seed, flip=True)

    def trainer(self, sampler, epochs: int, checkpoint: Path, settings: dict, show: bool):
        from stnas.detection.train import DetectionTrainer

        params = [p for p in self.net.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=self.cfg.lr, momentum=self.cfg.momentum, weight_decay=self.cfg.weight_decay)
        return DetectionTrainer(self.net, self.train_epoch, self.steps_per_epoch, epochs * self.steps_per_epoch, opt,
                                sampler, settings=settings, identity={"space": self.space.to_dict()},
                                resumable=("checkpoint_every",), checkpoint=checkpoint,
                                checkpoint_every=self.cfg.checkpoint_every, device=self.device, progress=show,
                                amp=self.amp, log_every=10)

    def standalone(self, arch: ResNetArch, weights: dict) -> None:
        """From now on the task trains and scores the detector with the standalone ResNet of ``arch``,
        its weights (backbone, FPN, heads) taken from a supernet detector's state dict."""
        from stnas.detection.model import build_detector

        self.net = inherit_state(build_detector(self.space, self.val.num_classes, self.det_cfg, arch),
                                 weights).to(self.device)

    def evaluate(self, arch_of_batch, split: str = "arch-val", batch_stats: bool = True) -> float:
        """AP@[.5:.95] (ties broken by AP@.5 / 1000)."""
        ap = self.evaluate_full(arch_of_batch, split, batch_stats)
        return ap["ap"] + ap["ap50"] / 1000

    def evaluate_full(self, arch_of_batch, split: str = "val", batch_stats: bool = True) -> dict:
        """{"ap", "ap50", "ap75"}; ``batch_stats``: the backbone's BatchNorm on each batch's statistics
        (a supernet), else on the running ones (a standalone network)."""
        from stnas.detection.evaluate import evaluate_ap

        with torch.random.fork_rng(devices=[]), autocast(self.device, self.amp):
            return evaluate_ap(self.net, self.arch_val if split == "arch-val" else self.val, self.cfg.eval_batch,
                               self.device, arch_of_batch, batch_stats=batch_stats)

    def describe(self) -> dict:
        return {"task": "detection", "root": str(self.root), "detector": asdict(self.det_cfg),
                "arch_train_images": len(self.train), "arch_val_images": len(self.arch_val),
                "val_images": len(self.val), "classes": self.val.num_classes, "batch_size": self.cfg.batch_size}


# ---------------------------------------------------------------------- the search

def _supernet_weights(path: Path) -> dict:
    return load_checkpoint(path, kind="supernet")["model"]


def run_crnas(space: ResNetSpace, task, cfg: CRNASConfig, out: Path, *, resume: bool = False,
              progress_bars: bool = True) -> dict:
    """The hierarchical CR-NAS search on ``task`` (:class:`DetectionTask` or :class:`ClassificationTask`);
    returns a summary (also written to ``out/summary.json``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stage_ckpt, spatial_ckpt = out / "stage_supernet.ckpt", out / "spatial_supernet.ckpt"
    settings = {"method": asdict(cfg), "data": task.describe()}
    start_run(out, {"space": space.to_dict(), **settings}, [stage_ckpt, spatial_ckpt], resume)
    title = f"CR-NAS on {space.name} ({cfg.task})"
    reference = space.reference()

    # 1. the stage supernet
    log.info("%s: %d admissible allocations of N = %d blocks, %d x %d steps per supernet", title,
             space.count_allocations(), space.total, cfg.stage_epochs, task.steps_per_epoch)
    trainer = task.trainer(lambda step: stage_arch(space, cfg.seed, step), cfg.stage_epochs, stage_ckpt,
                           {**settings, "phase": "stage"}, progress_bars)
    trainer.desc = "stage supernet"
    if resume:
        trainer.resume()
    trainer.train()

    # 2. the stage allocation
    allocations = list(space.allocations)
    if len(allocations) > cfg.max_allocations:
        rng = random.Random(f"{cfg.seed}:allocations")
        allocations = rng.sample([a for a in allocations if a != reference.blocks], cfg.max_allocations - 1)
        allocations.append(reference.blocks)
    stage_scorer = PartialScorer(space, task.evaluate, cfg.seed, "stage search", progress_bars)
    archs = [ResNetArch(a, (1,) * space.total) for a in allocations]
    scores = stage_scorer([space.genes(a) for a in archs])
    stage_rows = [{"blocks": list(a.blocks), "score": s, "madds": space.cost(a).madds, "params": space.cost(a).params}
                  for a, s in zip(archs, scores)]
    best_blocks = tuple(max(stage_rows, key=lambda r: r["score"])["blocks"])
    write_csv(out / "stages.csv", [{**r, "blocks": "-".join(map(str, r["blocks"]))} for r in stage_rows],
              ["blocks", "score", "madds", "params"])
    plot_crnas_stages(stage_rows, reference.blocks, best_blocks, task.metric, out / "stages.png", title + ": stage step")
    stage_found = ResNetArch(best_blocks, (1,) * space.total)
    log.info("stage step: allocation %s (%.3f) against the original %s (%.3f)", best_blocks,
             max(r["score"] for r in stage_rows), reference.blocks,
             next(r["score"] for r in stage_rows if tuple(r["blocks"]) == reference.blocks))
    final = {"original_stage_supernet": task.evaluate_full(lambda i: reference, "val"),
             "stage_found_stage_supernet": task.evaluate_full(lambda i: stage_found, "val")}

    # 3. the spatial supernet: the found allocation, dilations drawn per step, weights from the stage supernet
    trainer = task.trainer(lambda step: spatial_arch(space, best_blocks, cfg.seed, step), cfg.spatial_epochs,
                           spatial_ckpt, {**settings, "phase": "spatial", "blocks": list(best_blocks)}, progress_bars)
    trainer.desc = "spatial supernet"
    if not (resume and trainer.resume()):
        task.net.load_state_dict(_supernet_weights(stage_ckpt))
    if cfg.spatial_epochs:
        trainer.train()

    # 4. the dilations, block by block
    beam_rows: list[dict] = []

    def on_step(i, beams):
        for rank, (g, s) in enumerate(beams):
            beam_rows.append({"block": i + 1, "rank": rank, "score": s,
                              "dilations": "".join("?" if v is None else str(v) for v in g[space.num_stages:])})
        log.info("beam: block %d of %d fixed, best %.3f (dilations %s)", i + 1, space.total, beams[0][1],
                 beam_rows[-len(beams)]["dilations"])

    spatial_scorer = PartialScorer(space, task.evaluate, cfg.seed, "spatial search", progress_bars)
    dil_genes = list(range(space.num_stages, space.num_stages + space.total))
    found = beam_search(space, spatial_scorer, BeamConfig(k=cfg.beam_k, seed=cfg.seed), base=stage_found,
                        decisions=dil_genes, on_step=on_step)[0].arch
    write_csv(out / "beam.csv", beam_rows, ["block", "rank", "score", "dilations"])
    plot_crnas_beam(beam_rows, task.metric, out / "beam.png", title + ": spatial step (beam search)")

    # 5. found against original on the held-out split, in the supernets
    final["found_spatial_supernet"] = task.evaluate_full(lambda i: found, "val")
    final["stage_found_spatial_supernet"] = task.evaluate_full(lambda i: stage_found, "val")

    # 6. found against original as networks of their own, on the same budget: each the standalone
    #    network of its architecture with the stage supernet's weights (where both allocations trained
    #    alike), fine-tuned for the same epochs on the same batches, scored on the held-out split
    comparison = {"init": "stage supernet", "epochs": cfg.final_epochs}
    if cfg.final_epochs:
        stage_weights = _supernet_weights(stage_ckpt)
        for key, arch in (("original", reference), ("found", found)):
            task.standalone(arch, stage_weights)
            trainer = task.trainer(lambda step, arch=arch: arch, cfg.final_epochs, out / f"finetune_{key}.ckpt",
                                   {**settings, "phase": f"finetune-{key}", "arch": arch.to_dict()}, progress_bars)
            trainer.desc = f"fine-tune {key}"
            torch.manual_seed(cfg.seed)  # the same random stream for both (detection samples anchors, proposals)
            if resume:
                trainer.resume()
            trainer.train()
            comparison[key] = task.evaluate_full(lambda i, arch=arch: arch, "val", batch_stats=False)
        log.info("fine-tuned %d epochs each: found %s, original %s (%s)", cfg.final_epochs, comparison["found"],
                 comparison["original"], task.metric)
    cost, ref_cost = space.cost(found), space.cost(reference)
    result = {"space": space.name, "task": cfg.task, "metric": task.metric,
              "allocation": list(found.blocks), "dilations": [list(d) for d in found.stage_dilations()],
              "original": {"allocation": list(reference.blocks), "madds": ref_cost.madds, "params": ref_cost.params},
              "madds": cost.madds, "params": cost.params, "scores": final, "fine_tuned": comparison}
    write_json(out / "result.json", result)
    write_json(out / "arch.json", {"space": space.to_dict(), "arch": found.to_dict(), "madds": cost.madds,
                                   "params": cost.params})
    summary = {"method": "crnas", **result, "out": str(out)}
    write_json(out / "summary.json", summary)
    return summary


# ---------------------------------------------------------------------- the method behind `stnas search`

# Without --data: the generated shapes (detection) or the demo digits (classification), sized for <= 5
# minutes on two CPU cores. With --data: a longer schedule (ours; the paper gives none).
DEMO = {"stage_epochs": 12, "spatial_epochs": 6, "final_epochs": 4, "arch_val_images": 48}
DATA = {"stage_epochs": 12, "spatial_epochs": 6, "final_epochs": 12, "arch_val_images": 5000}


@register
class CRNAS(Method):
    name = "crnas"
    summary = ("CR-NAS (Liang et al., ICLR 2020, arXiv 1912.11234): reallocate a ResNet backbone's blocks "
               "between stages, then its dilations (beam search, K = 3), scored by detection AP (torchvision "
               "Faster R-CNN/RetinaNet + FPN, pycocotools) or classification top-1")

    def add_arguments(self, g) -> None:
        d = CRNASConfig()
        g.add_argument("--task", choices=("auto", "detection", "classification"), default="auto",
                       help="detection (COCO-format --data, COCO AP) or classification (ImageFolder --data, top-1); "
                            "auto: detection where torchvision and pycocotools run, else classification")
        g.add_argument("--detector", choices=("faster_rcnn", "retinanet"), default=d.detector,
                       help=f"the detector around the backbone (default: {d.detector})")
        g.add_argument("--stage-epochs", type=positive(int), default=None,
                       help=f"epochs of the stage supernet (default: {DEMO['stage_epochs']} on the demo)")
        g.add_argument("--spatial-epochs", type=int, default=None,
                       help=f"epochs of the spatial supernet (default: {DEMO['spatial_epochs']} on the demo)")
        g.add_argument("--final-epochs", type=int, default=None,
                       help=f"epochs of fine-tuning for each of the found and the original network, both from the "
                            f"stage supernet's weights, for AP of both (0: none; default: {DEMO['final_epochs']} on "
                            f"the demo, {DATA['final_epochs']} with --data)")
        g.add_argument("--lr", type=positive(float), default=None,
                       help="SGD learning rate, constant (default: 0.02 detection, 0.1 classification)")
        g.add_argument("--beam-k", type=positive(int), default=d.beam_k, help=f"beam width (default: {d.beam_k})")
        g.add_argument("--max-allocations", type=positive(int), default=d.max_allocations,
                       help=f"the stage step scores every allocation up to this many, else a uniform sample "
                            f"(default: {d.max_allocations})")
        g.add_argument("--arch-val-images", type=positive(int), default=None,
                       help="detection: training images held out to score architectures (default: 48 on the demo, "
                            "5000 as CR-NAS on COCO)")
        add_checkpoint_every_argument(g, d.checkpoint_every)

    def task_of(self, args) -> str:
        """--task, with auto resolved once into ``args`` (check and run both ask; the fallback is said once)."""
        if args.task == "auto":
            from stnas.detection import detection_missing

            args.task = "detection" if detection_missing() is None else "classification"
            if args.task == "classification":
                log.warning("torchvision/pycocotools unavailable: --task classification (for detection: pip install "
                            "-r requirements-detection.txt)")
        return args.task

    def config(self, args, ctx: RunContext, task: str) -> CRNASConfig:
        base = DEMO if ctx.data is None else DATA
        pick = lambda v, k: base[k] if v is None else v  # noqa: E731
        return CRNASConfig(task=task, detector=args.detector, stage_epochs=pick(args.stage_epochs, "stage_epochs"),
                           spatial_epochs=pick(args.spatial_epochs, "spatial_epochs"),
                           final_epochs=pick(args.final_epochs, "final_epochs"),
                           lr=args.lr or (0.02 if task == "detection" else 0.1),
                           batch_size=ctx.batch_size or (8 if task == "detection" else 64), beam_k=args.beam_k,
                           max_allocations=args.max_allocations,
                           arch_val_images=pick(args.arch_val_images, "arch_val_images"), seed=ctx.seed,
                           checkpoint_every=args.checkpoint_every)

    def space_of(self, ctx: RunContext, task: str) -> ResNetSpace:
        demo = ctx.data is None
        name = ctx.space or (("resnet-det-demo" if task == "detection" else "resnet-demo") if demo else "resnet50")
        space = Space.load(name)
        if not isinstance(space, ResNetSpace):
            raise ValueError(f"--method crnas searches resnet spaces; {space.name!r} is a {space.kind!r} space")
        return space

    def check(self, args, ctx: RunContext) -> None:
        task = self.task_of(args)
        if task == "detection":
            from stnas.detection import require_detection

            require_detection()
            if ctx.data is not None:  # a bad annotation file is one line now, not after training
                from stnas.data.coco import coco_splits, read_coco_json

                for split in coco_splits(ctx.data):
                    read_coco_json(Path(ctx.data) / "annotations" / f"instances_{split}.json")
        self.config(args, ctx, task)
        self.space_of(ctx, task)
        if ctx.world > 1:
            raise ValueError("--method crnas runs in one process")

    def run(self, args, ctx: RunContext) -> dict:
        task_name = self.task_of(args)
        space, cfg = self.space_of(ctx, task_name), self.config(args, ctx, task_name)
        dev = ctx.device
        amp = use_amp(dev, ctx.amp)
        torch.manual_seed(cfg.seed)  # the supernet's initial weights
        if task_name == "detection":
            from stnas.data.coco_shapes import shapes_dataset

            if ctx.data is None:
                log.info("no --data: the generated COCO-format shapes, the demo space %s", space.name)
            task = DetectionTask(space, ctx.data if ctx.data is not None else shapes_dataset(), cfg, dev, amp)
            if task.val.num_classes != space.num_classes:
                log.info("the data has %d categories (the space's classifier head, %d, is not used in detection)",
                         task.val.num_classes, space.num_classes)
        else:
            from stnas.data import data_root
            from stnas.data.search import SearchData

            data = SearchData(data_root(ctx.data), space.resolution, cfg.batch_size, seed=ctx.seed,
                              channels_last=dev.type == "cuda", dtype=torch.bfloat16 if amp else torch.float32,
                              backend=ctx.loader, num_threads=ctx.threads, device=dev if dev.type == "cuda" else None)
            if data.num_classes != space.num_classes:
                raise ValueError(f"the data has {data.num_classes} classes but space {space.name!r} classifies into "
                                 f"{space.num_classes}; use a space file with num_classes: {data.num_classes}")
            task = ClassificationTask(space, data, cfg, dev, amp)
        return run_crnas(space, task, cfg, ctx.out, resume=ctx.resume, progress_bars=ctx.progress)

    def report(self, summary: dict, ctx: RunContext) -> None:
        s = summary["scores"]

        def show(v):
            return f"AP {v['ap']:.2f} (AP50 {v['ap50']:.2f})" if isinstance(v, dict) else f"{v:.2f}%"

        print(f"CR-NAS on {summary['space']} ({summary['task']}): allocation {summary['allocation']} (original "
              f"{summary['original']['allocation']}), dilations {summary['dilations']}")
        print(f"  original allocation, stage supernet:      {show(s['original_stage_supernet'])}")
        print(f"  found allocation, stage supernet:         {show(s['stage_found_stage_supernet'])}")
        print(f"  found allocation + dilations, spatial:    {show(s['found_spatial_supernet'])}")
        print(f"  found allocation, dilation 1, spatial:    {show(s['stage_found_spatial_supernet'])}")
        ft = summary.get("fine_tuned", {})
        if "found" in ft:
            print(f"  fine-tuned {ft['epochs']} epochs each from the stage supernet: found {show(ft['found'])}, "
                  f"original {show(ft['original'])}")
