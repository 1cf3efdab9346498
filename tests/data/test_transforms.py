"""Transforms: flip/resize consistency of image, masks, crowd masks, boxes and polygons (boxes and
polygons mapped as coordinates, as detectron2's transforms do); determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tensormask.data import (
    CocoDataset,
    RandomHorizontalFlip,
    ResizeShortestEdge,
    Sample,
    build_transforms,
    hflip_sample,
    masks_to_boxes,
    resize_sample,
    synthetic,
)
from tensormask.data.transforms import resized_shape


def make_sample(h=30, w=40, seed=0) -> Sample:
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(3, h, w, dtype=torch.bool)
    masks[0, 2:9, 3:17] = True
    masks[1, 10:25, 20:39] = torch.rand(15, 19, generator=g) > 0.3  # irregular
    masks[2, 26:27, 0:2] = True  # one pixel high: vanishes when shrunk
    crowd = torch.zeros(1, h, w, dtype=torch.bool)
    crowd[0, 20:30, 0:10] = True
    return Sample(
        image=torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g),
        masks=masks,
        boxes=masks_to_boxes(masks),
        labels=torch.tensor([0, 2, 1]),
        crowd_masks=crowd,
        image_id=7,
        file_name="x.png",
        orig_size=(h, w),
        ann_ids=torch.tensor([100, 101, 102]),
    )


def test_hflip_is_consistent_and_exact():
    s = make_sample()
    f = hflip_sample(s)
    w = s.image_size[1]
    assert f.flipped and torch.equal(f.image, s.image.flip(-1))
    assert torch.equal(f.masks, s.masks.flip(-1)) and torch.equal(f.crowd_masks, s.crowd_masks.flip(-1))
    assert torch.equal(f.boxes, masks_to_boxes(f.masks))  # flipped boxes are still tight
    assert torch.equal(f.boxes[:, 0], w - s.boxes[:, 2]) and torch.equal(f.boxes[:, 2], w - s.boxes[:, 0])
    assert torch.equal(f.boxes[:, 1::2], s.boxes[:, 1::2])
    ff = hflip_sample(f)
    assert not ff.flipped and torch.equal(ff.image, s.image) and torch.equal(ff.boxes, s.boxes)


def test_upscale_by_two_is_exact_nearest():
    s = make_sample()
    r = ResizeShortestEdge(60, max_size=1000)(s)
    assert r.image_size == (60, 80) and r.scale == 2.0 and r.scale_xy == (2.0, 2.0)
    expected = s.masks.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    assert torch.equal(r.masks, expected)
    assert torch.equal(r.crowd_masks, s.crowd_masks.repeat_interleave(2, 1).repeat_interleave(2, 2))
    assert torch.equal(r.boxes, s.boxes * 2)
    assert torch.equal(r.labels, s.labels) and torch.equal(r.ann_ids, s.ann_ids)
    assert r.image.dtype == torch.uint8 and r.orig_size == (30, 40)


def scaled(boxes, sx, sy, h, w, flip_w=None) -> torch.Tensor:
    """Plain formula: x·sx, y·sy in float64, clipped to [0, w] × [0, h], then x → W − x if flipped."""
    b = boxes.double() * torch.tensor([sx, sy, sx, sy], dtype=torch.float64)
    b = torch.minimum(b.clamp(min=0), torch.tensor([w, h, w, h], dtype=torch.float64)).float()
    if flip_w is not None:
        b = torch.stack([flip_w - b[:, 2], b[:, 1], flip_w - b[:, 0], b[:, 3]], dim=1)
    return b


def test_downscale_drops_vanished_masks_and_scales_boxes():
    s = make_sample()
    r = resize_sample(s, 10, 13)
    assert r.image_size == (10, 13)
    assert r.ann_ids.tolist() == [100, 101]  # the one-pixel-high (bitmask) instance vanished
    assert r.labels.tolist() == [0, 2]
    assert r.masks.flatten(1).any(1).all()
    # boxes are the original boxes times 13/40 (x) and 10/30 (y), not the tight boxes of the masks
    assert torch.equal(r.boxes, scaled(s.boxes[:2], 13 / 40, 10 / 30, 10, 13))
    assert r.boxes[0].tolist() == pytest.approx([3 * 13 / 40, 2 / 3, 17 * 13 / 40, 3.0])


def test_bbox_through_resize_and_flip_hand_computed():
    """A bbox [x, y, w, h] = [10.5, 4, 15, 10] in a 30×40 image → XYXY [10.5, 4, 25.5, 14]; resized to
    45×60 (×1.5) → [15.75, 6, 38.25, 21]; flipped in the 60-wide image → [21.75, 6, 44.25, 21]."""
    from tensormask.data.structures import xywh_to_xyxy

    box = xywh_to_xyxy([10.5, 4, 15, 10], 30, 40)
    assert box.tolist() == [10.5, 4.0, 25.5, 14.0]
    assert xywh_to_xyxy([-2, 25, 50, 10], 30, 40).tolist() == [0.0, 25.0, 40.0, 30.0]  # clipped to the image
    s = make_sample().replace(boxes=torch.tensor([[10.5, 4, 25.5, 14], [0, 0, 40, 30], [35, 20, 41.5, 31]]))
    r = resize_sample(s, 45, 60)
    assert r.boxes.tolist() == [[15.75, 6.0, 38.25, 21.0], [0.0, 0.0, 60.0, 45.0], [52.5, 30.0, 60.0, 45.0]]
    f = hflip_sample(r)
    assert f.boxes.tolist() == [[21.75, 6.0, 44.25, 21.0], [0.0, 0.0, 60.0, 45.0], [0.0, 30.0, 7.5, 45.0]]


def test_polygons_through_resize_and_flip():
    """Polygons are carried as coordinates: x·sx, y·sy (float64), then x → W − x; an instance whose
    bitmask vanishes keeps its polygons and stays (detectron2 keeps non-empty polygon instances)."""
    s = make_sample()
    tri = np.array([3.0, 2.0, 17.0, 2.0, 10.0, 9.0])
    sliver = np.array([0.0, 26.0, 2.0, 26.0, 2.0, 27.0, 0.0, 27.0])
    s = s.replace(polygons=[[tri], None, [sliver]])
    r = resize_sample(s, 10, 13)
    assert r.ann_ids.tolist() == [100, 101, 102]  # the polygon sliver survives, its bitmask is empty
    assert not r.masks[2].any()
    sx, sy = 13 / 40, 10 / 30
    np.testing.assert_array_equal(r.polygons[0][0], [3 * sx, 2 * sy, 17 * sx, 2 * sy, 10 * sx, 9 * sy])
    assert r.polygons[1] is None
    np.testing.assert_array_equal(r.polygons[2][0], [0, 26 * sy, 2 * sx, 26 * sy, 2 * sx, 27 * sy, 0, 27 * sy])
    f = hflip_sample(r)
    np.testing.assert_array_equal(f.polygons[0][0], [13 - 3 * sx, 2 * sy, 13 - 17 * sx, 2 * sy, 13 - 10 * sx, 9 * sy])
    assert s.polygons[0][0].tolist() == tri.tolist()  # inputs untouched
    # an empty box drops the instance whatever its mask
    e = s.replace(boxes=torch.tensor([[3.0, 2, 3, 9], [20, 10, 39, 25], [0, 26, 2, 27]]))
    assert resize_sample(e, 60, 80).ann_ids.tolist() == [101, 102]


def test_sample_validates_polygons():
    s = make_sample()
    with pytest.raises(ValueError, match="polygons"):
        s.replace(polygons=[None, None])
    with pytest.raises(ValueError, match=r"polygons\[0\]"):
        s.replace(polygons=[[np.array([1.0, 2.0, 3.0, 4.0])], None, None])  # two points
    with pytest.raises(ValueError, match=r"polygons\[1\]"):
        s.replace(polygons=[None, [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]], None])  # not an array


def test_resized_shape_rule():
    assert resized_shape(30, 40, 60, 1000) == (60, 80, 2.0)
    assert resized_shape(30, 40, 60, 60) == (45, 60, 1.5)  # longer side capped
    assert resized_shape(480, 640, 800, 1333) == (800, 1067, 800 / 480)
    assert resized_shape(640, 480, 800, 1333)[:2] == (1067, 800)


def test_transforms_are_deterministic_given_a_generator():
    s = make_sample()
    t = build_transforms(True, min_size_train=(20, 60), max_size=100)

    def run(seed):
        return t(s, torch.Generator().manual_seed(seed))

    a, b = run(3), run(3)
    assert a.image_size == b.image_size and a.flipped == b.flipped
    assert torch.equal(a.image, b.image) and torch.equal(a.masks, b.masks) and torch.equal(a.boxes, b.boxes)
    outcomes = {(run(k).image_size, run(k).flipped) for k in range(20)}
    assert len({o[0] for o in outcomes}) > 3 and {o[1] for o in outcomes} == {True, False}
    for k in range(10):
        o = run(k)
        assert 20 <= min(o.image_size) <= 60 and max(o.image_size) <= 100
        h, w = o.image_size
        expected = scaled(s.boxes, w / 40, h / 30, h, w, flip_w=w if o.flipped else None)
        assert torch.equal(o.boxes, expected[torch.isin(s.ann_ids, o.ann_ids)])


def test_test_transform_and_validation():
    s = make_sample()
    t = build_transforms(False, min_size_test=45, max_size=100)
    assert t(s).image_size == (45, 60) and not t(s).flipped
    assert RandomHorizontalFlip(1.0)(s).flipped and not RandomHorizontalFlip(0.0)(s).flipped
    assert ResizeShortestEdge((32, 48, 64), 100, "choice").sample_short_edge(torch.Generator().manual_seed(0)) in (
        32,
        48,
        64,
    )
    with pytest.raises(ValueError):
        ResizeShortestEdge((60, 20), 100)
    with pytest.raises(ValueError):
        ResizeShortestEdge(200, 100)
    with pytest.raises(ValueError):
        RandomHorizontalFlip(1.5)


def test_dataset_seeded_transforms_are_reproducible(tmp_path):
    synthetic.generate(tmp_path, 3, seed=5, config="demo")
    kw = dict(transform=build_transforms(True, (64, 96), 128), seed=11)
    ds1 = CocoDataset(tmp_path / "annotations.json", tmp_path / "images", **kw)
    ds2 = CocoDataset(tmp_path / "annotations.json", tmp_path / "images", **kw)
    for i in range(3):
        a, b = ds1[i], ds2[i]
        assert torch.equal(a.image, b.image) and torch.equal(a.masks, b.masks) and a.flipped == b.flipped
        assert 64 <= min(a.image_size) <= 96 and max(a.image_size) <= 128
        raw = ds1.load(i)
        h, w = a.image_size
        expected = scaled(raw.boxes, w / raw.image_size[1], h / raw.image_size[0], h, w, flip_w=w if a.flipped else None)
        assert torch.equal(a.boxes, expected[torch.isin(raw.ann_ids, a.ann_ids)])  # the bbox, not the mask box
        assert a.scale == pytest.approx(min(a.image_size) / min(a.orig_size), rel=0.02)
    draws = set()
    for epoch in range(6):
        ds1.set_epoch(epoch)
        s = ds1[0]
        draws.add((s.image_size, s.flipped))
    assert len(draws) > 1
    # per-axis scale maps the resized masks' boxes back onto the original ones
    raw = ds1.load(0)
    s = CocoDataset(
        tmp_path / "annotations.json",
        tmp_path / "images",
        transform=build_transforms(False, min_size_test=64, max_size=128),
    )[0]
    sx, sy = s.scale_xy
    back = s.boxes / torch.tensor([sx, sy, sx, sy])
    keep = np.isin(raw.ann_ids.numpy(), s.ann_ids.numpy())
    assert (back - raw.boxes[torch.from_numpy(keep)]).abs().max() <= 2.0 / min(sx, sy) + 1
