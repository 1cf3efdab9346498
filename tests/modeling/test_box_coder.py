"""Tests of the (dx, dy, dw, dh) box coder (detectron2's Box2BoxTransform)."""

from __future__ import annotations

import math

import pytest
import torch

from tensormask.config import LossConfig
from tensormask.modeling.box_coder import DEFAULT_SCALE_CLAMP, Box2BoxTransform

W = (1.5, 1.5, 0.75, 0.75)


def test_default_weights_are_the_configs():
    assert Box2BoxTransform().weights == LossConfig().bbox_reg_weights == W
    assert DEFAULT_SCALE_CLAMP == pytest.approx(math.log(62.5))


def test_get_deltas_hand_computed():
    coder = Box2BoxTransform(W)
    # src: w 10, h 20, centre (5, 10); tgt: w 10, h 40, centre (7, 24)
    # src: w 40, h 20, centre (30, 20); tgt: w 20, h 5, centre (10, 17.5)
    src = torch.tensor([[0.0, 0.0, 10.0, 20.0], [10.0, 10.0, 50.0, 30.0]], dtype=torch.float64)
    tgt = torch.tensor([[2.0, 4.0, 12.0, 44.0], [0.0, 15.0, 20.0, 20.0]], dtype=torch.float64)
    expected = torch.tensor(
        [
            [1.5 * 2 / 10, 1.5 * 14 / 20, 0.0, 0.75 * math.log(2.0)],
            [1.5 * -20 / 40, 1.5 * -2.5 / 20, 0.75 * math.log(0.5), 0.75 * math.log(0.25)],
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(coder.get_deltas(src, tgt), expected)
    assert expected[0].tolist() == pytest.approx([0.3, 1.05, 0.0, 0.5198603854])
    torch.testing.assert_close(coder.apply_deltas(expected, src), tgt)


def test_unit_weights():
    coder = Box2BoxTransform((1.0, 1.0, 1.0, 1.0))
    src = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    tgt = torch.tensor([[1.0, 2.0, 9.0, 6.0]])  # centre (5, 4) vs (2, 2); w 8 vs 4; h 4 vs 4
    torch.testing.assert_close(coder.get_deltas(src, tgt), torch.tensor([[0.75, 0.5, math.log(2.0), 0.0]]))


def test_round_trip_random_boxes():
    g = torch.Generator().manual_seed(0)
    coder = Box2BoxTransform(W)

    def boxes(n):
        xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 500
        wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 290 + 10  # ratios < 62.5: no clamping
        return torch.cat([xy, xy + wh], dim=1)

    src, tgt = boxes(200), boxes(200)
    deltas = coder.get_deltas(src, tgt)
    torch.testing.assert_close(coder.apply_deltas(deltas, src), tgt, atol=1e-9, rtol=0)
    # and the other way: encode(decode(d)) = d for moderate deltas
    d = torch.randn(200, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(coder.get_deltas(src, coder.apply_deltas(d, src)), d, atol=1e-9, rtol=0)


def test_apply_deltas_clamps_scale():
    coder = Box2BoxTransform(W)
    src = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    out = coder.apply_deltas(torch.tensor([[0.0, 0.0, 100.0, 0.0]]), src)
    # width 10·exp(log(1000/16)) = 625 around centre x = 5; height unchanged
    torch.testing.assert_close(out, torch.tensor([[5 - 312.5, 0.0, 5 + 312.5, 20.0]]))
    assert torch.isfinite(coder.apply_deltas(torch.full((1, 4), 1e4), src)).all()


def test_apply_deltas_several_boxes_per_row_and_dtype():
    coder = Box2BoxTransform(W)
    src = torch.tensor([[0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 9.0, 7.0]])
    d = torch.randn(2, 8)
    out = coder.apply_deltas(d, src)
    assert out.shape == (2, 8)
    torch.testing.assert_close(out[:, 4:], coder.apply_deltas(d[:, 4:], src))
    assert coder.apply_deltas(d.half(), src).dtype == torch.float32  # computed in float32, as detectron2


def test_shape_errors():
    coder = Box2BoxTransform(W)
    with pytest.raises(ValueError):
        coder.get_deltas(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError):
        coder.apply_deltas(torch.zeros(3, 5), torch.zeros(3, 4))
    with pytest.raises(ValueError):
        Box2BoxTransform((1.0, 1.0, 1.0))
