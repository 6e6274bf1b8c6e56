"""Fast ops of stnas, each registered with ``torch.library`` and dispatched to the best backend.

- :func:`sgld_step`: fused multi-tensor SGLD update with in-register Philox noise.
- :func:`masked_path_sum`: ``sum_k mask_k * w_k * y_k`` that never reads masked-off paths.
- :func:`batch_norm_act`: training-mode BatchNorm + addend + activation in one fused op, and
  :class:`BatchNormAct2d`, its drop-in ``nn.BatchNorm2d`` subclass.

:func:`last_backend` says which backend ran an op's latest call; :func:`available_backends` which can.
"""
from stnas.ops._backend import BACKENDS, available_backends, last_backend
from stnas.ops.batch_norm_act import (
    BatchNormAct2d,
    batch_norm_act,
    batch_norm_act_backward_reference,
    batch_norm_act_forward_reference,
)
from stnas.ops.masked_path_sum import (
    masked_path_sum,
    masked_path_sum_backward_reference,
    masked_path_sum_forward_reference,
)
from stnas.ops.philox import philox_normal
from stnas.ops.sgld_step import sgld_step, sgld_step_reference

__all__ = [
    "BACKENDS",
    "BatchNormAct2d",
    "available_backends",
    "batch_norm_act",
    "batch_norm_act_backward_reference",
    "batch_norm_act_forward_reference",
    "last_backend",
    "masked_path_sum",
    "masked_path_sum_backward_reference",
    "masked_path_sum_forward_reference",
    "philox_normal",
    "sgld_step",
    "sgld_step_reference",
]
