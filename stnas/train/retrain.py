"""Train an architecture's standalone model from scratch (``stnas retrain``), for every kind of space:
the model comes from the one builder, :func:`stnas.supernet.build`.

SGD with Nesterov momentum, cosine learning rate per step; a checkpoint after every epoch (atomic), so an
interrupted run continues with ``--resume`` from its last finished epoch. Writes ``history.csv``,
``curves.png``, ``model.ckpt`` and ``result.json`` into the output folder.

Recipes (:func:`default_recipe`): NAS-Bench-201's for a cell space on real data (Dong & Yang 2020: 200
epochs, lr 0.1 cosine, batch 256, weight decay 5e-4, Nesterov, no label smoothing); for chain spaces
ours (label smoothing 0.1; 120 epochs at batch 256 for ImageNet-scale spaces); 15 epochs at batch 64 on
the built-in demo data.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from stnas import data as stdata
from stnas.io import load_checkpoint, save_checkpoint, start_run, write_csv, write_json
from stnas.plots import plot_history
from stnas.runtime import autocast, progress as progress_bar, use_amp
from stnas.spaces import CellSpace, Space
from stnas.supernet import build

log = logging.getLogger("stnas.retrain")


@dataclass
class RetrainConfig:
    epochs: int = 15
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    seed: int = 0
    batch_size: int = 64


def default_recipe(space: Space, demo_data: bool) -> RetrainConfig:
    """The retraining recipe of ``space``'s models (see the module's docstring)."""
    if demo_data:
        return RetrainConfig(epochs=15, lr=0.1, weight_decay=5e-4, batch_size=64,
                             label_smoothing=0.0 if isinstance(space, CellSpace) else 0.1)
    if isinstance(space, CellSpace):
        return RetrainConfig(epochs=200, lr=0.1, weight_decay=5e-4, batch_size=256, label_smoothing=0.0)
    if space.resolution <= 64:
        return RetrainConfig(epochs=15, lr=0.1, weight_decay=5e-4, batch_size=64)
    return RetrainConfig(epochs=120, lr=0.1, weight_decay=4e-5, batch_size=256)


@torch.no_grad()
def evaluate(model: nn.Module, loader, device) -> float:
    model.eval()
    correct = seen = 0
    for x, y in loader:
        pred = model(x.to(device)).argmax(1)
        correct += int((pred == y.to(device)).sum())
        seen += y.numel()
    return correct / max(seen, 1)


def retrain(space: Space, arch, root, cfg: RetrainConfig, out, device, resume: bool = False,
            loader: str = "auto", threads: int | None = None, progress: bool = True, amp: bool | None = None) -> dict:
    """Train ``arch`` from scratch; bf16 autocast (fp32 master weights) and channels_last on CUDA
    devices unless ``amp`` says otherwise."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "model.ckpt"
    if ckpt.exists() and not resume:
        raise FileExistsError(f"{ckpt} exists: pass --resume to continue it, or choose another --out")
    device = torch.device(device)
    channels_last = device.type == "cuda"
    amp = use_amp(device, amp)

    def make(split, seed):
        return stdata.make_loader(root, split=split, batch_size=cfg.batch_size, image_size=space.resolution,
                                  channels_last=channels_last, seed=seed, num_threads=threads, backend=loader,
                                  dtype=torch.bfloat16 if amp else torch.float32,
                                  device=device if device.type == "cuda" else None)

    torch.manual_seed(cfg.seed)
    model = build(arch, space).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_loader, val_loader = make("train", cfg.seed), make("val", 0)  # each epoch: train_loader.set_epoch
    steps_per_epoch = len(train_loader)
    total = cfg.epochs * steps_per_epoch
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    history, epoch = [], 0
    if resume and ckpt.exists():
        ck = load_checkpoint(ckpt, kind="retrain")
        if ck["arch"] != arch.to_dict() or ck["config"] != asdict(cfg):
            raise ValueError(f"{ckpt} belongs to another architecture or other settings; use another --out")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        torch.set_rng_state(ck["torch_rng"])
        history, epoch = ck["history"], ck["epoch"]
    # Every check has passed (the data, the checkpoint): only now does anything in out change.
    start_run(out, {"space": space.to_dict(), "arch": arch.to_dict(), "retrain": asdict(cfg), "data": str(root)},
              [ckpt] if resume else [], resume)
    if epoch:
        log.info("resumed at epoch %d of %d", epoch, cfg.epochs)
    bar = progress_bar(total, epoch * steps_per_epoch, "retrain", progress)
    try:
        while epoch < cfg.epochs:
            model.train()
            loss_sum, steps = torch.zeros((), device=device), 0  # summed on the device: no sync per step
            train_loader.set_epoch(epoch)
            for i, (x, y) in enumerate(train_loader):
                if i >= steps_per_epoch:
                    break
                x = x.to(device)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with autocast(device, amp):
                    loss = loss_fn(model(x), y.to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                loss_sum += loss.detach().float()
                steps += 1
                bar.update(1)
            epoch += 1
            with autocast(device, amp):
                acc = evaluate(model, val_loader, device)
            train_loss = float(loss_sum) / max(steps, 1)
            if not math.isfinite(train_loss):
                raise FloatingPointError(f"the training loss is {train_loss} in epoch {epoch}: lower --lr")
            bar.set_postfix(loss=f"{train_loss:.3f}", top1=f"{100 * acc:.1f}%", refresh=False)
            history.append({"epoch": epoch, "train_loss": train_loss, "val_top1": acc})
            log.info("epoch %d/%d: train loss %.4f, val top-1 %.2f%%", epoch, cfg.epochs, history[-1]["train_loss"],
                     100 * acc)
            save_checkpoint(ckpt, {"space": space.to_dict(), "arch": arch.to_dict(), "config": asdict(cfg),
                                   "model": model.state_dict(), "optimizer": opt.state_dict(),
                                   "scheduler": sched.state_dict(), "torch_rng": torch.get_rng_state(),
                                   "history": history, "epoch": epoch}, kind="retrain")
    finally:
        bar.close()
    write_csv(out / "history.csv", history, ["epoch", "train_loss", "val_top1"])
    plot_history(history, out / "curves.png")
    madds, params = space.cost(arch)
    result = {"space": space.name, "arch": arch.to_dict(), "madds": madds, "params": params,
              "epochs": cfg.epochs, "val_top1": history[-1]["val_top1"] if history else None}
    write_json(out / "result.json", result)
    return result

