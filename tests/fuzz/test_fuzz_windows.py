"""Fuzz tests of the training-side window ops (assign_windows, crop_windows) and of decode_windows,
against slow references written from the op docstrings (the loops of ``tests/ops``) and, for
decode_windows, the dense swap/up_align2nat reference of ``tests/ops/reference.py`` applied to the
1×1 conv output.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

import tensormask  # noqa: F401  (registers torch.ops.tensormask.*)
from tensormask import ops

from ..ops import reference as ref
from ..ops.test_assign_windows import assign_ref
from ..ops.test_crop_windows import crop_ref
from .counter import tick
from .strategies import FLOAT_DTYPES, as_f64, layouts, seeds, values, with_layout

half_grid = st.integers(-40, 200).map(lambda v: v / 2)  # exact in float32: no knife-edge rounding


# ---- assign_windows -----------------------------------------------------------------------------------


@st.composite
def assign_cases(draw):
    L = draw(st.integers(1, 3))
    strides = sorted(draw(st.lists(st.sampled_from([1, 2, 3, 4, 8, 16]), min_size=L, max_size=L)))
    level_sizes = [(draw(st.integers(0, 6)), draw(st.integers(0, 6))) for _ in range(L)]
    window_sizes = draw(st.lists(st.integers(1, 15), min_size=1, max_size=3))
    G = draw(st.integers(0, 6))
    boxes = []
    for _ in range(G):
        x1, y1 = draw(half_grid), draw(half_grid)
        w, h = draw(st.integers(-6, 120)) / 2, draw(st.integers(-6, 120)) / 2  # degenerate too
        boxes.append((x1, y1, x1 + w, y1 + h))
    is_crowd = draw(st.lists(st.booleans(), min_size=G, max_size=G))
    crowd_hw = draw(st.one_of(st.none(), st.tuples(st.integers(0, 40), st.integers(0, 40))))
    rule = dict(
        scale_thresh=draw(st.sampled_from([1.0, 1.5, 2.0, 3.0])),
        center_thresh=draw(st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0])),
        deduct_unit=draw(st.booleans()),
        uniqueness=draw(st.booleans()),
        fallback=draw(st.booleans()),
    )
    return strides, level_sizes, window_sizes, boxes, is_crowd, crowd_hw, rule, draw(seeds)


@given(case=assign_cases(), box_dtype=st.sampled_from([torch.float32, torch.float64]),
       mask_dtype=st.sampled_from([torch.bool, torch.uint8]), layout=layouts)
def test_fuzz_assign_windows(case, box_dtype, mask_dtype, layout):
    tick("assign_windows")
    strides, level_sizes, window_sizes, boxes, is_crowd, crowd_hw, rule, seed = case
    gt_boxes = with_layout(torch.tensor(boxes, dtype=box_dtype).reshape(-1, 4), "transposed" if layout != "contiguous" else layout)
    crowd_flags = torch.tensor(is_crowd, dtype=torch.bool)
    if crowd_hw is None:
        crowd_mask, crowd_np = None, np.zeros((0, 0), dtype=bool)
    else:
        g = torch.Generator().manual_seed(seed)
        crowd_mask = torch.rand(crowd_hw, generator=g) < 0.3
        crowd_np = crowd_mask.numpy()
        crowd_mask = with_layout(crowd_mask.to(mask_dtype), "transposed" if layout == "sliced" else "contiguous")
    out = ops.assign_windows(gt_boxes, crowd_flags if is_crowd else None, crowd_mask, level_sizes, strides,
                             window_sizes, **rule)
    expected = assign_ref(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), is_crowd, crowd_np, level_sizes, strides,
                          window_sizes, **rule)
    assert out.dtype == torch.int64 and out.shape == (ops.num_windows(level_sizes, window_sizes),)
    np.testing.assert_array_equal(out.numpy(), expected)


# ---- crop_windows -------------------------------------------------------------------------------------


@st.composite
def crop_cases(draw):
    G = draw(st.integers(0, 4))
    H, W = draw(st.integers(0, 12)), draw(st.integers(0, 12))
    P = draw(st.integers(0, 6)) if G else 0
    gt_index = [draw(st.integers(0, G - 1)) for _ in range(P)]
    quarter = st.integers(-32, 80).map(lambda v: v / 4)
    centers = [(draw(quarter), draw(quarter)) for _ in range(P)]
    sigma = draw(st.sampled_from([0.25, 0.5, 1.0, 1.5, 2.0, 4.0]))
    V, U = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    return (G, H, W), gt_index, centers, sigma, V, U, draw(seeds)


@given(case=crop_cases(), mask_dtype=st.sampled_from([torch.bool, torch.uint8, torch.float16, torch.float32, torch.float64]),
       layout=layouts)
def test_fuzz_crop_windows(case, mask_dtype, layout):
    tick("crop_windows")
    mshape, gt_index, centers, sigma, V, U, seed = case
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(mshape, generator=g) < 0.5
    centers_t = with_layout(torch.tensor(centers, dtype=torch.float32).reshape(-1, 2), "sliced" if layout != "contiguous" else layout)
    m = with_layout(masks.to(mask_dtype), "transposed" if layout == "expanded_batch" else layout)
    out = ops.crop_windows(m, torch.tensor(gt_index, dtype=torch.int64), centers_t, sigma, V, U)
    expected = crop_ref(masks.numpy().astype(np.float64), np.asarray(gt_index, dtype=np.int64),
                        np.asarray(centers, dtype=np.float64).reshape(-1, 2), sigma, V, U)
    assert out.dtype == torch.float32 and out.shape == (len(gt_index), V, U)
    np.testing.assert_array_equal(out.numpy(), expected)


# ---- decode_windows -----------------------------------------------------------------------------------

MAX_OUT = 600


@st.composite
def decode_cases(draw):
    subsample = draw(st.booleans())
    lam = draw(st.one_of(st.integers(1, 4), st.integers(5, 8)))
    V, U = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    N, C = draw(st.integers(1, 2)), draw(st.integers(0, 4))
    side = max(1, math.isqrt(MAX_OUT // (lam * lam * V * U)))
    hw_max = min(side * lam if subsample else side, 16)
    H, W = draw(st.integers(0, hw_max)), draw(st.integers(0, hw_max))
    Ho, Wo = (-(-H // lam), -(-W // lam)) if subsample else (H, W)
    rows = []
    if Ho * Wo:
        row = st.tuples(st.integers(0, N - 1), st.integers(0, Ho - 1), st.integers(0, Wo - 1))
        rows = draw(st.lists(row, max_size=5))
    mode = draw(st.sampled_from(["bilinear", "nearest"]))
    pad_val = draw(st.sampled_from([-6.0, 0.0, 2.5]))
    return (N, C, H, W), V, U, lam, subsample, rows, mode, pad_val, draw(seeds)


@given(case=decode_cases(), dtype=st.sampled_from(FLOAT_DTYPES), layout=layouts, with_bias=st.booleans())
def test_fuzz_decode_windows(case, dtype, layout, with_bias):
    tick("decode_windows")
    (N, C, H, W), V, U, lam, subsample, rows, mode, pad_val, seed = case
    features = values((N, C, H, W), seed, dtype)
    weight = values((V * U, C), seed + 1, dtype)
    bias = values((V * U,), seed + 2, dtype) if with_bias else None
    windows = torch.tensor(rows, dtype=torch.int64).reshape(-1, 3)
    out = ops.decode_windows(with_layout(features, layout), weight, bias, windows, V, U, lam, subsample, mode, pad_val)
    # reference: the 1×1 conv in float64 on the rounded values, then the dense op's reference
    f, w = as_f64(features), as_f64(weight)
    b = as_f64(bias) if with_bias else np.zeros(V * U)
    A = (np.einsum("oc,nchw->nohw", w, f) + b[None, :, None, None]).reshape(N, V, U, H, W)
    if layout == "expanded_batch":
        A = np.broadcast_to(A[:1], A.shape)
    dense = (ref.swap_align2nat_ref if subsample else ref.up_align2nat_ref)(A, lam, mode, pad_val)
    idx = windows.numpy()
    expected = dense[idx[:, 0], :, :, idx[:, 1], idx[:, 2]].reshape(len(rows), lam * V, lam * U)
    assert out.dtype == dtype and tuple(out.shape) == expected.shape
    tol = {torch.float64: (1e-10, 0), torch.float32: (1e-4, 1e-5), torch.float16: (5e-2, 2e-2),
           torch.bfloat16: (2e-1, 3e-2)}[dtype]
    torch.testing.assert_close(out.double(), torch.from_numpy(expected), atol=tol[0], rtol=tol[1])
