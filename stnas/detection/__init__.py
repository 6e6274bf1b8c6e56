"""Detection with a searched backbone: torchvision's Faster R-CNN + FPN (and RetinaNet) over the
:class:`~stnas.supernet.resnet.ResNetNet` supernet, trained single-path and scored by COCO AP
(pycocotools). Needs the detection requirements (``pip install -r requirements-detection.txt``):
:func:`require_detection` says so in one line when they are missing; nothing here is imported by the
rest of stnas unless a detection task is asked for."""
from __future__ import annotations

REQUIREMENTS = "pip install -r requirements-detection.txt (torch==2.14.1, torchvision==0.29.1, pycocotools==2.0.11)"


class DetectionUnavailable(ValueError):
    """torchvision's detection ops or pycocotools cannot run in this environment."""


def detection_missing() -> str | None:
    """Why detection cannot run here (None when it can)."""
    try:
        import torchvision  # noqa: F401
        from torchvision.ops import nms
        import torch

        nms(torch.zeros(1, 4), torch.zeros(1), 0.5)  # a torchvision built for another torch fails here
    except Exception as e:  # ImportError, or RuntimeError: operator torchvision::nms does not exist
        return f"torchvision's detection ops are unavailable ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    try:
        import pycocotools  # noqa: F401
    except ImportError:
        return "pycocotools is not installed"
    return None


def require_detection() -> None:
    why = detection_missing()
    if why is not None:
        raise DetectionUnavailable(f"--task detection needs torchvision and pycocotools: {why}; {REQUIREMENTS}")
