"""The test-time resize of detectron2's ``ResizeShortestEdge(800, 1333)`` (docs/parity.md): output sizes
by hand, pixels against PIL directly (detectron2's ``ResizeTransform.apply_image`` on uint8)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tensormask.data.transforms import resize_image, resized_shape
from tensormask.engine import inference


@pytest.mark.parametrize("h,w,expected", [
    (480, 640, (800, 1067)),    # 640·800/480 = 1066.67
    (427, 640, (800, 1199)),    # 640·800/427 = 1199.06
    (640, 480, (1067, 800)),
    (500, 375, (1067, 800)),    # 500·800/375 = 1066.67
    (800, 1333, (800, 1333)),
    (600, 1000, (800, 1333)),   # 1333.33 > 1333: ·1333/1333.33 → 799.8 × 1333
    (1000, 100, (1333, 133)),   # 8000 × 800 capped: ·1333/8000 → 1333 × 133.3
    (801, 1201, (800, 1200)),   # 1201·800/801 = 1199.5006
    (352, 704, (666, 1333)),    # 800 × 1600 capped: 1600 computed as 800/352·704 = 1600.0000000000002,
                                # so 800·1333/1600.0000000000002 = 666.4999999999999 → 666 (not 667)
    (298, 596, (667, 1333)),    # 800/298·596 = 1600 exactly: 666.5 → 667
])
def test_resized_shape_follows_detectron2(h, w, expected):
    assert resized_shape(h, w, 800, 1333)[:2] == expected


def test_resized_shape_is_detectron2s_formula():
    """Its float operations in its order, for every size of a grid (a plain transcription of
    ``ResizeShortestEdge.get_output_shape``)."""
    def d2(oldh, oldw, short_edge_length, max_size):
        size = short_edge_length * 1.0
        scale = size / min(oldh, oldw)
        if oldh < oldw:
            newh, neww = size, scale * oldw
        else:
            newh, neww = scale * oldh, size
        if max(newh, neww) > max_size:
            scale = max_size * 1.0 / max(newh, neww)
            newh, neww = newh * scale, neww * scale
        return int(newh + 0.5), int(neww + 0.5)

    for h in range(200, 1000, 7):
        for w in range(150, 3000, 11):
            assert resized_shape(h, w, 800, 1333)[:2] == d2(h, w, 800, 1333), (h, w)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A photo-like HWC uint8 image: smooth gradients, edges and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    base = np.stack([128 + 100 * np.sin(xx / 17 + yy / 23), 255 * (xx / max(w - 1, 1)), 255 * ((xx // 9 + yy // 9) % 2)], -1)
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("h,w,nh,nw", [(96, 128, 160, 213), (120, 90, 80, 60), (61, 47, 100, 30), (50, 70, 50, 93),
                                       (33, 200, 17, 100), (7, 5, 1, 1)])
def test_resize_image_is_pil_bilinear(h, w, nh, nw):
    a = _image(h, w)
    want = np.asarray(Image.fromarray(a).resize((nw, nh), Image.BILINEAR))
    got = resize_image(torch.from_numpy(a).permute(2, 0, 1), nh, nw)
    assert got.dtype == torch.uint8 and got.shape == (3, nh, nw)
    assert np.array_equal(got.permute(1, 2, 0).numpy(), want)


def test_test_transform_gives_detectron2s_size_and_pixels():
    """The path of ``tensormask predict``/``eval`` and the Python API (engine/inference.py)."""
    a = _image(120, 90, seed=1)
    image = torch.from_numpy(a).permute(2, 0, 1).contiguous()
    out = inference.resize_for_test(image, inference.test_transform(80, 1333))
    nh, nw = resized_shape(120, 90, 80, 1333)[:2]
    assert (nh, nw) == (107, 80)  # 120·80/90 = 106.67
    assert np.array_equal(out.permute(1, 2, 0).numpy(), np.asarray(Image.fromarray(a).resize((nw, nh), Image.BILINEAR)))
