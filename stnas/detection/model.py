"""The detectors: torchvision's Faster R-CNN + FPN and RetinaNet, with the ResNet supernet (or a
standalone ResNet) of :mod:`stnas.supernet.resnet` as their backbone.

:class:`SupernetFPN` is the backbone torchvision's detectors take (``forward(images)`` -> an ordered
dict of pyramid levels, ``out_channels``): the four stage outputs C2..C5 of the architecture in
:attr:`SupernetFPN.arch`, through torchvision's ``FeaturePyramidNetwork`` with a max-pooled extra
level (P2..P6, as ``fasterrcnn_resnet50_fpn``). The architecture is set before every call
(:func:`set_arch`): a trainer draws one per step, a scorer one per validation batch.

Sizes are ours to choose for small images and the CPU (``DetectorConfig``): anchors of 8..128 px on
P2..P6 for the 64 px demo images, a narrow FPN and box head; on COCO use the torchvision defaults
(anchors 32..512, FPN and head width 256, 1024-d box head, images resized to 800..1333).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from torch import nn
from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from stnas.supernet.resnet import ResNetNet


@dataclass
class DetectorConfig:
    detector: str = "faster_rcnn"     # or "retinanet"
    min_size: int = 64                # images are resized so their short side is this (torchvision: 800)
    max_size: int = 64                # ... and their long side at most this (torchvision: 1333)
    anchor_sizes: tuple[int, ...] = (8, 16, 32, 64, 128)  # one per pyramid level P2..P6
    fpn_channels: int = 32            # torchvision: 256
    box_head: int = 128               # the box head's hidden width (torchvision: 1024)
    rpn_pre_nms_train: int = 300
    rpn_post_nms_train: int = 150
    rpn_pre_nms_test: int = 150
    rpn_post_nms_test: int = 75
    rpn_batch: int = 64               # anchors sampled per image for the RPN loss (torchvision: 256)
    box_batch: int = 64               # proposals sampled per image for the box loss (torchvision: 512)
    detections: int = 30              # detections kept per image (COCO: 100)

    @classmethod
    def for_resolution(cls, resolution: int, detector: str = "faster_rcnn") -> "DetectorConfig":
        """Small images (a space's resolution up to 128 px, the demo's 64): the small sizes above, images
        kept at that size; larger: torchvision's COCO settings (800..1333 px, anchors 32..512, width 256)."""
        if resolution <= 128:
            return cls(detector=detector, min_size=resolution, max_size=resolution)
        return cls(detector=detector, min_size=800, max_size=1333, anchor_sizes=(32, 64, 128, 256, 512),
                   fpn_channels=256, box_head=1024, rpn_pre_nms_train=2000, rpn_post_nms_train=2000,
                   rpn_pre_nms_test=1000, rpn_post_nms_test=1000, rpn_batch=256, box_batch=512, detections=100)

    def __post_init__(self):
        if self.detector not in ("faster_rcnn", "retinanet"):
            raise ValueError(f"--detector must be faster_rcnn or retinanet, got {self.detector!r}")
        self.anchor_sizes = tuple(self.anchor_sizes)


class SupernetFPN(nn.Module):
    def __init__(self, body: ResNetNet, channels: int):
        super().__init__()
        if body.fc is not None:
            raise ValueError("SupernetFPN takes a backbone without a classifier: ResNetNet(space, head=False)")
        self.body = body
        self.fpn = FeaturePyramidNetwork(list(body.out_channels), channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = channels
        self.arch = body.arch

    def forward(self, x):
        feats = self.body.features(x, self.arch)
        return self.fpn(OrderedDict((str(k), f) for k, f in enumerate(feats)))


def build_detector(space, num_classes: int, cfg: DetectorConfig, arch=None) -> nn.Module:
    """A detector for ``num_classes`` categories (background excluded) whose backbone is the supernet
    of ``space`` (``arch`` None) or the standalone ResNet of ``arch``."""
    backbone = SupernetFPN(ResNetNet(space, arch, head=False), cfg.fpn_channels)
    sizes = tuple((s,) for s in cfg.anchor_sizes)
    if cfg.detector == "retinanet":
        # RetinaNet's usual three scales per octave, three aspect ratios
        anchors = AnchorGenerator(tuple((s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))) for s in cfg.anchor_sizes),
                                  ((0.5, 1.0, 2.0),) * len(sizes))
        return RetinaNet(backbone, num_classes + 1, min_size=cfg.min_size, max_size=cfg.max_size,
                         anchor_generator=anchors, detections_per_img=cfg.detections, topk_candidates=200)
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    head = TwoMLPHead(cfg.fpn_channels * 7 * 7, cfg.box_head)
    return FasterRCNN(backbone, min_size=cfg.min_size, max_size=cfg.max_size, rpn_anchor_generator=anchors,
                      rpn_head=RPNHead(cfg.fpn_channels, anchors.num_anchors_per_location()[0]),
                      rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_train, rpn_post_nms_top_n_train=cfg.rpn_post_nms_train,
                      rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_test, rpn_post_nms_top_n_test=cfg.rpn_post_nms_test,
                      rpn_batch_size_per_image=cfg.rpn_batch, box_batch_size_per_image=cfg.box_batch,
                      box_head=head, box_predictor=FastRCNNPredictor(cfg.box_head, num_classes + 1),
                      box_detections_per_img=cfg.detections)


def set_arch(detector: nn.Module, arch) -> None:
    """The architecture the detector's supernet backbone runs from now on."""
    detector.backbone.arch = arch
