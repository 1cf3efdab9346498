"""Tests of assign_windows (paper §4.2, footnote 3) against a slow reference written from the rule.

The reference below loops over every window and every ground-truth box in plain Python and applies
the rule as stated in the op's docstring; it shares no code with the native kernels. Scenes are
small (256×384 images) so it stays fast.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tensormask  # noqa: F401  (registers torch.ops.tensormask.*)
from tensormask import ops
from tensormask.ops.assign import IGNORE, NEGATIVE

from .utils import DEVICES, call_in_fake_mode, num_threads, requires_cuda

STRIDES = [4, 8, 16, 32, 64, 128]


def level_sizes_for(height: int, width: int, strides=STRIDES) -> list[tuple[int, int]]:
    return [(math.ceil(height / s), math.ceil(width / s)) for s in strides]


# ------------------------------------------------------------------------------------------------
# Reference: explicit loops over windows × boxes, straight from the rule
# ------------------------------------------------------------------------------------------------


def assign_ref(
    boxes,
    is_crowd,
    crowd_mask,
    level_sizes,
    strides,
    window_sizes=(11, 15),
    scale_thresh=2.0,
    center_thresh=1.0,
    deduct_unit=True,
    uniqueness=True,
    fallback=True,
) -> np.ndarray:
    """Window labels: GT index, -1 (negative) or -2 (ignore), windows in (level, y, x, a) order."""
    boxes = [tuple(float(v) for v in b) for b in np.asarray(boxes, dtype=np.float64).reshape(-1, 4)]
    is_crowd = [bool(c) for c in np.asarray(is_crowd).reshape(-1)]
    crowd_mask = np.asarray(crowd_mask)
    s0 = strides[0]
    min_window_size = min(window_sizes) * s0 - (s0 if deduct_unit else 0)
    out = []
    for (H, W), s in zip(level_sizes, strides):
        for y in range(H):
            for x in range(W):
                cy, cx = y * s, x * s  # window centre, image pixels
                in_crowd = (
                    crowd_mask.size > 0
                    and cy < crowd_mask.shape[0]
                    and cx < crowd_mask.shape[1]
                    and bool(crowd_mask[cy, cx])
                )
                for a in window_sizes:
                    side = a * s
                    left, right, top, bottom = cx - side / 2, cx + side / 2, cy - side / 2, cy + side / 2
                    hits = []
                    for g, (x1, y1, x2, y2) in enumerate(boxes):
                        if is_crowd[g]:
                            continue  # crowd masks never make a window positive
                        # (i) containment ...
                        if not (left <= x1 and x2 <= right and top <= y1 and y2 <= bottom):
                            continue
                        # ... and size test, with the footnote-3 fallback
                        size = max(x2 - x1, y2 - y1) * scale_thresh
                        if fallback and size < min_window_size:
                            size = min_window_size
                        if not size >= side - (s if deduct_unit else 0):
                            continue
                        # (ii) centrality: ℓ2 distance of the centres ≤ center_thresh units
                        dx, dy = (x1 + x2) / 2 - cx, (y1 + y2) / 2 - cy
                        radius = center_thresh * s
                        if not dx * dx + dy * dy <= radius * radius:
                            continue
                        hits.append(g)
                    # (iii) uniqueness; crowd regions
                    if len(hits) == 1:
                        out.append(hits[0])
                    elif in_crowd or (len(hits) > 1 and not uniqueness):
                        out.append(IGNORE)
                    else:
                        out.append(NEGATIVE)
    return np.asarray(out, dtype=np.int64)


# ------------------------------------------------------------------------------------------------
# Random scenes
# ------------------------------------------------------------------------------------------------


def ellipse_mask(height, width, cy, cx, ry, rx) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    return ((yy + 0.5 - cy) / ry) ** 2 + ((xx + 0.5 - cx) / rx) ** 2 <= 1.0


def tight_box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def random_scene(seed: int, height=256, width=384, max_objects=30, crowd=True, fractional=False):
    """Boxes (tight boxes of random ellipses: tiny to huge, clustered so that several boxes compete
    for the same windows), crowd flags and the crowd mask."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, max_objects + 1))
    masks = []
    while len(masks) < n:
        kind = rng.random()
        if kind < 0.25:
            r = rng.uniform(0.6, 6)  # tiny: fallback territory
        elif kind < 0.9:
            r = rng.uniform(6, 60)
        else:
            r = rng.uniform(60, 200)  # huge
        ry, rx = r * rng.uniform(0.5, 1.5), r * rng.uniform(0.5, 1.5)
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        m = ellipse_mask(height, width, cy, cx, ry, rx)
        if m.any():
            masks.append(m)
        # near-duplicates: the same object shifted by a few pixels competes for the same windows
        if masks and rng.random() < 0.3 and len(masks) < n:
            dy, dx = rng.integers(-3, 4, size=2)
            m2 = np.roll(masks[-1], (int(dy), int(dx)), axis=(0, 1))
            if m2.any():
                masks.append(m2)
    boxes = np.array([tight_box(m) for m in masks], dtype=np.float32).reshape(-1, 4)
    if fractional and len(boxes):
        boxes = (boxes + rng.uniform(-0.5, 0.5, size=boxes.shape)).astype(np.float32)
    is_crowd = np.zeros(len(masks), dtype=bool)
    if crowd and len(masks):
        is_crowd = rng.random(len(masks)) < 0.15
    crowd_mask = np.zeros((height, width), dtype=bool)
    for m, c in zip(masks, is_crowd):
        if c:
            crowd_mask |= m
    if not is_crowd.any():
        crowd_mask = np.zeros((0, 0), dtype=bool)
    return masks, boxes, is_crowd, crowd_mask


def run_op(boxes, is_crowd, crowd_mask, level_sizes, device="cpu", strides=STRIDES, **kw):
    return ops.assign_windows(
        torch.as_tensor(boxes, dtype=torch.float32, device=device),
        torch.as_tensor(is_crowd, dtype=torch.bool, device=device),
        torch.as_tensor(crowd_mask, device=device),
        level_sizes,
        strides,
        **kw,
    )


VARIANTS = [
    {},
    dict(uniqueness=False),
    dict(fallback=False),
    dict(deduct_unit=False),
    dict(window_sizes=(11,)),
    dict(window_sizes=(8, 11, 15)),
    dict(scale_thresh=1.5, center_thresh=1.5),
    dict(center_thresh=0.0),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("variant", range(len(VARIANTS)))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_scenes_match_reference(device, variant, seed):
    kw = VARIANTS[variant]
    _, boxes, is_crowd, crowd_mask = random_scene(seed * 31 + variant, fractional=seed == 2)
    ls = level_sizes_for(256, 384)
    out = run_op(boxes, is_crowd, crowd_mask, ls, device=device, **kw)
    ref = assign_ref(boxes, is_crowd, crowd_mask, ls, STRIDES, **kw)
    assert out.dtype == torch.int64 and out.device.type == device
    assert out.shape == (ops.num_windows(ls, kw.get("window_sizes", (11, 15))),)
    np.testing.assert_array_equal(out.cpu().numpy(), ref)


def test_random_scenes_cover_every_outcome():
    """The random scenes really exercise positives, uniqueness conflicts, fallback and crowd."""
    ls = level_sizes_for(256, 384)
    seen = set()
    for seed in range(6):
        _, boxes, is_crowd, crowd_mask = random_scene(seed)
        ref = assign_ref(boxes, is_crowd, crowd_mask, ls, STRIDES)
        nonunique = assign_ref(boxes, is_crowd, crowd_mask, ls, STRIDES, uniqueness=False)
        nofallback = assign_ref(boxes, is_crowd, crowd_mask, ls, STRIDES, fallback=False)
        seen |= {"positive"} if (ref >= 0).any() else set()
        seen |= {"crowd"} if (ref == IGNORE).any() else set()
        seen |= {"conflict"} if ((nonunique == IGNORE) & (ref == NEGATIVE)).any() else set()
        seen |= {"fallback"} if ((ref >= 0) & (nofallback < 0)).any() else set()
    assert seen == {"positive", "crowd", "conflict", "fallback"}


@pytest.mark.parametrize("seed", [3, 4])
def test_fpn_window_sizes_at_every_level(seed):
    """Non-square image, odd sizes, a 5-level pyramid that starts at stride 8."""
    _, boxes, is_crowd, crowd_mask = random_scene(seed, height=200, width=264)
    strides = [8, 16, 32, 64, 128]
    ls = level_sizes_for(200, 264, strides)
    out = run_op(boxes, is_crowd, crowd_mask, ls, strides=strides, window_sizes=(5, 7))
    ref = assign_ref(boxes, is_crowd, crowd_mask, ls, strides, window_sizes=(5, 7))
    np.testing.assert_array_equal(out.numpy(), ref)


def test_deterministic_across_threads():
    _, boxes, is_crowd, crowd_mask = random_scene(5, max_objects=60)
    ls = level_sizes_for(256, 384)
    with num_threads(1):
        a = run_op(boxes, is_crowd, crowd_mask, ls)
    with num_threads(4):
        b = run_op(boxes, is_crowd, crowd_mask, ls)
    assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------------
# Hand-made cases, one per rule. One level, stride 4, a 21×21 feature map, window sizes (11, 15):
# sides 44 and 60 px; size-test thresholds 44 − 4 = 40 and 60 − 4 = 56; fallback size 40.
# Position (10, 10) is centred at image pixel (40, 40).
# ------------------------------------------------------------------------------------------------

ONE_LEVEL = [(21, 21)]


def label(matched: torch.Tensor, y: int, x: int, a: int, W: int = 21, A: int = 2) -> int:
    return int(matched[(y * W + x) * A + a])


def assign1(boxes, is_crowd=None, crowd_mask=None, level_sizes=ONE_LEVEL, strides=(4,), **kw):
    boxes_t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    crowd_t = None if is_crowd is None else torch.tensor(is_crowd, dtype=torch.bool)
    return ops.assign_windows(boxes_t, crowd_t, crowd_mask, level_sizes, strides, **kw)


def box_at(cy, cx, h, w):
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def test_window_order_and_centre():
    """index = (y·W_k + x)·A + a inside a level, levels concatenated; window centre = (y·s, x·s)."""
    m = assign1([box_at(40, 40, 30, 30)], level_sizes=[(21, 21), (11, 11)], strides=(4, 8))
    assert m.shape == (21 * 21 * 2 + 11 * 11 * 2,)
    pos = torch.nonzero(m >= 0).flatten().tolist()
    # centre (40, 40) is position (10, 10); its 4 neighbours at distance exactly 4 = 1 unit are central
    expected = sorted((y * 21 + x) * 2 + a for y, x in [(10, 10), (9, 10), (11, 10), (10, 9), (10, 11)] for a in (0, 1))
    assert pos == expected


def test_containment():
    # a 46-px box centred at (40, 40): [17, 63) is not inside the 44-px window [18, 62] but is inside
    # the 60-px window [10, 70]
    m = assign1([box_at(40, 40, 46, 46)])
    assert label(m, 10, 10, 0) == NEGATIVE
    assert label(m, 10, 10, 1) == 0
    # touching the window edges is contained (closed window box, x2 is an exclusive pixel edge)
    m = assign1([[18.0, 18.0, 62.0, 62.0]])
    assert label(m, 10, 10, 0) == 0
    m = assign1([[18.0, 18.0, 62.5, 62.0]])
    assert label(m, 10, 10, 0) == NEGATIVE


def test_size_test():
    # max side 21 → 42 ≥ 44 − 4 = 40: positive for the 44-px window; < 56: not for the 60-px window
    m = assign1([box_at(40, 40, 21, 15)], fallback=False)
    assert label(m, 10, 10, 0) == 0
    assert label(m, 10, 10, 1) == NEGATIVE
    # without deducting one unit the threshold is 44 > 42
    m = assign1([box_at(40, 40, 21, 15)], fallback=False, deduct_unit=False)
    assert label(m, 10, 10, 0) == NEGATIVE
    # exactly at the threshold: 2·20 = 40 ≥ 40
    m = assign1([box_at(40, 40, 20, 12)], fallback=False)
    assert label(m, 10, 10, 0) == 0
    m = assign1([box_at(40, 40, 19.5, 12)], fallback=False)
    assert label(m, 10, 10, 0) == NEGATIVE
    # scale_thresh 3: 3·15 = 45 ≥ 40
    m = assign1([box_at(40, 40, 15, 15)], fallback=False, scale_thresh=3.0)
    assert label(m, 10, 10, 0) == 0


def test_centrality():
    # box centre (40, 42.9): distance 2.9 to (40, 40), 1.1 to (40, 44), 5.1 to (40, 48)
    m = assign1([box_at(40, 42.9, 30, 30)])
    assert label(m, 10, 10, 0) == 0
    assert label(m, 10, 11, 0) == 0
    assert label(m, 10, 12, 0) == NEGATIVE
    # box centre (43, 43): distance √2 to (44, 44) but √18 > 4 to (40, 40), which contains the box
    m = assign1([box_at(43, 43, 30, 30)])
    assert label(m, 11, 11, 0) == 0
    assert label(m, 10, 10, 0) == NEGATIVE
    # a larger radius reaches it
    m = assign1([box_at(43, 43, 30, 30)], center_thresh=1.1)
    assert label(m, 10, 10, 0) == 0
    # exactly one unit away (distance 4 = 1·s) is central: inclusive
    m = assign1([box_at(40, 44, 30, 30)])
    assert label(m, 10, 10, 0) == 0


def test_uniqueness():
    boxes = [box_at(40, 40, 30, 30), box_at(41, 40, 28, 30)]
    m = assign1(boxes)
    assert label(m, 10, 10, 0) == NEGATIVE  # both boxes satisfy (i) and (ii)
    assert label(m, 10, 10, 1) == NEGATIVE
    m = assign1(boxes, uniqueness=False)
    assert label(m, 10, 10, 0) == IGNORE
    # (9, 10) is centred at (36, 40): distance 4 to box 0 (central) but 5 to box 1 → unique
    assert label(assign1(boxes), 9, 10, 0) == 0
    # a third, non-matching box does not break uniqueness
    m = assign1([box_at(40, 40, 30, 30), box_at(70, 70, 30, 30)])
    assert label(m, 10, 10, 0) == 0


def test_fallback():
    # a 6×6 box: 2·6 = 12 < 40 → with the fallback the size test uses 40 ≥ 44 − 4: the smallest window
    # at level 0 only
    m = assign1([box_at(40, 40, 6, 6)], level_sizes=[(21, 21), (11, 11)], strides=(4, 8))
    assert label(m, 10, 10, 0) == 0
    assert label(m, 10, 10, 1) == NEGATIVE  # 40 < 60 − 4
    assert (m[21 * 21 * 2 :] == NEGATIVE).all()  # level 1: 40 < 88 − 8
    m = assign1([box_at(40, 40, 6, 6)], fallback=False)
    assert label(m, 10, 10, 0) == NEGATIVE
    # without deducting the unit the fallback size is 44 (still the smallest window)
    m = assign1([box_at(40, 40, 6, 6)], deduct_unit=False)
    assert label(m, 10, 10, 0) == 0
    # the fallback size comes from the smallest window at level 0 whatever the order
    m = assign1([box_at(40, 40, 6, 6)], window_sizes=(15, 11))
    assert label(m, 10, 10, 0) == NEGATIVE and label(m, 10, 10, 1) == 0


def test_crowd():
    crowd_mask = torch.zeros(84, 84, dtype=torch.uint8)
    crowd_mask[30:50, 30:50] = 1  # holds the centre pixels (40, 40), (32, 32) ... (48, 48)
    crowd_box = [30.0, 30.0, 50.0, 50.0]
    m = assign1([crowd_box], [True], crowd_mask)
    for y in range(21):
        for x in range(21):
            expect = IGNORE if 30 <= 4 * y < 50 and 30 <= 4 * x < 50 else NEGATIVE
            assert label(m, y, x, 0) == expect and label(m, y, x, 1) == expect, (y, x)
    # a non-crowd box positive for (10, 10) overrides the crowd ignore; the identical crowd box does
    # not count for uniqueness
    m = assign1([crowd_box, box_at(40, 40, 30, 30)], [True, False], crowd_mask)
    assert label(m, 10, 10, 0) == 1
    assert label(m, 8, 8, 0) == IGNORE
    # crowd flags alone (no crowd mask): the crowd box makes nothing positive, nothing ignored
    m = assign1([box_at(40, 40, 30, 30)], [True], None)
    assert (m == NEGATIVE).all()
    # bool crowd mask, smaller than the window grid: centres outside it are not crowd
    small = torch.zeros(41, 41, dtype=torch.bool)
    small[40, 40] = True
    m = assign1(torch.empty(0, 4).tolist(), [], small)
    assert label(m, 10, 10, 0) == IGNORE and (m == IGNORE).sum() == 2


def test_empty_image():
    ls = level_sizes_for(256, 384)
    no_crowd = torch.empty(0, 0, dtype=torch.uint8)
    m = ops.assign_windows(torch.empty(0, 4), torch.empty(0, dtype=torch.bool), no_crowd, ls, STRIDES)
    assert m.shape == (ops.num_windows(ls),) and (m == NEGATIVE).all()
    # empty levels are allowed
    m = assign1([box_at(40, 40, 30, 30)], level_sizes=[(0, 0), (21, 21)], strides=(2, 4))
    assert m.shape == (21 * 21 * 2,) and label(m, 10, 10, 0) == 0


def test_flat_level_sizes_and_defaults():
    boxes = torch.tensor([box_at(40, 40, 30, 30)])
    a = ops.assign_windows(boxes, None, None, [(21, 21), (11, 11)], [4, 8])
    b = torch.ops.tensormask.assign_windows(
        boxes, torch.zeros(1, dtype=torch.bool), torch.zeros(0, 0, dtype=torch.uint8), [21, 21, 11, 11], [4, 8]
    )
    assert torch.equal(a, b)
    assert ops.num_windows([21, 21, 11, 11]) == ops.num_windows([(21, 21), (11, 11)]) == 2 * (441 + 121)


def test_float64_boxes_and_requires_grad():
    boxes = torch.tensor([box_at(40, 40, 30, 30)], dtype=torch.float64, requires_grad=True)
    m = assign1(boxes.detach().tolist())
    m2 = ops.assign_windows(boxes, None, None, ONE_LEVEL, [4])
    assert torch.equal(m, m2) and not m2.requires_grad


# ------------------------------------------------------------------------------------------------
# Errors, opcheck, compile
# ------------------------------------------------------------------------------------------------


def _args(**over):
    args = dict(
        gt_boxes=torch.tensor([[0.0, 0.0, 10.0, 10.0]]),
        gt_is_crowd=torch.zeros(1, dtype=torch.bool),
        crowd_mask=torch.zeros(0, 0, dtype=torch.uint8),
        level_sizes=[8, 8],
        strides=[4],
        window_sizes=[11, 15],
        scale_thresh=2.0,
        center_thresh=1.0,
    )
    args.update(over)
    return args


BAD = [
    (dict(gt_boxes=torch.zeros(2, 3)), ValueError, "gt_boxes"),
    (dict(gt_boxes=torch.zeros(4)), ValueError, "gt_boxes"),
    (dict(gt_boxes=torch.zeros(1, 4, dtype=torch.int64)), TypeError, "gt_boxes"),
    (dict(gt_is_crowd=torch.zeros(2, dtype=torch.bool)), ValueError, "gt_is_crowd"),
    (dict(gt_is_crowd=torch.zeros(1)), TypeError, "gt_is_crowd"),
    (dict(crowd_mask=torch.zeros(4, dtype=torch.uint8)), ValueError, "crowd_mask"),
    (dict(crowd_mask=torch.zeros(4, 4)), TypeError, "crowd_mask"),
    (dict(gt_is_crowd=torch.zeros(1, dtype=torch.bool, device="meta")), ValueError, "gt_is_crowd"),
    (dict(crowd_mask=torch.zeros(0, 0, dtype=torch.uint8, device="meta")), ValueError, "crowd_mask"),
    (dict(level_sizes=[8, 8, 4]), ValueError, "level_sizes"),
    (dict(level_sizes=[8, -1]), ValueError, "level_sizes"),
    (dict(strides=[]), ValueError, "strides"),
    (dict(strides=[0]), ValueError, "strides"),
    (dict(window_sizes=[]), ValueError, "window_sizes"),
    (dict(window_sizes=[11, 0]), ValueError, "window_sizes"),
    (dict(scale_thresh=0.0), ValueError, "scale_thresh"),
    (dict(center_thresh=-1.0), ValueError, "center_thresh"),
    (dict(center_thresh=float("inf")), ValueError, "center_thresh"),
]


@pytest.mark.parametrize("over,exc,arg", BAD, ids=[f"{b[2]}-{i}" for i, b in enumerate(BAD)])
def test_bad_arguments(over, exc, arg):
    with pytest.raises(exc, match=f"`{arg}`"):
        torch.ops.tensormask.assign_windows(**_args(**over))


@pytest.mark.parametrize("over,exc,arg", BAD, ids=[f"{b[2]}-{i}" for i, b in enumerate(BAD)])
def test_bad_arguments_fake(over, exc, arg):
    """The fake kernel does the same checks."""
    with pytest.raises(exc, match=f"`{arg}`"):
        call_in_fake_mode(torch.ops.tensormask.assign_windows, _args(**over))


def test_opcheck():
    _, boxes, is_crowd, crowd_mask = random_scene(7, height=64, width=96, max_objects=6)
    ls = [v for hw in level_sizes_for(64, 96, STRIDES[:4]) for v in hw]
    for cm in (torch.as_tensor(crowd_mask), torch.ones(64, 96, dtype=torch.bool)):
        args = (torch.as_tensor(boxes), torch.as_tensor(is_crowd), cm, ls, STRIDES[:4])
        args += ([11, 15], 2.0, 1.0, True, False, True)
        torch.library.opcheck(
            torch.ops.tensormask.assign_windows.default,
            args,
            test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"),
        )


def test_torch_compile_fullgraph():
    ls = level_sizes_for(64, 96, STRIDES[:3])

    def f(boxes):
        return (ops.assign_windows(boxes, None, None, ls, STRIDES[:3]) >= 0).sum()

    boxes = torch.tensor([box_at(30, 40, 24, 30), box_at(20, 20, 8, 8)])
    expected = f(boxes)
    assert int(expected) > 0
    assert torch.equal(torch.compile(f, fullgraph=True, backend="aot_eager")(boxes), expected)


@requires_cuda
@pytest.mark.parametrize("seed", range(4))
def test_cuda_matches_cpu(seed):
    _, boxes, is_crowd, crowd_mask = random_scene(100 + seed, height=800, width=1216, max_objects=80)
    ls = level_sizes_for(800, 1216)
    for kw in VARIANTS:
        cpu = run_op(boxes, is_crowd, crowd_mask, ls, device="cpu", **kw)
        cuda = run_op(boxes, is_crowd, crowd_mask, ls, device="cuda", **kw)
        assert torch.equal(cpu, cuda.cpu()), kw


@requires_cuda
def test_cuda_device_mismatch():
    with pytest.raises(ValueError, match="`crowd_mask`"):
        cuda = dict(gt_boxes=torch.zeros(1, 4, device="cuda"), gt_is_crowd=torch.zeros(1, dtype=torch.bool, device="cuda"))
        torch.ops.tensormask.assign_windows(**_args(**cuda))
