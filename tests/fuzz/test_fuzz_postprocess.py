"""Fuzz tests of batched_nms and paste_masks against the slow references of ``tests/ops`` (the greedy
loop of the NMS definition; per-pixel bilinear pasting)."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

import tensormask  # noqa: F401  (registers torch.ops.tensormask.*)
from tensormask import ops

from ..ops.test_nms import nms_ref
from ..ops.test_paste_masks import assert_matches, paste_ref
from .counter import tick
from .strategies import expected_values, layouts, seeds, with_layout

half_grid = st.integers(-60, 240).map(lambda v: v / 2)


# ---- batched_nms -------------------------------------------------------------------------------------


@st.composite
def nms_cases(draw):
    R = draw(st.integers(0, 40))
    boxes = []
    for _ in range(R):
        if boxes and draw(st.integers(0, 5)) == 0:
            boxes.append(boxes[draw(st.integers(0, len(boxes) - 1))])  # exact duplicate
            continue
        x1, y1 = draw(half_grid), draw(half_grid)
        w, h = draw(st.integers(0, 80)) / 2, draw(st.integers(0, 80)) / 2  # zero-area boxes too
        boxes.append((x1, y1, x1 + w, y1 + h))
    scores = draw(st.lists(st.integers(0, 20).map(lambda v: v / 20), min_size=R, max_size=R))  # many ties
    idxs = draw(st.lists(st.integers(-2, 3), min_size=R, max_size=R))
    thr = draw(st.one_of(st.sampled_from([-0.5, 0.0, 0.3, 0.5, 0.7, 1.0]), st.floats(0, 1)))
    return boxes, scores, idxs, thr


@given(case=nms_cases(), box_dtype=st.sampled_from([torch.float32, torch.float64]),
       score_dtype=st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64]), layout=layouts)
def test_fuzz_batched_nms(case, box_dtype, score_dtype, layout):
    tick("batched_nms")
    boxes, scores, idxs, thr = case
    b = torch.tensor(boxes, dtype=box_dtype).reshape(-1, 4)
    s = torch.tensor(scores, dtype=score_dtype)
    i = torch.tensor(idxs, dtype=torch.int64)
    keep = ops.batched_nms(with_layout(b, "transposed" if layout != "contiguous" else layout),
                           with_layout(s, "sliced" if layout != "contiguous" else layout), i, thr)
    assert keep.dtype == torch.int64
    assert keep.tolist() == nms_ref(b, s, i, thr)


# ---- paste_masks -------------------------------------------------------------------------------------


@st.composite
def paste_cases(draw):
    P = draw(st.integers(0, 4))
    Mh, Mw = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    if draw(st.booleans()):
        Mw = Mh
    H, W = draw(st.integers(0, 20)), draw(st.integers(0, 20))
    coord = st.floats(-10, 30, allow_nan=False, width=32)
    boxes = []
    for _ in range(P):
        x1, y1 = draw(coord), draw(coord)
        kind = draw(st.sampled_from(["box", "box", "tiny", "empty", "huge"]))
        if kind == "box":
            boxes.append((x1, y1, x1 + draw(st.floats(0.5, 25, width=32)), y1 + draw(st.floats(0.5, 25, width=32))))
        elif kind == "tiny":
            boxes.append((x1, y1, x1 + 0.25, y1 + 0.125))
        elif kind == "empty":
            boxes.append((x1, y1, x1 - draw(st.floats(0, 5, width=32)), y1 + 3))
        else:
            boxes.append((-1e4, -1e4, 1e4, 1e4))
    threshold = draw(st.sampled_from([0.5, 0.5, 0.3, 0.8]))
    return P, (Mh, Mw), (H, W), boxes, threshold, draw(seeds)


@given(case=paste_cases(), mask_dtype=st.sampled_from([torch.float16, torch.float32, torch.float64]),
       box_dtype=st.sampled_from([torch.float32, torch.float64]), layout=layouts)
def test_fuzz_paste_masks(case, mask_dtype, box_dtype, layout):
    tick("paste_masks")
    P, (Mh, Mw), (H, W), boxes, threshold, seed = case
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand((P, Mh, Mw), generator=g, dtype=torch.float64).to(mask_dtype)
    b = torch.tensor(boxes, dtype=box_dtype).reshape(-1, 4)
    out = ops.paste_masks(with_layout(masks, layout), with_layout(b, "transposed" if layout != "contiguous" else layout),
                          H, W, threshold)
    assert out.shape == (P, H, W)
    assert_matches(out, paste_ref(expected_values(masks, layout), b, H, W), threshold)
