"""Transforms: flip/resize consistency of image, masks, crowd masks and tight boxes; determinism."""

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


def test_downscale_drops_vanished_masks_and_keeps_boxes_tight():
    s = make_sample()
    r = resize_sample(s, 10, 13)
    assert r.image_size == (10, 13)
    assert r.ann_ids.tolist() == [100, 101]  # the one-pixel-high instance vanished
    assert r.labels.tolist() == [0, 2]
    assert r.masks.flatten(1).any(1).all()
    assert torch.equal(r.boxes, masks_to_boxes(r.masks))
    # boxes map back to roughly the original boxes
    sx, sy = r.scale_xy
    back = r.boxes / torch.tensor([sx, sy, sx, sy])
    assert (back - s.boxes[:2]).abs().max() <= 3.5


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
        assert torch.equal(o.boxes, masks_to_boxes(o.masks))


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
        assert torch.equal(a.boxes, masks_to_boxes(a.masks))
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
