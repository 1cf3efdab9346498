"""The assembled TensorMask: training losses computed at positive windows only equal the dense
path, for every mask head; inference returns well-formed detections."""

from __future__ import annotations

import pytest
import torch

from tensormask.config import BackboneConfig, FPNConfig, HeadConfig, ModelConfig
from tensormask.modeling.losses import tensormask_losses
from tensormask.modeling.targets import InstanceTargets, build_targets
from tensormask.modeling.tensormask import TensorMask


def tiny_model(mask_head: str, **head) -> TensorMask:
    cfg = ModelConfig(
        backbone=BackboneConfig(depth=0, norm="GN", gn_groups=4, freeze_at=0, tiny_channels=(8, 16, 16, 16)),
        fpn=FPNConfig(out_channels=16, max_level=5, size_divisibility=32),
        head=HeadConfig(num_classes=3, num_convs=1, cls_channels=8, bbox_channels=8, mask_channels=8,
                        mask_head=mask_head, **head),
    )
    torch.manual_seed(0)
    model = TensorMask(cfg).double()
    for p in model.head.parameters():  # non-trivial mask logits
        torch.nn.init.normal_(p, std=0.2)
    return model


def scene():
    masks = torch.zeros(3, 96, 128, dtype=torch.bool)
    masks[0, 10:50, 20:70] = True
    masks[1, 30:90, 40:120] = True
    masks[1, 10:50, 20:70] = False  # occluded by object 0
    masks[2, 60:80, 5:25] = True
    ys = [torch.nonzero(m.any(1)).squeeze(1) for m in masks]
    xs = [torch.nonzero(m.any(0)).squeeze(1) for m in masks]
    boxes = torch.tensor([[x[0], y[0], x[-1] + 1, y[-1] + 1] for x, y in zip(xs, ys)], dtype=torch.float64)
    image = torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    return image, InstanceTargets(masks, boxes, torch.tensor([0, 1, 2]))


HEADS = [
    ("bipyramid", {}),
    ("simple_natural", {}),
    ("simple_aligned", {}),
    ("upscale_natural", {"upscale_lambda": 3, "window_sizes": (9, 15)}),
    ("upscale_aligned", {"upscale_lambda": 3, "window_sizes": (9, 15)}),
    ("upscale_aligned", {"upscale_lambda": 3, "window_sizes": (9, 15), "interpolation": "nearest"}),
]


@pytest.mark.parametrize("mask_head,extra", HEADS)
def test_sparse_training_losses_equal_dense(mask_head, extra):
    model = tiny_model(mask_head, **extra)
    model.train()
    image, gt = scene()
    batch, _ = model.preprocess([image, image.flip(-1)])
    batch = batch.double()
    gts = [gt, InstanceTargets(gt.masks.flip(-1), torch.stack([128 - gt.boxes[:, 2], gt.boxes[:, 1], 128 - gt.boxes[:, 0], gt.boxes[:, 3]], 1), gt.labels)]
    dense = model.run_heads(batch, dense_masks=True)
    levels = [tuple(x.shape[-2:]) for x in dense.cls_logits]
    targets = build_targets(gts, levels, model.strides, model.head.window_sizes, model.head.window_geometry(model.strides),
                            3, model.cfg.assign, model.box_coder)
    assert targets.num_positive > 0
    ld = tensormask_losses(dense, targets, model.cfg.loss)
    gd = torch.autograd.grad(ld["loss_mask"], list(model.head.parameters()), allow_unused=True)
    sparse = model.run_heads(batch, dense_masks=False)
    assert sparse.mask_logits is None
    ls = tensormask_losses(sparse, targets, model.cfg.loss,
                           window_mask_logits=lambda k, a, w: model.head.window_mask_logits(sparse.mask_features, k, a, w))
    gs = torch.autograd.grad(ls["loss_mask"], list(model.head.parameters()), allow_unused=True)
    for key in ld:
        torch.testing.assert_close(ls[key], ld[key], rtol=1e-10, atol=1e-12)
    for a, b in zip(gs, gd):
        if a is None or b is None:
            assert a is None and b is None or (a if a is not None else b).abs().max() == 0
        else:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("mask_head,extra", HEADS[:3])
def test_inference_detections_are_well_formed(mask_head, extra):
    model = tiny_model(mask_head, **extra).float().eval()
    image, _ = scene()
    model.cfg.inference.score_thresh = 0.0
    (det,) = model([image], output_sizes=[(192, 256)])
    d = det["boxes"].shape[0]
    assert 0 < d <= model.cfg.inference.detections_per_image
    assert det["masks"].shape == (d, 192, 256) and det["masks"].dtype == torch.bool
    assert det["labels"].min() >= 0 and det["labels"].max() < 3
    assert torch.all(det["scores"][:-1] >= det["scores"][1:])
    assert det["boxes"][:, 2].max() <= 256 and det["boxes"][:, 3].max() <= 192


@pytest.mark.parametrize("mask_head,extra", HEADS[:3])
def test_channels_last_inference_equals_default(mask_head, extra):
    model = tiny_model(mask_head, **extra).eval()
    image, _ = scene()
    model.cfg.inference.score_thresh = 0.0
    with torch.inference_mode():
        (ref,) = model([image])
        model.cfg.inference.channels_last = True
        (out,) = model([image])
    assert out.keys() == ref.keys()
    for key in ("labels", "masks"):
        assert torch.equal(out[key], ref[key]), key
    for key in ("boxes", "scores"):
        torch.testing.assert_close(out[key], ref[key], rtol=1e-12, atol=1e-12)
