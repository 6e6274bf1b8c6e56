"""Shared fixtures: which (device, backend) pairs exist here, and the float64 yardsticks.

Without a GPU the Triton kernels run on CPU tensors through Triton's interpreter; TRITON_INTERPRET must
be set before the kernels' module is first imported, which stnas does lazily, so setting it here works.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from stnas.ops import _backend  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
_BACKENDS_BY_DEVICE = {"cpu": ("reference", "cpp", "triton"), "cuda": ("reference", "cuda", "triton")}


def device_backend_params(op: str):
    """pytest params (device, backend) for every backend of ``op`` on every device, skipped with the
    reason when it cannot run here."""
    params = []
    for device_type in ("cpu", "cuda"):
        for backend in _BACKENDS_BY_DEVICE[device_type]:
            if device_type == "cuda" and not torch.cuda.is_available():
                why = "no CUDA device"
            else:
                why = _backend.unavailable_reason(op, backend, torch.device(device_type))
            marks = [pytest.mark.skip(reason=why)] if why else []
            params.append(pytest.param(device_type, backend, id=f"{device_type}-{backend}", marks=marks))
    return params


def relative_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    """||x - ref|| / ||ref|| in float64; NaN anywhere gives inf so it never passes."""
    x64, r64 = x.double().cpu(), ref.double().cpu()
    if not torch.isfinite(x64).all():
        return float("inf")
    denom = r64.norm().item()
    return (x64 - r64).norm().item() / (denom if denom > 0 else 1.0)


@pytest.fixture
def seeded():
    torch.manual_seed(1234)
    yield
