"""Mask targets of the positive windows, pinned cell by cell (detectron2's conventions, issue 20):
polygon annotations rasterised inside each window (pycocotools), RLE/bitmask annotations by RoIAlign
(aligned, adaptive sampling) then ≥ 0.5. Expected values come from plain formulas or from pycocotools
called directly on coordinates transformed by hand, never from our kernels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util

import tensormask  # noqa: F401  (registers torch.ops.tensormask.*)
from tensormask import ops
from tensormask.config import AssignConfig
from tensormask.data import Sample, hflip_sample, resize_sample
from tensormask.engine.trainer import to_model_inputs
from tensormask.modeling.heads import WindowGeometry
from tensormask.modeling.losses import window_index_table
from tensormask.modeling.targets import InstanceTargets, build_targets

H, W = 64, 96
STRIDES = (4, 8)
LEVELS = [(16, 24), (8, 12)]
SIZES = (11, 15)
# the tensor bipyramid: σ_VU = s_0 = 4 at every level, V = 2^k·V_0
GEOM = [[WindowGeometry(v * s, 4.0, v * s // 4) for v in SIZES] for s in STRIDES]

# A 15×10 px object: XYXY [40, 20, 55, 30] (centre (47.5, 25)). Level 0 (stride 4): size test
# 2·15 = 30 < 40 → fallback 40 ≥ 44 − 4 for the 44-px windows only (60 − 4 = 56 > 40); centrality
# (47.5 − 4x)² + (25 − 4y)² ≤ 16 holds at (y, x) = (6, 12), (7, 12), (6, 11); level 1: 88 − 8 > 40.
BOX = [40.0, 20.0, 55.0, 30.0]
POSITIVES = [(6, 11), (6, 12), (7, 12)]  # (y, x) at level 0, window size 0, in flat-index order


def targets_for(gt: InstanceTargets):
    return build_targets([gt], LEVELS, STRIDES, SIZES, GEOM, 3, AssignConfig(), None)


def positives(t) -> list[tuple[int, int, int, int]]:
    table = window_index_table(LEVELS, len(SIZES))
    return [tuple(table[int(w)].tolist()) for w in torch.nonzero(t.cls_target[0] >= 0).flatten() if t.cls_target[0, w] < 3]


def rect_mask(x0, y0, x1, y1) -> torch.Tensor:
    m = torch.zeros(1, H, W, dtype=torch.bool)
    m[0, y0:y1, x0:x1] = True
    return m


def coverage(lo: float, hi: float, start: float, n: int, step: float = 4.0) -> np.ndarray:
    """Fraction of each of n cells [start + i·step, start + (i+1)·step) covered by [lo, hi)."""
    a = start + step * np.arange(n)
    return np.clip(np.minimum(a + step, hi) - np.maximum(a, lo), 0, None) / step


def pycocotools_raster(coords: list[float], V: int, U: int) -> np.ndarray:
    rle = mask_util.merge(mask_util.frPyObjects([np.asarray(coords, dtype=np.float64)], V, U))
    return mask_util.decode(rle).astype(np.float32)


def test_assignment_of_the_small_object_by_hand():
    t = targets_for(InstanceTargets(rect_mask(40, 20, 55, 30), torch.tensor([BOX]), torch.tensor([1])))
    assert positives(t) == [(0, 0, y, x) for y, x in POSITIVES]
    assert t.mask_target[0][0].shape == (3, 11, 11)
    assert all(t.mask_target[k][a] is None for k in range(2) for a in range(2) if (k, a) != (0, 0))


def test_bitmask_targets_are_roi_align_fractions():
    """An RLE/bitmask rectangle [40, 55) × [20, 30): with σ = 4 and window edges on whole pixels
    (centre 4x, half side 22), cell (v, u) of the window at (4y, 4x) averages the 16 pixels of
    [4x − 22 + 4u, +4) × [4y − 22 + 4v, +4), i.e. the product of the per-axis covered fractions;
    foreground iff ≥ 0.5 (detectron2's BitMasks.crop_and_resize)."""
    t = targets_for(InstanceTargets(rect_mask(40, 20, 55, 30), torch.tensor([BOX]), torch.tensor([1])))
    got = t.mask_target[0][0].numpy()
    for p, (y, x) in enumerate(POSITIVES):
        fy = coverage(20, 30, 4 * y - 22, 11)
        fx = coverage(40, 55, 4 * x - 22, 11)
        expected = (np.outer(fy, fx) >= 0.5).astype(np.float32)
        np.testing.assert_array_equal(got[p], expected, err_msg=f"window {(y, x)}")
    # the window at (24, 48): columns u = 3 (pixels 38..41: half) and 4..6 (full), u = 7 a quarter;
    # rows v = 4 (half), 5..6 (full): 3·3 + 2 = 11 cells
    assert got[1].sum() == 11
    assert got[1][4:7, 4:7].all() and got[1][5:7, 3].all() and not got[1][4, 3] and not got[1][:, 7].any()


def test_bitmask_targets_average_each_cell_ragged_mask():
    """A ragged mask inside the 15×10 box: each cell is the mean of its 4×4 image pixels (all inside
    the image for these windows) ≥ 0.5 — not the old single bilinear sample at the cell's centre."""
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(1, H, W, dtype=torch.bool)
    mask[0, 20:30, 40:55] = torch.rand(10, 15, generator=g) < 0.55
    got = targets_for(InstanceTargets(mask, torch.tensor([BOX]), torch.tensor([1]))).mask_target[0][0].numpy()
    m = mask[0].numpy().astype(np.float64)
    differs = 0
    for p, (y, x) in enumerate(POSITIVES):
        x0, y0 = 4 * x - 22, 4 * y - 22
        block = m[y0:y0 + 44, x0:x0 + 44].reshape(11, 4, 11, 4).mean(axis=(1, 3))
        np.testing.assert_array_equal(got[p], (block >= 0.5).astype(np.float32), err_msg=f"window {(y, x)}")
        # the old rule: one bilinear sample at pixel-index (y0 + 4v + 1.5, x0 + 4u + 1.5)
        centre = 0.25 * (m[y0 + 1:y0 + 44:4, x0 + 1:x0 + 44:4] + m[y0 + 2:y0 + 44:4, x0 + 1:x0 + 44:4]
                         + m[y0 + 1:y0 + 44:4, x0 + 2:x0 + 44:4] + m[y0 + 2:y0 + 44:4, x0 + 2:x0 + 44:4])
        differs += int(((centre >= 0.5) != (block >= 0.5)).sum())
    assert differs > 0


def test_polygon_targets_are_rasterised_in_the_window():
    """A polygon instance: its polygon shifted by the window's top-left corner and scaled by
    V / 44 = 1/4, rasterised at 11×11 by pycocotools (detectron2's rasterize_polygons_within_box)."""
    poly = np.array([40.0, 20.0, 55.0, 20.0, 55.0, 30.0, 40.0, 30.0])
    gt = InstanceTargets(rect_mask(40, 20, 55, 30), torch.tensor([BOX]), torch.tensor([1]), None, [[poly]])
    got = targets_for(gt).mask_target[0][0].numpy()
    # window (y, x) = (6, 12): box [26, 2, 70, 46] → corners (40 − 26)/4 = 3.5, (55 − 26)/4 = 7.25,
    # (20 − 2)/4 = 4.5, (30 − 2)/4 = 7
    np.testing.assert_array_equal(got[1], pycocotools_raster([3.5, 4.5, 7.25, 4.5, 7.25, 7.0, 3.5, 7.0], 11, 11))
    for p, (y, x) in enumerate(POSITIVES):
        x0, y0 = 4 * x - 22, 4 * y - 22
        shifted = [(40 - x0) / 4, (20 - y0) / 4, (55 - x0) / 4, (20 - y0) / 4, (55 - x0) / 4, (30 - y0) / 4,
                   (40 - x0) / 4, (30 - y0) / 4]
        np.testing.assert_array_equal(got[p], pycocotools_raster(shifted, 11, 11), err_msg=f"window {(y, x)}")


def test_grid_aligned_polygon_is_exact():
    """A polygon rectangle with corners on the windows' 4-px grid (x ≡ y ≡ 2 mod 4): the target is
    exactly the cells it covers. [38, 54) × [18, 30) in the window at (24, 48), box [26, 70) × [2, 46):
    columns (38 − 26)/4 = 3 .. (54 − 26)/4 = 7 (exclusive), rows 4 .. 7 (exclusive)."""
    poly = np.array([38.0, 18.0, 54.0, 18.0, 54.0, 30.0, 38.0, 30.0])
    gt = InstanceTargets(rect_mask(38, 18, 54, 30), torch.tensor([[38.0, 18.0, 54.0, 30.0]]), torch.tensor([0]),
                         None, [[poly]])
    out = ops.crop_polygons([[poly]], torch.tensor([0]), torch.tensor([[24.0, 48.0]]), 4.0, 11, 11)
    expected = torch.zeros(11, 11)
    expected[4:7, 3:7] = 1
    assert torch.equal(out[0], expected)
    # the bitmask of the same rectangle gives the same cells (whole 4×4 blocks)
    crop = ops.crop_windows(gt.masks, torch.tensor([0]), torch.tensor([[24.0, 48.0]]), 4.0, 11, 11)
    assert torch.equal(crop[0], expected)


def test_mixed_polygon_and_rle_instances_keep_their_order():
    """Two objects in one image, one polygon and one RLE: each window gets its own instance's rule."""
    poly = np.array([40.0, 20.0, 55.0, 20.0, 55.0, 30.0, 40.0, 30.0])
    masks = torch.cat([rect_mask(40, 20, 55, 30), rect_mask(10, 40, 25, 50)])
    boxes = torch.tensor([BOX, [10.0, 40.0, 25.0, 50.0]])
    mixed = targets_for(InstanceTargets(masks, boxes, torch.tensor([1, 2]), None, [[poly], None]))
    rle_only = targets_for(InstanceTargets(masks, boxes, torch.tensor([1, 2])))
    poly_only = targets_for(InstanceTargets(masks, boxes, torch.tensor([1, 2]), None,
                                            [[poly], [np.array([10.0, 40.0, 25.0, 40.0, 25.0, 50.0, 10.0, 50.0])]]))
    assert torch.equal(mixed.pos_index, rle_only.pos_index)
    owner = mixed.cls_target[0][mixed.cls_target[0] >= 0]
    owner = owner[owner < 3]  # class 1 = the polygon object, 2 = the RLE one, in flat-index order
    got = mixed.mask_target[0][0]
    assert torch.equal(got[owner == 1], poly_only.mask_target[0][0][owner == 1])
    assert torch.equal(got[owner == 2], rle_only.mask_target[0][0][owner == 2])
    assert not torch.equal(got[owner == 1], rle_only.mask_target[0][0][owner == 1])  # the rules differ here


def test_flipped_and_resized_sample_keeps_polygon_targets_exact():
    """Through the data pipeline: a polygon object resized ×2 and flipped; the targets equal pycocotools
    on coordinates transformed by hand (x·2 → W' − x, y·2), and the GT box is the transformed bbox."""
    h, w = 32, 48
    poly = np.array([20.0, 10.0, 27.5, 10.0, 27.5, 15.0, 20.0, 15.0])  # 7.5×5 px at the original size
    mask = torch.zeros(1, h, w, dtype=torch.bool)
    mask[0, 10:15, 20:28] = True
    s = Sample(image=torch.zeros(3, h, w, dtype=torch.uint8), masks=mask, boxes=torch.tensor([[20.0, 10.0, 27.5, 15.0]]),
               labels=torch.tensor([0]), crowd_masks=torch.zeros(0, h, w, dtype=torch.bool), image_id=1,
               file_name="x", orig_size=(h, w), polygons=[[poly]])
    s = hflip_sample(resize_sample(s, H, W))
    _, (gt,) = to_model_inputs([s])
    assert gt.boxes.tolist() == [[96 - 55.0, 20.0, 96 - 40.0, 30.0]]  # [41, 20, 56, 30]
    t = targets_for(gt)
    flipped = [96 - 40.0, 20.0, 96 - 55.0, 20.0, 96 - 55.0, 30.0, 96 - 40.0, 30.0]
    table = positives(t)
    assert len(table) > 0
    for p, (_, _, y, x) in enumerate(table):
        x0, y0 = 4 * x - 22, 4 * y - 22
        shifted = [(v - (x0 if i % 2 == 0 else y0)) / 4 for i, v in enumerate(flipped)]
        np.testing.assert_array_equal(t.mask_target[0][0][p].numpy(), pycocotools_raster(shifted, 11, 11))


def test_crop_polygons_arguments():
    poly = [np.array([0.0, 0.0, 4.0, 0.0, 4.0, 4.0])]
    with pytest.raises(ValueError, match="sigma_vu"):
        ops.crop_polygons([poly], torch.tensor([0]), torch.zeros(1, 2), 0.0, 4, 4)
    with pytest.raises(ValueError, match="no polygons"):
        ops.crop_polygons([None], torch.tensor([0]), torch.zeros(1, 2), 1.0, 4, 4)
    with pytest.raises(ValueError, match="centers"):
        ops.crop_polygons([poly], torch.tensor([0]), torch.zeros(2, 2), 1.0, 4, 4)
    assert ops.crop_polygons([poly], torch.zeros(0, dtype=torch.int64), torch.zeros(0, 2), 1.0, 4, 5).shape == (0, 4, 5)
