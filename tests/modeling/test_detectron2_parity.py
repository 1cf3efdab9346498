"""Inference conventions shared with detectron2's TensorMask (issue 20, docs/parity.md), pinned with
values computed by hand:

* inputs are zero-padded to a multiple of 32 (the res5 stride), not 2^max_level; P6/P7 round up;
* NMS runs on the unclipped boxes, the top ``detections_per_image`` are kept, then the boxes are scaled
  to the output size, clipped to it, and empty boxes (width or height ≤ 0) are dropped.
"""

from __future__ import annotations

import pytest
import torch

from tensormask.config import BackboneConfig, FPNConfig, HeadConfig, InferenceConfig, ModelConfig
from tensormask.modeling.postprocess import clip_and_drop_empty, postprocess, select_detections
from tensormask.modeling.targets import InstanceTargets
from tensormask.modeling.tensormask import TensorMask


def tiny_model(max_level: int = 7, mask_head: str = "bipyramid", **head) -> TensorMask:
    cfg = ModelConfig(
        backbone=BackboneConfig(depth=0, norm="GN", gn_groups=4, freeze_at=0, tiny_channels=(8, 16, 16, 16)),
        fpn=FPNConfig(out_channels=16, max_level=max_level),  # default size_divisibility: 32
        head=HeadConfig(num_classes=3, num_convs=1, cls_channels=8, bbox_channels=8, mask_channels=8,
                        mask_head=mask_head, **head),
    )
    torch.manual_seed(0)
    model = TensorMask(cfg)
    for p in model.head.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return model


# ---- padding --------------------------------------------------------------------------------------------


def test_default_padding_is_32():
    assert FPNConfig().size_divisibility == 32


@pytest.mark.parametrize("size,padded", [
    # ⌈h / 32⌉·32 by hand
    ((352, 528), (352, 544)),    # 528 = 16.5·32 → 17·32
    ((800, 1333), (800, 1344)),  # COCO: 1333 → 42·32 = 1344 (896×1408 with the old 128)
    ((801, 1201), (832, 1216)),  # 801 → 26·32, 1201 → 38·32
    ((32, 33), (32, 64)),
])
def test_preprocess_pads_to_multiples_of_32(size, padded):
    model = tiny_model()
    batch, sizes = model.preprocess([torch.full((3, *size), 7, dtype=torch.uint8)])
    assert tuple(batch.shape) == (1, 3, *padded) and sizes == [size]
    assert torch.equal(batch[0, :, size[0] - 1, size[1] - 1], (7 - model.pixel_mean.view(3)) / model.pixel_std.view(3))
    assert batch[0, :, size[0]:].abs().sum() == 0 and batch[0, :, :, size[1]:].abs().sum() == 0


def test_batch_pads_to_the_largest_image():
    model = tiny_model()
    batch, sizes = model.preprocess([torch.zeros(3, 70, 90, dtype=torch.uint8), torch.zeros(3, 100, 33, dtype=torch.uint8)])
    assert tuple(batch.shape) == (2, 3, 128, 96) and sizes == [(70, 90), (100, 33)]


HEADS = [("bipyramid", {}), ("simple_aligned", {}), ("upscale_natural", {"upscale_lambda": 3, "window_sizes": (9, 15)})]


@pytest.mark.parametrize("mask_head,extra", HEADS)
def test_forward_on_32_but_not_128_divisible_input(mask_head, extra):
    # 70×90 pads to 96×96: P2..P5 24, 12, 6, 3; P6 = ⌈3/2⌉ = 2, P7 = ⌈2/2⌉ = 1 (stride-2 convs, padding 1).
    model = tiny_model(mask_head=mask_head, **extra)
    image = torch.randint(0, 256, (3, 70, 90), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    batch, _ = model.preprocess([image])
    out = model.run_heads(batch, dense_masks=True)
    assert [tuple(x.shape[-2:]) for x in out.cls_logits] == [(24, 24), (12, 12), (6, 6), (3, 3), (2, 2), (1, 1)]
    for k, row in enumerate(out.mask_logits):
        for a, m in enumerate(row):
            assert tuple(m.shape[-2:]) == tuple(out.cls_logits[k].shape[-2:]), (k, a)
            assert m.shape[1] == model.head.output_size(k, a)
    # sparse decoding of a P7 window equals the dense logits there
    sparse = model.run_heads(batch, dense_masks=False)
    rows = torch.tensor([[0, 0, 0]])
    torch.testing.assert_close(model.head.window_mask_logits(sparse.mask_features, 5, 1, rows)[0],
                               out.mask_logits[5][1][0, :, :, 0, 0])
    # training (label assignment on the rounded-up grids) and inference run
    model.train()
    masks = torch.zeros(1, 70, 90, dtype=torch.bool)
    masks[0, 5:65, 10:80] = True
    losses = model([image], [InstanceTargets(masks, torch.tensor([[10.0, 5.0, 80.0, 65.0]]), torch.tensor([1]))])
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    model.cfg.inference.score_thresh = 0.0
    (det,) = model([image])
    assert det["boxes"].shape[0] > 0 and det["masks"].shape[1:] == (70, 90)


# ---- NMS, then clip, then drop empty boxes --------------------------------------------------------------


def test_clip_and_drop_empty_by_hand():
    boxes = torch.tensor([[-5.0, -5.0, 10.0, 10.0],   # → [0, 0, 10, 10], kept
                          [-20.0, 0.0, 0.0, 8.0],     # → width 0, dropped
                          [95.0, 10.0, 120.0, 20.0],  # → [95, 10, 100, 20]
                          [101.0, 10.0, 130.0, 20.0], # → [100, 10, 100, 20], dropped
                          [5.0, 49.0, 6.0, 60.0],     # → [5, 49, 6, 50]
                          [5.0, 3.0, 5.0, 9.0],       # zero width inside the image, dropped
                          [float("nan"), 0.0, 4.0, 4.0]])
    clipped, keep = clip_and_drop_empty(boxes, 50, 100)
    assert keep.tolist() == [True, False, True, False, True, False, False]
    assert clipped[keep].tolist() == [[0, 0, 10, 10], [95, 10, 100, 20], [5, 49, 6, 50]]


def test_nms_runs_on_unclipped_boxes():
    # A = [-22, -22, 22, 22], B = [-14, -22, 30, 22] (both class 0, A first):
    #   unclipped IoU = 36·44 / (2·44² − 36·44) = 1584 / 2288 = 0.692
    #   clipped to the image: [0, 0, 22, 22] vs [0, 0, 30, 22], IoU = 484 / 660 = 0.733
    boxes = torch.tensor([[-22.0, -22.0, 22.0, 22.0], [-14.0, -22.0, 30.0, 22.0]])
    scores, labels = torch.tensor([0.9, 0.8]), torch.tensor([0, 0])
    keep, out = select_detections(boxes, scores, labels, 0.7, 100, (64, 96), (64, 96))
    assert keep.tolist() == [0, 1]  # 0.692 ≤ 0.7: both survive (clipping first would suppress B)
    assert out.tolist() == [[0, 0, 22, 22], [0, 0, 30, 22]]
    # A' = [-33, -22, 11, 22], B' = [-25, -22, 19, 22]: unclipped IoU 0.692 again, clipped
    # [0, 0, 11, 22] vs [0, 0, 19, 22] = 242 / 418 = 0.579
    boxes = torch.tensor([[-33.0, -22.0, 11.0, 22.0], [-25.0, -22.0, 19.0, 22.0]])
    keep, out = select_detections(boxes, scores, labels, 0.65, 100, (64, 96), (64, 96))
    assert keep.tolist() == [0]  # 0.692 > 0.65: B' suppressed (clipping first would keep it)
    assert out.tolist() == [[0, 0, 11, 22]]


def test_top_k_is_taken_before_dropping_empty_boxes():
    # three classes, no suppression; the best box lies outside the image: detections_per_image=2
    # keeps the first two NMS survivors, of which one is then dropped → a single detection.
    boxes = torch.tensor([[-30.0, 0.0, -2.0, 10.0], [0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    keep, out = select_detections(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 1, 2]), 0.5, 2, (40, 40), (40, 40))
    assert keep.tolist() == [1] and out.tolist() == [[0, 0, 10, 10]]


def test_boxes_are_scaled_then_clipped_to_the_output_size():
    # input 40×60 → output 80×90: x ·1.5, y ·2, then clipped to [0, 90] × [0, 80]
    boxes = torch.tensor([[-4.0, 30.0, 50.0, 50.0], [58.0, 2.0, 70.0, 6.0]])
    keep, out = select_detections(boxes, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]), 0.5, 100, (40, 60), (80, 90))
    assert keep.tolist() == [0, 1]
    assert out.tolist() == [[0, 60, 75, 80], [87, 4, 90, 12]]


def _model_with_outputs(nms_thresh: float):
    """A P2–P5 model on a 64×96 input whose class logits pick chosen windows (level 0, stride 4,
    window size 11 → side 44 px) and whose box deltas translate them by t·44 px (dx = 1.5·t)."""
    model = tiny_model(max_level=5).eval()
    model.cfg.inference = InferenceConfig(nms_thresh=nms_thresh)
    batch, _ = model.preprocess([torch.zeros(3, 64, 96, dtype=torch.uint8)])
    with torch.no_grad():
        out = model.run_heads(batch, dense_masks=False)
    for x in out.cls_logits:
        x.fill_(-30.0)
    for x in out.box_deltas:
        x.zero_()
    return model, out


def _pick(out, y, x, cls, logit, tx=0.0, a=0, k=3):
    out.cls_logits[0][0, a * k + cls, y, x] = logit
    out.box_deltas[0][0, a * 4, y, x] = 1.5 * tx


def test_postprocess_nms_then_clip_then_drop_empty():
    model, out = _model_with_outputs(nms_thresh=0.7)
    _pick(out, 0, 0, 0, 3.0)            # A [-22, -22, 22, 22]
    _pick(out, 0, 2, 0, 2.0)            # B [-14, -22, 30, 22]: IoU(A, B) = 0.692 unclipped, kept
    _pick(out, 4, 0, 1, 1.0, tx=-0.5)   # centre x −22: [-44, -6, 0, 38] → width 0 after clipping, dropped
    _pick(out, 8, 10, 2, 0.5)           # [18, 10, 62, 54] → [18, 10, 62, 54]
    (det,) = postprocess(model, out, [(64, 96)])
    assert det["labels"].tolist() == [0, 0, 2]
    assert det["boxes"].tolist() == [[0, 0, 22, 22], [0, 0, 30, 22], [18, 10, 62, 54]]
    torch.testing.assert_close(det["scores"], torch.sigmoid(torch.tensor([3.0, 2.0, 0.5])))
    assert det["masks"].shape == (3, 64, 96)
    # at twice the size: scaled, then clipped to 128×192
    (det2,) = postprocess(model, out, [(64, 96)], [(128, 192)])
    assert det2["boxes"].tolist() == [[0, 0, 44, 44], [0, 0, 60, 44], [36, 20, 124, 108]]


def test_postprocess_suppresses_by_unclipped_iou():
    model, out = _model_with_outputs(nms_thresh=0.65)
    _pick(out, 0, 0, 0, 3.0, tx=-0.25)  # A' [-33, -22, 11, 22]
    _pick(out, 0, 2, 0, 2.0, tx=-0.25)  # B' [-25, -22, 19, 22]: unclipped IoU 0.692 > 0.65 → suppressed
    (det,) = postprocess(model, out, [(64, 96)])
    assert det["boxes"].tolist() == [[0, 0, 11, 22]]


@pytest.mark.parametrize("nms_on", ["box", "mask_box"])
def test_detections_never_contain_empty_boxes(nms_on):
    model = tiny_model(max_level=5).eval()
    model.cfg.inference = InferenceConfig(score_thresh=0.0, nms_on=nms_on)
    image = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        (det,) = model([image], output_sizes=[(25, 35)])
    b = det["boxes"]
    assert b.shape[0] > 0
    assert torch.all(b[:, 2] > b[:, 0]) and torch.all(b[:, 3] > b[:, 1])
    assert b.min() >= 0 and torch.all(b[:, 2] <= 35) and torch.all(b[:, 3] <= 25)
    assert det["masks"].shape == (b.shape[0], 25, 35)


def test_exported_network_with_p6_p7_on_32_divisible_inputs():
    # dynamic H, W in multiples of 32 with the rounded-up P6/P7: 160×352 → P6 ⌈2.5⌉×⌈5.5⌉ = 3×6,
    # P7 ⌈1.25⌉×⌈2.75⌉ = 2×3 (torch.export specialises sizes of 1, so every level keeps ≥ 2 here)
    from tensormask.modeling.heads import HeadOutputs
    from tensormask.modeling.torch_export import export_network

    model = tiny_model().double().eval()
    program = export_network(model, torch.randn(2, 3, 224, 288, dtype=torch.float64))
    batch = torch.randn(1, 3, 160, 352, dtype=torch.float64)
    got = HeadOutputs(*program.module()(batch))
    with torch.no_grad():
        want = model.run_heads(batch, dense_masks=False)
    assert [tuple(x.shape[-2:]) for x in got.cls_logits][-2:] == [(3, 6), (2, 3)]
    for g, w in zip(got.cls_logits + got.mask_features, want.cls_logits + want.mask_features):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-12)
