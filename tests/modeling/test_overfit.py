"""Overfitting one synthetic image with three overlapping objects: the tiny TensorMask (tensor
bipyramid) must drive its loss down at least 10× and predict each object's mask with IoU ≥ 0.8."""

from __future__ import annotations

import torch

from tensormask.config import BackboneConfig, FPNConfig, HeadConfig, InferenceConfig, ModelConfig
from tensormask.modeling.targets import InstanceTargets
from tensormask.modeling.tensormask import TensorMask


def three_overlapping_objects():
    """A 128×128 image: a disk partly covering a rectangle, and a ring-like shape overlapping both;
    the masks are the visible parts."""
    yy, xx = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    rect = (yy >= 20) & (yy < 90) & (xx >= 15) & (xx < 75)
    disk = (yy - 70) ** 2 + (xx - 70) ** 2 < 30**2
    ring = ((yy - 40) ** 2 + (xx - 95) ** 2 < 24**2) & ((yy - 40) ** 2 + (xx - 95) ** 2 > 10**2)
    visible_ring = ring
    visible_disk = disk & ~ring
    visible_rect = rect & ~disk & ~ring
    masks = torch.stack([visible_rect, visible_disk, visible_ring])
    colours = torch.tensor([[200, 60, 40], [40, 180, 70], [50, 80, 220]], dtype=torch.float32)
    image = torch.full((3, 128, 128), 30.0) + 10 * torch.sin(xx / 5)[None]
    for m, c in zip(masks, colours):
        stripes = 1 + 0.2 * torch.sin((xx + yy) / 3)
        image = torch.where(m[None], c[:, None, None] * stripes, image)
    boxes = []
    for m in masks:
        ys, xs = torch.nonzero(m, as_tuple=True)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    gt = InstanceTargets(masks, torch.tensor(boxes, dtype=torch.float32), torch.tensor([0, 1, 2]))
    return image.clamp(0, 255).to(torch.uint8), gt


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum()) / float((a | b).sum())


def test_overfit_one_image():
    torch.manual_seed(0)
    cfg = ModelConfig(
        backbone=BackboneConfig(depth=0, norm="GN", gn_groups=8, freeze_at=0, tiny_channels=(16, 32, 64, 64),
                                style="torchvision", pixel_mean=(123.675, 116.28, 103.53),
                                pixel_std=(58.395, 57.12, 57.375), input_format="RGB"),
        fpn=FPNConfig(out_channels=32, max_level=5, size_divisibility=32),
        head=HeadConfig(num_classes=3, num_convs=2, cls_channels=32, bbox_channels=32, mask_channels=32, init="kaiming"),
        inference=InferenceConfig(score_thresh=0.05),
    )
    model = TensorMask(cfg)
    image, gt = three_overlapping_objects()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    model.train()
    first = None
    for it in range(200):
        losses = model([image], [gt])
        total = sum(losses.values())
        first = first if first is not None else total.item()
        optimizer.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
    last = total.item()
    assert last < first / 10, (first, last)
    model.eval()
    with torch.no_grad():
        (det,) = model([image])
    for k in range(3):
        best = max((iou(m, gt.masks[k]) for m, l in zip(det["masks"], det["labels"]) if l == k), default=0.0)
        assert best >= 0.8, (k, best)
