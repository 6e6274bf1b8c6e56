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


def colour_folder(root, classes: int, counts: dict, size: int, step: int):
    """An ImageFolder (``root/<split>/c<k>/<i>.jpg``) whose JPEGs' colour says the class, so a tiny
    network learns it in a few steps: ``counts`` images per class per split (``{"train": 8, "val": 3}``),
    ``size`` px square, class k's base colour ``(step k, 255 - step k, 128)`` plus N(0, 20) noise from one
    generator seeded 0, drawn in split, class, image order (the same bytes on every run)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in counts.items():
        for c in range(classes):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True)
            base = np.array([step * c, 255 - step * c, 128], np.float32)
            for i in range(n):
                img = np.clip(base + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / f"{i}.jpg", quality=90)
    return root
