"""Fuzz tests of the argument checks: random invalid arguments to every native op must raise
ValueError / TypeError / RuntimeError (IndexError for an out-of-range index) whose message names the
bad argument — never crash the process or return a silent result."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tensormask  # noqa: F401  (registers torch.ops.tensormask.*)
from tensormask import ops

from .counter import tick

ERRORS = (ValueError, TypeError, RuntimeError, IndexError)
T = torch.ops.tensormask

bad_ints = st.one_of(st.integers(-(2**63), 0), st.sampled_from([0, -1]))
int_dtypes = st.sampled_from([torch.int64, torch.int32, torch.uint8, torch.bool, torch.int16])
bad_ranks = st.integers(0, 7)
bad_floats_pos = st.one_of(st.floats(max_value=0.0), st.sampled_from([float("nan"), float("inf"), -float("inf")]))
# strings that are not a mode: anything but the two exact names
bad_modes = st.text(max_size=12).filter(lambda s: s not in ("bilinear", "nearest"))


def shape_of_rank(rank: int, avoid: int):
    return st.lists(st.integers(0, 3), min_size=rank, max_size=rank).filter(lambda s: len(s) != avoid)


@st.composite
def bad_calls(draw):
    """(description, call, argument name the message must contain)."""
    x5 = torch.zeros(1, 3, 2, 4, 5)
    op = draw(st.sampled_from(["align2nat", "nat2align", "up_align2nat", "swap_align2nat", "swap_align2nat_windows",
                               "assign_windows", "crop_windows", "decode_windows", "batched_nms", "paste_masks"]))
    if op in ("align2nat", "nat2align"):
        fn = getattr(ops, op)
        kind = draw(st.sampled_from(["rank", "dtype", "alpha"]))
        if kind == "rank":
            shape = draw(shape_of_rank(draw(bad_ranks), 5))
            return op, lambda: fn(torch.zeros(shape)), "x"
        if kind == "dtype":
            dt = draw(int_dtypes)
            return op, lambda: fn(x5.to(dt)), "x"
        a = draw(bad_ints)
        return op, lambda: fn(x5, a), "alpha"
    if op in ("up_align2nat", "swap_align2nat"):
        fn = getattr(ops, op)
        kind = draw(st.sampled_from(["rank", "dtype", "lam", "mode", "backward_grad", "backward_lam"]))
        if kind == "rank":
            shape = draw(shape_of_rank(draw(bad_ranks), 5))
            return op, lambda: fn(torch.zeros(shape), 2), "x"
        if kind == "dtype":
            dt = draw(int_dtypes)
            return op, lambda: fn(x5.to(dt), 2), "x"
        if kind == "lam":
            lam = draw(bad_ints)
            return op, lambda: fn(x5, lam), "lam"
        if kind == "mode":
            mode = draw(bad_modes)
            return op, lambda: fn(x5, 2, mode), "mode"
        bop = getattr(T, f"{op}_backward")
        if kind == "backward_lam":
            lam = draw(bad_ints)
            return op, lambda: bop(torch.zeros(1, 6, 4, 2, 3), lam, "bilinear", 3, 2, 4, 5), "lam"
        shape = draw(st.lists(st.integers(0, 6), min_size=5, max_size=5))
        expected = [1, 6, 4, 2, 3] if op == "swap_align2nat" else [1, 6, 4, 4, 5]
        if shape[1:] == expected[1:]:
            shape[1] += 1
        return op, lambda: bop(torch.zeros(shape), 2, "bilinear", 3, 2, 4, 5), "grad"
    if op == "swap_align2nat_windows":
        kind = draw(st.sampled_from(["row", "shape", "dtype", "lam"]))
        if kind == "row":
            n, y, x = draw(st.integers(-5, 5)), draw(st.integers(-5, 8)), draw(st.integers(-5, 8))
            if 0 <= n < 1 and 0 <= y < 2 and 0 <= x < 3:
                n = 1
            return op, lambda: ops.swap_align2nat_windows(x5, torch.tensor([[0, 0, 0], [n, y, x]]), 2), "windows"
        if kind == "shape":
            shape = draw(st.lists(st.integers(0, 4), min_size=1, max_size=3).filter(lambda s: len(s) != 2 or s[1] != 3))
            return op, lambda: ops.swap_align2nat_windows(x5, torch.zeros(shape, dtype=torch.int64), 2), "windows"
        if kind == "dtype":
            dt = draw(st.sampled_from([torch.int32, torch.float32, torch.uint8]))
            return op, lambda: ops.swap_align2nat_windows(x5, torch.zeros(1, 3, dtype=dt), 2), "windows"
        lam = draw(bad_ints)
        return op, lambda: ops.swap_align2nat_windows(x5, torch.zeros(1, 3, dtype=torch.int64), lam), "lam"
    if op == "assign_windows":
        args = dict(gt_boxes=torch.tensor([[0.0, 0.0, 10.0, 10.0]]), gt_is_crowd=None, crowd_mask=None,
                    level_sizes=[8, 8], strides=[4], window_sizes=[11, 15])
        kind = draw(st.sampled_from(["boxes", "level_sizes", "strides", "window_sizes", "scale_thresh",
                                     "center_thresh", "crowd"]))
        if kind == "boxes":
            shape = draw(st.lists(st.integers(0, 5), min_size=0, max_size=3).filter(lambda s: len(s) != 2 or s[1] != 4))
            args["gt_boxes"] = torch.zeros(shape)
            name = "gt_boxes"
        elif kind == "level_sizes":
            args["level_sizes"] = draw(st.one_of(
                st.lists(st.integers(0, 9), max_size=5).filter(lambda v: len(v) != 2),
                st.tuples(st.integers(-(2**40), -1), st.integers(0, 9)).map(list),
                st.tuples(st.integers(2**28 + 1, 2**62), st.integers(1, 2**62)).map(list)))
            name = "level_sizes"
        elif kind == "strides":
            args["strides"] = [draw(st.one_of(bad_ints, st.integers(2**28 + 1, 2**62)))]
            name = "strides"
        elif kind == "window_sizes":
            args["window_sizes"] = draw(st.one_of(st.just([]), st.lists(st.integers(1, 20), min_size=17, max_size=20),
                                                  st.tuples(st.integers(1, 9), bad_ints).map(list),
                                                  st.tuples(st.integers(2**28 + 1, 2**62)).map(list)))
            name = "window_sizes"
        elif kind == "scale_thresh":
            args["scale_thresh"] = draw(bad_floats_pos)
            name = "scale_thresh"
        elif kind == "center_thresh":
            args["center_thresh"] = draw(st.one_of(st.floats(max_value=-1e-9), st.sampled_from([float("nan"), float("inf")])))
            name = "center_thresh"
        else:
            shape = draw(st.lists(st.integers(0, 4), max_size=4).filter(lambda s: len(s) != 2))
            args["crowd_mask"] = torch.zeros(shape, dtype=torch.bool)
            name = "crowd_mask"
        return op, lambda: ops.assign_windows(**args), name
    if op == "crop_windows":
        args = dict(masks=torch.ones(2, 8, 8, dtype=torch.bool), gt_index=torch.tensor([0, 1]),
                    centers=torch.zeros(2, 2), sigma_vu=1.0, V=4, U=4)
        kind = draw(st.sampled_from(["gt_index", "centers", "sigma_vu", "V", "U", "masks"]))
        if kind == "gt_index":
            args["gt_index"] = torch.tensor([0, draw(st.one_of(st.integers(-(2**62), -1), st.integers(2, 2**62)))])
        elif kind == "centers":
            P = draw(st.integers(0, 4).filter(lambda p: p != 2))
            args["centers"] = torch.zeros(P, 2)
        elif kind == "sigma_vu":
            args["sigma_vu"] = draw(bad_floats_pos)
        elif kind in ("V", "U"):
            args[kind] = draw(bad_ints)
        else:
            args["masks"] = torch.zeros(draw(shape_of_rank(draw(bad_ranks), 3)))
        return op, lambda: ops.crop_windows(**args), kind
    if op == "decode_windows":
        args = dict(features=torch.zeros(2, 4, 8, 10), weight=torch.zeros(6, 4), bias=torch.zeros(6),
                    windows=torch.tensor([[0, 1, 2]]), V=2, U=3, lam=2)
        kind = draw(st.sampled_from(["windows", "weight", "bias", "lam", "mode", "features"]))
        extra = {}
        if kind == "windows":
            n, y, x = draw(st.integers(-3, 4)), draw(st.integers(-3, 6)), draw(st.integers(-3, 7))
            if 0 <= n < 2 and 0 <= y < 4 and 0 <= x < 5:
                x = 5
            args["windows"] = torch.tensor([[0, 0, 0], [n, y, x]])
        elif kind == "weight":
            args["weight"] = torch.zeros(draw(st.tuples(st.integers(0, 8), st.integers(0, 6)).filter(lambda s: s != (6, 4))))
        elif kind == "bias":
            args["bias"] = torch.zeros(draw(st.integers(0, 9).filter(lambda b: b != 6)))
        elif kind == "lam":
            args["lam"] = draw(bad_ints)
        elif kind == "mode":
            extra["mode"] = draw(bad_modes)
        else:
            args["features"] = torch.zeros(draw(shape_of_rank(draw(bad_ranks), 4)))
        return op, lambda: ops.decode_windows(**args, **extra), kind
    if op == "batched_nms":
        R = 3
        args = dict(boxes=torch.zeros(R, 4), scores=torch.zeros(R), idxs=torch.zeros(R, dtype=torch.int64), iou_threshold=0.5)
        kind = draw(st.sampled_from(["boxes", "scores", "idxs", "iou_threshold"]))
        if kind == "iou_threshold":
            args["iou_threshold"] = float("nan")
        elif kind == "boxes":
            args["boxes"] = torch.zeros(draw(st.lists(st.integers(0, 5), max_size=3).filter(lambda s: len(s) != 2 or s[1] != 4)))
        else:
            n = draw(st.integers(0, 6).filter(lambda n: n != R))
            args[kind] = torch.zeros(n, dtype=torch.int64 if kind == "idxs" else torch.float32)
        return op, lambda: ops.batched_nms(**args), kind
    # paste_masks
    args = dict(masks=torch.rand(2, 7, 7), boxes=torch.tensor([[0.0, 0, 4, 4], [1, 1, 3, 3]]), image_h=8, image_w=9)
    kind = draw(st.sampled_from(["image_h", "image_w", "boxes", "masks", "threshold"]))
    if kind in ("image_h", "image_w"):
        args[kind] = draw(st.integers(-(2**62), -1))
    elif kind == "boxes":
        args["boxes"] = torch.zeros(draw(st.tuples(st.integers(0, 4), st.integers(0, 6)).filter(lambda s: s != (2, 4))))
    elif kind == "masks":
        args["masks"] = torch.zeros(draw(st.sampled_from([(2, 0, 7), (2, 7, 0), (7, 7), (2, 1, 7, 7)])))
    else:
        args["threshold"] = float("nan")
    return op, lambda: ops.paste_masks(**args), kind


@given(case=bad_calls())
def test_fuzz_invalid_arguments_raise_naming_the_argument(case):
    tick("invalid arguments")
    op, call, arg = case
    with pytest.raises(ERRORS, match=f"`{arg}`"):
        call()
