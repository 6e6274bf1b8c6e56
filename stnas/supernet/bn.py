"""BatchNorm recalibration: an architecture's own BN statistics in a weight-sharing supernet."""
from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch
from torch import nn


@torch.no_grad()
def recalibrate_bn(net: nn.Module, arch, batches: Iterable[torch.Tensor]) -> int:
    """Recompute the BatchNorm running statistics of ``arch``'s active modules as exact averages over
    ``batches`` (inputs only), leaving every other module untouched. Returns the images seen.

    Shared BN statistics are a mix over every architecture sampled during training; an architecture's
    own statistics are needed for its accuracy to mean anything (SPOS, Guo et al. 2020, and ST-NAS).
    """
    bns = [m for mod in net.active_modules(arch) for m in mod.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [(bn.momentum, bn.training) for bn in bns]
    was_training = net.training
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: the exact mean over the batches
    net.eval()
    for bn in bns:
        bn.train()
    seen = 0
    try:
        for x in batches:
            net(x, arch)
            seen += x.shape[0]
    finally:
        for bn, (momentum, training) in zip(bns, saved):
            bn.momentum = momentum
            bn.train(training)
        net.train(was_training)
    return seen


@contextlib.contextmanager
def recalibrated(net: nn.Module, batches: Iterable[torch.Tensor]):
    """Inside the block, every BatchNorm of ``net`` holds statistics recomputed as exact averages over
    ``batches`` (``net(x)`` in training mode, no gradient); on exit the running statistics the training
    had are put back, so scoring leaves the run unchanged (exact resume).

    A mixed or gated supernet whose ops are pruned during training carries running statistics that mix
    the networks it has been; its eval-mode accuracy means little until they are its own."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(bn.momentum, {k: v.clone() for k, v in bn.state_dict().items()}) for bn in bns]
    was_training = net.training
    try:
        with torch.no_grad():
            for bn in bns:
                bn.reset_running_stats()
                bn.momentum = None
            net.train()
            for x in batches:
                net(x)
        net.eval()
        yield net
    finally:
        for bn, (momentum, state) in zip(bns, saved):
            bn.momentum = momentum
            bn.load_state_dict(state)
        net.train(was_training)
