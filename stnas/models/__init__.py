"""Standalone models of single architectures: ``stnas.models.build(arch, space)``, and
``stnas.models.load(path)`` for a model exported by ``stnas export`` or trained by ``stnas retrain``
(or a supernet checkpoint of a search)."""
from __future__ import annotations

from torch import nn

from stnas.supernet import ChainNet, build
from stnas.supernet.cell_blocks import CellNet


def load(path) -> nn.Module:
    """The module stored in a checkpoint, with its weights, in eval mode: an exported model
    (``stnas export``), a retrained one (``stnas retrain``'s model.ckpt), or the supernet of a
    search (``supernet.ckpt``; its last snapshot when it has one; CR-NAS's classification
    ``stage_supernet.ckpt`` / ``spatial_supernet.ckpt``). One CheckpointError otherwise."""
    from stnas.io import CheckpointError, load_checkpoint
    from stnas.spaces import Space

    ck = load_checkpoint(path)
    kind = ck.get("kind")
    if kind in ("model", "retrain"):
        ck = load_checkpoint(path, kind=kind, required=("space", "arch", "model"))
        space = Space.from_dict(ck["space"], source=str(path))
        net = build(space.arch_from_dict(ck["arch"]), space)
    elif kind == "supernet" and "snapshots" in ck:
        ck = load_checkpoint(path, kind=kind, required=("space", "model"))
        from stnas.supernet import SuperNet

        net = SuperNet(Space.from_dict(ck["space"], source=str(path)))
        if ck["snapshots"]:
            ck = {**ck, "model": ck["snapshots"][-1]}
    elif kind == "supernet" and isinstance(ck.get("space"), dict) and ck["space"].get("type") == "resnet":
        ck = load_checkpoint(path, kind=kind, required=("space", "model"))
        if any(k.startswith("backbone.") for k in ck["model"]):
            raise CheckpointError(f"checkpoint {path} holds a detector (CR-NAS --task detection), not a classifier")
        from stnas.supernet import SuperNet

        net = SuperNet(Space.from_dict(ck["space"], source=str(path)))  # CR-NAS's stage or spatial supernet
    elif kind == "supernet":
        ck = load_checkpoint(path, kind=kind, required=("space", "model"))
        from stnas.supernet.mixed import MixedCellNet

        space = Space.from_dict(ck["space"], source=str(path))
        k = ck["model"].get("body.stage0_cell0.edges.1<-0.nor_conv_1x1.conv.weight")
        weighting = ck.get("config", {}).get("method", {}).get("weighting", "softmax")
        partial = space.channels // k.shape[0] if k is not None else 1
        net = MixedCellNet(space, weighting=weighting, partial_channels=max(1, partial))
    else:
        raise CheckpointError(f"checkpoint {path} holds a {kind!r}, not a model or a supernet")
    try:
        net.load_state_dict(ck["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint {path}: its weights do not fit its network ({first})") from None
    return net.eval()


__all__ = ["CellNet", "ChainNet", "build", "load"]
