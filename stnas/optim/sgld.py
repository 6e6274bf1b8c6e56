"""Stochastic Gradient Langevin Dynamics (Welling & Teh, ICML 2011) over the fused ``sgld_step`` op.

ST-NAS samples the supernet's shared weights with SGLD so that an architecture's proxy score averages
over a posterior rather than one point estimate. The update of each parameter is

    p <- p - lr * (grad + weight_decay * p) + sqrt(2 * lr * T / N) * xi,   xi ~ N(0, 1)

with temperature T and dataset size N (the 1/N scales the noise of a per-example-mean loss to the
posterior's), optionally with heavy-ball momentum on the gradient term. With T = 0 it is exactly
``torch.optim.SGD(lr, momentum, weight_decay)`` (no dampening, no Nesterov).

The noise is keyed by (seed, step, parameter index): the same seed replays the same run, and the step
counter lives in the param groups so ``state_dict``/``load_state_dict`` resume the noise stream.
"""
from __future__ import annotations

import math

import torch

from stnas.ops.sgld_step import run_sgld_step, validate_sgld_step_args


class SGLD(torch.optim.Optimizer):
    """SGLD with momentum and weight decay; one fused launch per param group.

    Args:
        params: iterable of float32 parameters or param-group dicts.
        lr: step size.
        momentum: heavy-ball momentum in [0, 1).
        weight_decay: L2 coefficient.
        temperature: T; 0 turns the noise off (plain SGD).
        dataset_size: N, the number of training examples behind the mean loss.
        seed: key of the noise stream.
        noise_without_grad: give parameters without a gradient the noise alone (default: skip them).
        backend: force a backend of ``stnas.ops.sgld_step`` (default: automatic).
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 temperature: float = 0.0, dataset_size: int = 1, seed: int = 0,
                 noise_without_grad: bool = False, backend: str | None = None):
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr >= 0):
            raise ValueError(f"SGLD: lr must be a finite number >= 0, got {lr!r}")
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
            raise ValueError(f"SGLD: temperature must be a finite number >= 0, got {temperature!r}")
        if isinstance(dataset_size, bool) or not isinstance(dataset_size, int) or dataset_size < 1:
            raise ValueError(f"SGLD: dataset_size must be an int >= 1, got {dataset_size!r}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"SGLD: momentum must lie in [0, 1), got {momentum!r}")
        if weight_decay < 0:
            raise ValueError(f"SGLD: weight_decay must be >= 0, got {weight_decay!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise ValueError(f"SGLD: seed must be an int in [0, 2^63), got {seed!r}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, temperature=temperature,
                        dataset_size=dataset_size, seed=seed, step=0, noise_without_grad=noise_without_grad)
        self.backend = backend
        super().__init__(params, defaults)
        # Param groups whose tensors were checked: the checks run on a group's first step (and after a
        # change of its tensors), not on every step, where they cost more than the fused kernel.
        self._checked: dict[int, tuple] = {}

    @staticmethod
    def noise_std(group: dict) -> float:
        """sqrt(2 * lr * T / N) of a param group."""
        return math.sqrt(2.0 * group["lr"] * group["temperature"] / group["dataset_size"])

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        index = 0  # global position of each parameter: the noise index, stable across groups
        for group in self.param_groups:
            params = group["params"]
            indices = list(range(index, index + len(params)))
            index += len(params)
            momenta = None
            if group["momentum"] > 0:
                momenta = []
                for p in params:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    momenta.append(state["momentum_buffer"])
            grads = [p.grad for p in params]
            kwargs = dict(lr=group["lr"], weight_decay=group["weight_decay"], momentum=group["momentum"],
                          sigma=self.noise_std(group), seed=group["seed"], step=group["step"], indices=indices)
            signature = (tuple(map(id, params)), tuple(g is None or g.dtype for g in grads))
            if self._checked.get(id(group)) != signature:
                validate_sgld_step_args(params, grads, momenta, **kwargs)
                self._checked[id(group)] = signature
            run_sgld_step(params, grads, momenta, noise_without_grad=group["noise_without_grad"],
                          backend=self.backend, **kwargs)
            group["step"] += 1
        return loss
