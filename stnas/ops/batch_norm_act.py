"""BatchNorm2d fused with what follows it in our blocks: ``y = act(BN(x) + addend)``.

``act`` is ``"relu6"`` (MBConv's expand and depthwise convs, stems and heads), ``"relu"`` (ResNet and cell
blocks) or ``"none"`` (MBConv's linear projection, whose block input is the addend). The addend is added
*before* the activation, as ResNet's ``relu(bn(conv(x)) + shortcut)`` needs; with ``act="none"`` it is
MBConv's ``x + bn(conv(h))``.

Training mode normalises with the batch statistics, computed in float32 (float64 for float64 inputs)
whatever the input dtype, and updates the running statistics exactly as ``nn.BatchNorm2d`` does:
``running = (1 - momentum) * running + momentum * stat``, with the unbiased variance for
``running_var``. The caller passes the momentum it would give ``F.batch_norm`` (the module computes the
cumulative-average factor when its momentum is None and counts ``num_batches_tracked``). Eval mode
normalises with the running statistics.

Byte floor (N elements of s bytes): forward reads x twice (statistics, then normalisation) and writes y
(reads the addend once more when given): (3 [+1]) * N * s. Backward reads grad_y, x (and y when there
is an activation) twice (reduction, then gradient) and writes grad_x (and grad_addend):
(2 * (2 [+1]) + 1 [+1]) * N * s. Each backend computes the same four passes.

This file holds the PyTorch reference, the input checks, the ``torch.library`` ops
``stnas::batch_norm_act_forward`` (mutates the running statistics) / ``stnas::batch_norm_act_backward``
with fake implementations, the autograd formula and the dispatch to the C++, Triton and CUDA kernels.
"""
from __future__ import annotations

import torch
from torch import nn

from stnas.ops import _backend

ACTS = ("none", "relu", "relu6")
ACT_CODES = {name: i for i, name in enumerate(ACTS)}  # the kernels' act argument
_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
# float64 is for gradcheck and references: the reference runs it, the kernels take the three below.
_KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_OP = "batch_norm_act"


def _choose(device: torch.device, dtype: torch.dtype, backend: str) -> str:
    if dtype not in _KERNEL_DTYPES and backend in (None, "", "auto"):
        return "reference"
    chosen = _backend.choose(_OP, device, backend)
    if dtype not in _KERNEL_DTYPES and chosen != "reference":
        raise TypeError(f"stnas.ops.batch_norm_act: the {chosen} backend takes float32, bfloat16 or float16 "
                        f"input, got {dtype}; use backend='reference'")
    return chosen


def _per_channel(v: torch.Tensor) -> torch.Tensor:
    return v.view(1, -1, 1, 1)


def _activate(z: torch.Tensor, act: str) -> torch.Tensor:
    if act == "relu":
        return torch.relu(z)
    if act == "relu6":
        return torch.clamp(z, 0.0, 6.0)
    return z


def _act_grad(g: torch.Tensor, y: torch.Tensor | None, act: str) -> torch.Tensor:
    """grad of the pre-activation from the activation's output, as PyTorch's own backward masks it:
    relu passes where y > 0, relu6 (hardtanh) where 0 < y < 6."""
    if act == "relu":
        return g * (y > 0)
    if act == "relu6":
        return g * ((y > 0) & (y < 6))
    return g


def _like(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """t's values in x's dtype and exact strides (the kernels walk both tensors with x's layout; for
    C == 1 or H == W == 1 two tensors can both be 'contiguous' with different strides)."""
    return torch.empty_like(x).copy_(t)


def batch_norm_act_forward_reference(x, weight, bias, running_mean, running_var, addend, training, momentum,
                                     eps, act):
    """(y, mean, invstd): the definition in PyTorch ops, computed in float32 (float64 for float64 input);
    y in x's dtype and memory format, mean/invstd per channel in the accumulation dtype. Updates the
    running statistics in place in training mode."""
    acc = torch.promote_types(x.dtype, torch.float32)
    xf = x.to(acc)
    if training:
        mean = xf.mean((0, 2, 3))
        var = xf.var((0, 2, 3), unbiased=False)
    else:
        mean, var = running_mean.to(acc, copy=True), running_var.to(acc)  # mean is returned: never an alias
    invstd = torch.rsqrt(var + eps)
    scale = invstd if weight is None else invstd * weight.to(acc)
    shift = -mean * scale if bias is None else bias.to(acc) - mean * scale
    z = xf * _per_channel(scale) + _per_channel(shift)
    if addend is not None:
        z = z + addend.to(acc)
    y = _like(_activate(z, act), x)
    if training and running_mean is not None:
        m = x.numel() // x.shape[1]
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
            running_var.mul_(1 - momentum).add_((var * (m / (m - 1))).to(running_var.dtype), alpha=momentum)
    return y, mean, invstd


def batch_norm_act_backward_reference(grad_y, x, y, weight, mean, invstd, training, act, has_addend):
    """(grad_x, grad_weight, grad_bias, grad_addend); grad_addend is empty without an addend, the weight
    and bias gradients are per channel in the accumulation dtype."""
    acc = mean.dtype
    dz = _act_grad(grad_y.to(acc), None if y is None else y.to(acc), act)
    xmu = x.to(acc) - _per_channel(mean)
    sum_dz = dz.sum((0, 2, 3))
    sum_dz_xmu = (dz * xmu).sum((0, 2, 3))
    k = invstd if weight is None else invstd * weight.to(acc)
    if training:
        m = x.numel() // x.shape[1]
        dx = _per_channel(k) * (dz - _per_channel(sum_dz / m) - xmu * _per_channel(invstd * invstd * sum_dz_xmu / m))
    else:
        dx = dz * _per_channel(k)
    grad_addend = _like(dz, x) if has_addend else x.new_empty(0)
    return _like(dx, x), sum_dz_xmu * invstd, sum_dz, grad_addend


def _run_forward(backend, x, weight, bias, running_mean, running_var, addend, training, momentum, eps, act):
    if backend == "reference":
        return batch_norm_act_forward_reference(x, weight, bias, running_mean, running_var, addend, training,
                                                momentum, eps, act)
    if backend == "cpp":
        fn = _backend.compiled_module()[0].batch_norm_act_forward_cpu
    elif backend == "cuda":
        fn = _backend.compiled_module()[0].batch_norm_act_forward_cuda
    else:
        fn = _backend.triton_module(_OP)[0].batch_norm_act_forward
    return tuple(fn(x, weight, bias, running_mean, running_var, addend, training, momentum, eps, ACT_CODES[act]))


def _run_backward(backend, grad_y, x, y, weight, mean, invstd, training, act, has_addend):
    if backend == "reference":
        return batch_norm_act_backward_reference(grad_y, x, y, weight, mean, invstd, training, act, has_addend)
    if backend == "cpp":
        fn = _backend.compiled_module()[0].batch_norm_act_backward_cpu
    elif backend == "cuda":
        fn = _backend.compiled_module()[0].batch_norm_act_backward_cuda
    else:
        fn = _backend.triton_module(_OP)[0].batch_norm_act_backward
    return tuple(fn(grad_y, x, y, weight, mean, invstd, training, ACT_CODES[act], has_addend))


@torch.library.custom_op("stnas::batch_norm_act_forward", mutates_args=("running_mean", "running_var"))
def _forward_op(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                running_mean: torch.Tensor | None, running_var: torch.Tensor | None, addend: torch.Tensor | None,
                training: bool, momentum: float, eps: float, act: str, backend: str,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    chosen = _choose(x.device, x.dtype, backend)
    y, mean, invstd = _run_forward(chosen, x, weight, bias, running_mean, running_var, addend, training,
                                   momentum, eps, act)
    _backend.record(_OP, chosen)
    return y, mean, invstd


@_forward_op.register_fake
def _(x, weight, bias, running_mean, running_var, addend, training, momentum, eps, act, backend):
    acc = torch.promote_types(x.dtype, torch.float32)
    c = x.shape[1]
    return torch.empty_like(x), x.new_empty((c,), dtype=acc), x.new_empty((c,), dtype=acc)


@torch.library.custom_op("stnas::batch_norm_act_backward", mutates_args=())
def _backward_op(grad_y: torch.Tensor, x: torch.Tensor, y: torch.Tensor | None, weight: torch.Tensor | None,
                 mean: torch.Tensor, invstd: torch.Tensor, training: bool, act: str, has_addend: bool,
                 backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    chosen = _choose(x.device, x.dtype, backend)
    out = _run_backward(chosen, grad_y, x, y, weight, mean, invstd, training, act, has_addend)
    _backend.record(_OP + "_backward", chosen)
    return out


@_backward_op.register_fake
def _(grad_y, x, y, weight, mean, invstd, training, act, has_addend, backend):
    c = x.shape[1]
    return (torch.empty_like(x), mean.new_empty((c,)), mean.new_empty((c,)),
            torch.empty_like(x) if has_addend else x.new_empty(0))


class BatchNormActFunction(torch.autograd.Function):
    """Forward and backward of the fused op. Eager calls reach the chosen backend directly (the
    ``torch.library`` dispatch costs ~0.1 ms a call on the CPU, which a supernet pays at every BN of every
    step, as measured for masked_path_sum); compiled graphs record the two ops instead. The forward op
    mutates the running statistics, so its autograd lives here rather than in ``register_autograd``
    (which takes functional ops only)."""

    @staticmethod
    def forward(ctx, x, weight, bias, addend, running_mean, running_var, training, momentum, eps, act, backend):
        if torch.compiler.is_compiling():
            y, mean, invstd = _forward_op(x, weight, bias, running_mean, running_var, addend, training, momentum,
                                          eps, act, backend)
        else:
            chosen = _choose(x.device, x.dtype, backend)
            y, mean, invstd = _run_forward(chosen, x, weight, bias, running_mean, running_var, addend, training,
                                           momentum, eps, act)
            _backend.record(_OP, chosen)
        ctx.training, ctx.act, ctx.backend = training, act, backend
        ctx.has_addend = addend is not None
        ctx.weight_dtype = None if weight is None else weight.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        # y is saved only where the activation's gradient needs it (y is the next conv's input anyway).
        ctx.save_for_backward(x, y if act != "none" else None, weight, mean, invstd)
        ctx.mark_non_differentiable(mean, invstd)
        return y, mean, invstd

    @staticmethod
    def backward(ctx, grad_y, _grad_mean, _grad_invstd):
        x, y, weight, mean, invstd = ctx.saved_tensors
        grad_y = _backend.in_layout(grad_y, x.shape, x.stride(), x.dtype)
        if torch.compiler.is_compiling():
            dx, dw, db, da = _backward_op(grad_y, x, y, weight, mean, invstd, ctx.training, ctx.act, ctx.has_addend,
                                          ctx.backend)
        else:
            chosen = _choose(x.device, x.dtype, ctx.backend)
            dx, dw, db, da = _run_backward(chosen, grad_y, x, y, weight, mean, invstd, ctx.training, ctx.act,
                                           ctx.has_addend)
            _backend.record(_OP + "_backward", chosen)
        dw = None if ctx.weight_dtype is None else dw.to(ctx.weight_dtype)
        db = None if ctx.bias_dtype is None else db.to(ctx.bias_dtype)
        return dx, dw, db, (da if ctx.has_addend else None), None, None, None, None, None, None, None


def _check_vector(name: str, v, c: int, device: torch.device) -> None:
    if v is None:
        return
    if not isinstance(v, torch.Tensor) or not v.is_floating_point():
        raise TypeError(f"stnas.ops.batch_norm_act: {name} must be a floating-point tensor, got "
                        f"{v.dtype if isinstance(v, torch.Tensor) else type(v).__name__}")
    if v.shape != (c,):
        raise ValueError(f"stnas.ops.batch_norm_act: {name} must have shape ({c},) (one per channel), "
                         f"got {tuple(v.shape)}")
    if v.device != device:
        raise ValueError(f"stnas.ops.batch_norm_act: {name} is on {v.device} but x is on {device}")


def batch_norm_act(
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    running_mean: torch.Tensor | None = None,
    running_var: torch.Tensor | None = None,
    addend: torch.Tensor | None = None,
    *,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    act: str = "relu6",
    backend: str | None = None,
) -> torch.Tensor:
    """``act(batch_norm(x) + addend)``, differentiable in x, weight, bias and addend.

    Args:
        x: (N, C, H, W) float32/bfloat16/float16 (float64 on the reference), contiguous or channels_last.
        weight, bias: per-channel affine parameters (C,), or None (no affine).
        running_mean, running_var: (C,) float32 buffers, updated in place in training mode; may be None in
            training mode (no running statistics), needed in eval mode.
        addend: a tensor of x's shape and dtype added before the activation (a residual), or None.
        training: normalise with the batch statistics (and update the running ones) or with the running ones.
        momentum: the running statistics' update factor, as ``F.batch_norm`` takes it.
        act: ``"relu6"``, ``"relu"`` or ``"none"``.
        backend: ``"auto"`` (default), ``"cuda"``, ``"triton"``, ``"cpp"`` or ``"reference"``.
    Returns:
        y with x's shape, dtype and memory format.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"stnas.ops.batch_norm_act: x must be a tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"stnas.ops.batch_norm_act: x must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    if x.dtype not in _DTYPES:
        raise TypeError(f"stnas.ops.batch_norm_act: x must be float32, bfloat16, float16 or float64, got {x.dtype}")
    if act not in ACTS:
        raise ValueError(f"stnas.ops.batch_norm_act: act must be one of {ACTS}, got {act!r}")
    c = x.shape[1]
    for name, v in (("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)):
        _check_vector(name, v, c, x.device)
    if (running_mean is None) != (running_var is None):
        raise ValueError("stnas.ops.batch_norm_act: give both running_mean and running_var, or neither")
    if not training and running_mean is None:
        raise ValueError("stnas.ops.batch_norm_act: eval mode (training=False) needs running_mean and running_var")
    if training and x.numel() // max(c, 1) <= 1:
        raise ValueError("stnas.ops.batch_norm_act: training needs more than one value per channel, got input "
                         f"of shape {tuple(x.shape)}")
    if addend is not None:
        if not isinstance(addend, torch.Tensor) or addend.shape != x.shape or addend.dtype != x.dtype \
                or addend.device != x.device:
            got = (f"{addend.dtype} {tuple(addend.shape)} on {addend.device}" if isinstance(addend, torch.Tensor)
                   else type(addend).__name__)
            raise ValueError(f"stnas.ops.batch_norm_act: addend must match x ({x.dtype} {tuple(x.shape)} on "
                             f"{x.device}), got {got}")
    if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
        x = x.contiguous()
    if addend is not None and addend.stride() != x.stride():
        addend = _like(addend, x)
    y, _, _ = BatchNormActFunction.apply(x, weight, bias, addend, running_mean, running_var, bool(training),
                                         float(momentum), float(eps), act, backend or "auto")
    return y


class BatchNormAct2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` followed by an activation, with an optional addend before it, in one fused op.

    A drop-in for ``nn.BatchNorm2d`` (+ ``nn.ReLU6``/``nn.ReLU``): a subclass with the same parameters,
    buffers and state-dict keys (weight, bias, running_mean, running_var, num_batches_tracked), so
    checkpoints load either way and code that looks for ``nn.BatchNorm2d`` (BN recalibration, weight
    init) finds it. ``forward(x, addend=None)`` returns ``act(bn(x) + addend)``. The running statistics
    and ``num_batches_tracked`` are updated exactly as ``nn.BatchNorm2d`` updates them (momentum=None:
    the cumulative average). Inputs the fused op does not take (not 4-D, an addend of another dtype) run
    the same computation in plain PyTorch ops.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, act: str = "relu6", backend: str | None = None,
                 device=None, dtype=None):
        if act not in ACTS:
            raise ValueError(f"BatchNormAct2d: act must be one of {ACTS}, got {act!r}")
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        self.act = act
        self.backend = backend

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, act={self.act}"

    def forward(self, x: torch.Tensor, addend: torch.Tensor | None = None) -> torch.Tensor:
        # nn.BatchNorm2d's own bookkeeping (torch/nn/modules/batchnorm.py), then one fused call.
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        running_mean = self.running_mean if track else None
        running_var = self.running_var if track else None
        if x.dim() != 4 or x.dtype not in _DTYPES or (addend is not None and (
                addend.dtype != x.dtype or addend.shape != x.shape)):
            y = nn.functional.batch_norm(x, running_mean, running_var, self.weight, self.bias, use_batch,
                                         momentum, self.eps)
            return _activate(y if addend is None else y + addend, self.act)
        return batch_norm_act(x, self.weight, self.bias, running_mean, running_var, addend, training=use_batch,
                              momentum=momentum, eps=self.eps, act=self.act, backend=self.backend)
