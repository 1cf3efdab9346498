"""Tests of crop_windows (the mask targets of the positive windows) against a slow numpy reference,
and the crop → paste round trip on assigned windows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tensormask  # noqa: F401  (registers torch.ops.tensormask.*)
from tensormask import ops

from .test_assign_windows import STRIDES, ellipse_mask, level_sizes_for, tight_box
from .utils import DEVICES, call_in_fake_mode, num_threads, requires_cuda

# ------------------------------------------------------------------------------------------------
# Reference: explicit loops over the window pixels
# ------------------------------------------------------------------------------------------------


def crop_ref(masks, gt_index, centers, sigma, V, U) -> np.ndarray:
    """detectron2's BitMasks.crop_and_resize written out with loops: RoIAlign (aligned=True,
    sampling_ratio=0) of mask gt_index[p] over the window box [cx − U·σ/2, cx + U·σ/2) × (same in y),
    then ≥ 0.5. Window pixel (v, u) averages n×n samples, n = ceil(roi_h / V) = ceil(σ), sample iy at
    pixel-index y = (cy − V·σ/2 − ½) + v·σ + (iy + ½)·σ/n; torchvision's bilinear rule: 0 when y < −1
    or y > H (x likewise), else y clamped to [0, H − 1]."""
    masks = np.asarray(masks, dtype=np.float64)
    G, H, W = masks.shape

    def bilinear(m, y, x):
        if y < -1.0 or y > H or x < -1.0 or x > W:
            return 0.0
        y, x = max(y, 0.0), max(x, 0.0)
        y0, x0 = int(y), int(x)
        if y0 >= H - 1:
            y0 = y1 = H - 1
            y = float(y0)
        else:
            y1 = y0 + 1
        if x0 >= W - 1:
            x0 = x1 = W - 1
            x = float(x0)
        else:
            x1 = x0 + 1
        ly, lx = y - y0, x - x0
        return (1 - ly) * (1 - lx) * m[y0, x0] + (1 - ly) * lx * m[y0, x1] + ly * (1 - lx) * m[y1, x0] + ly * lx * m[y1, x1]

    out = np.zeros((len(gt_index), V, U), dtype=np.float32)
    if H == 0 or W == 0:
        return out
    for p, (g, (cy, cx)) in enumerate(zip(np.asarray(gt_index), np.asarray(centers, dtype=np.float64))):
        m = masks[g]
        y_start, x_start = cy - V * sigma / 2 - 0.5, cx - U * sigma / 2 - 0.5
        ny = max(1, math.ceil((V * sigma) / V))
        nx = max(1, math.ceil((U * sigma) / U))
        for v in range(V):
            for u in range(U):
                total = 0.0
                for iy in range(ny):
                    y = y_start + v * sigma + (iy + 0.5) * sigma / ny
                    for ix in range(nx):
                        total += bilinear(m, y, x_start + u * sigma + (ix + 0.5) * sigma / nx)
                out[p, v, u] = 1.0 if total / (ny * nx) >= 0.5 else 0.0
    return out


def random_masks(seed, G=5, H=48, W=64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(G):
        m = ellipse_mask(H, W, rng.uniform(0, H), rng.uniform(0, W), rng.uniform(2, 20), rng.uniform(2, 20))
        if rng.random() < 0.3:
            m ^= rng.random((H, W)) < 0.1  # ragged edges and holes
        masks.append(m)
    return np.stack(masks)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("sigma,V,U", [(1.0, 7, 5), (4.0, 11, 11), (2.5, 6, 9), (0.75, 12, 10)])
def test_matches_reference(device, dtype, sigma, V, U):
    masks = random_masks(int(sigma * 4) + V)
    rng = np.random.default_rng(V * U)
    P = 12
    gt_index = rng.integers(0, masks.shape[0], size=P)
    # centres on integer, half-integer and arbitrary positions, some near or beyond the border
    centers = np.stack([rng.uniform(-10, 58, size=P), rng.uniform(-10, 74, size=P)], axis=1)
    centers[:4] = np.round(centers[:4])
    centers[4:8] = np.round(centers[4:8] * 2) / 2
    centers = centers.astype(np.float32)
    out = ops.crop_windows(
        torch.as_tensor(masks).to(dtype=dtype, device=device),
        torch.as_tensor(gt_index, device=device),
        torch.as_tensor(centers, device=device),
        sigma,
        V,
        U,
    )
    ref = crop_ref(masks, gt_index, centers, sigma, V, U)
    assert out.shape == (P, V, U) and out.dtype == torch.float32 and out.device.type == device
    np.testing.assert_array_equal(out.cpu().numpy(), ref)


def test_soft_masks_are_thresholded():
    """Float masks are interpolated as they are, then thresholded at 0.5."""
    mask = torch.full((1, 8, 8), 0.5)
    mask[0, :, 4:] = 0.25
    out = ops.crop_windows(mask, torch.tensor([0]), torch.tensor([[4.0, 4.0]]), 1.0, 8, 8)
    assert torch.equal(out[0, :, :4], torch.ones(8, 4)) and torch.equal(out[0, :, 4:], torch.zeros(8, 4))


def test_hand_computed():
    # Image 4×4 with pixels (1..2, 1..2) set. σ = 1, a 4×4 window centred at (2, 2) covers the image
    # exactly: window pixel (v, u) samples image pixel (v, u) itself.
    mask = torch.zeros(1, 4, 4, dtype=torch.uint8)
    mask[0, 1:3, 1:3] = 1
    out = ops.crop_windows(mask, torch.tensor([0]), torch.tensor([[2.0, 2.0]]), 1.0, 4, 4)
    assert torch.equal(out[0], mask[0].float())
    # σ = 2, a 2×2 window centred at (2, 2): samples at (1, 1), (1, 3), ... in image coordinates, i.e.
    # pixel-index (0.5, 0.5): the average of pixels (0..1, 0..1) = 1/4 → 0; centred at (2.5, 2.5):
    # sample (1, 1) → pixel (1, 1) exactly → 1 for v = u = 0
    out = ops.crop_windows(mask, torch.tensor([0, 0]), torch.tensor([[2.0, 2.0], [2.5, 2.5]]), 2.0, 2, 2)
    assert torch.equal(out[0], torch.zeros(2, 2))
    assert torch.equal(out[1], torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    # half-way between a set and an unset pixel: 0.5 ≥ 0.5 → 1; a quarter: 0
    out = ops.crop_windows(mask, torch.tensor([0]), torch.tensor([[1.5, 3.0]]), 1.0, 1, 1)  # index (1, 2.5)
    assert out.item() == 1.0
    out = ops.crop_windows(mask, torch.tensor([0]), torch.tensor([[1.0, 1.0]]), 1.0, 1, 1)  # (0.5, 0.5) → 1/4
    assert out.item() == 0.0
    # far outside the image: zeros
    out = ops.crop_windows(mask, torch.tensor([0]), torch.tensor([[100.0, -50.0]]), 1.0, 3, 3)
    assert not out.any()


def test_adaptive_average_of_the_bin():
    """σ = 4: a window pixel is the mean of 4×4 samples, here the 16 image pixels of its bin (window
    edges on integer pixels put every sample on a pixel centre): foreground iff ≥ 8 of them are set."""
    for k in range(17):
        mask = torch.zeros(1, 12, 12, dtype=torch.bool)
        block = torch.zeros(16, dtype=torch.bool)
        block[:k] = True
        mask[0, 4:8, 4:8] = block.view(4, 4)
        # the 3×3 window of σ = 4 centred at (6, 6) has box [0, 12)²; its centre pixel is the block
        out = ops.crop_windows(mask, torch.tensor([0]), torch.tensor([[6.0, 6.0]]), 4.0, 3, 3)
        expected = torch.zeros(3, 3)
        expected[1, 1] = float(k >= 8)
        assert torch.equal(out[0], expected), k


def test_border_pixels_extend_like_roi_align():
    """torchvision's roi_align reads a sample at pixel-index −1 ≤ x ≤ 0 as pixel 0 and W − 1 ≤ x ≤ W
    as pixel W − 1; beyond that, 0. A 1×1 window of σ = 4 centred on the left edge (box x ∈ [−2, 2))
    samples x = −2, −1, 0, 1: 0, pixel 0, pixel 0, pixel 1."""
    left = torch.zeros(1, 8, 8, dtype=torch.bool)
    left[0, :, 0] = True  # only column 0: samples give 0, 1, 1, 0 → 1/2 → foreground (zero padding: 1/4)
    assert ops.crop_windows(left, torch.tensor([0]), torch.tensor([[4.0, 0.0]]), 4.0, 1, 1).item() == 1.0
    right = torch.zeros(1, 8, 8, dtype=torch.bool)
    right[0, :, 7] = True  # box x ∈ [6, 10): samples 6, 7, 8 (→ 7), 9 (> W → 0): 0, 1, 1, 0
    assert ops.crop_windows(right, torch.tensor([0]), torch.tensor([[4.0, 8.0]]), 4.0, 1, 1).item() == 1.0
    # one column further out the samples are −3, −2, −1, 0 → 0, 0, 1, 1 → 1/2; and −4..−1 → 1/4
    assert ops.crop_windows(left, torch.tensor([0]), torch.tensor([[4.0, -1.0]]), 4.0, 1, 1).item() == 1.0
    assert ops.crop_windows(left, torch.tensor([0]), torch.tensor([[4.0, -2.0]]), 4.0, 1, 1).item() == 0.0


def test_empty_and_selection():
    masks = torch.as_tensor(random_masks(0))
    out = ops.crop_windows(masks, torch.empty(0, dtype=torch.int64), torch.empty(0, 2), 4.0, 11, 11)
    assert out.shape == (0, 11, 11)
    # a large image where only the sampled pixels matter: each crop reads its own mask
    big = torch.zeros(3, 600, 900, dtype=torch.bool)
    big[1, 100:200, 300:400] = True
    out = ops.crop_windows(big, torch.tensor([0, 1, 2]), torch.tensor([[150.0, 350.0]] * 3), 4.0, 30, 30)
    # window pixel v averages image pixels 90 + 4v .. 93 + 4v per axis: 0 up to v = 1, 1/2 at v = 2 and
    # 27 (half on the object), 1 for v = 3..26 (24 pixels); ≥ 0.5 keeps products 1 and 1/2, not 1/4
    assert out[0].sum() == 0 and out[2].sum() == 0 and out[1].sum() == 24 * 24 + 4 * 24


def test_deterministic_across_threads():
    masks = torch.as_tensor(random_masks(1))
    idx = torch.randint(0, 5, (200,), generator=torch.Generator().manual_seed(0))
    centers = torch.rand(200, 2, generator=torch.Generator().manual_seed(1)) * 64
    with num_threads(1):
        a = ops.crop_windows(masks, idx, centers, 1.5, 16, 16)
    with num_threads(4):
        b = ops.crop_windows(masks, idx, centers, 1.5, 16, 16)
    assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------------
# Round trip: crop each positive window of an object, paste it back, compare with the object
# ------------------------------------------------------------------------------------------------


def paste_ref(crop: np.ndarray, cy: float, cx: float, sigma: float, H: int, W: int) -> np.ndarray:
    """Paste a (V, U) window crop into an (H, W) image: every image pixel whose centre lies inside the
    window takes the crop bilinearly interpolated at its window-grid position (edge-clamped), ≥ 0.5."""
    V, U = crop.shape
    top, left = cy - V * sigma / 2, cx - U * sigma / 2
    # window-grid coordinates of the image pixel centres i + ½ (grid pixel v is centred at v + ½)
    gy = (np.arange(H) + 0.5 - top) / sigma - 0.5
    gx = (np.arange(W) + 0.5 - left) / sigma - 0.5
    inside = ((gy >= -0.5) & (gy <= V - 0.5))[:, None] & ((gx >= -0.5) & (gx <= U - 0.5))[None, :]

    def taps(g, n):
        g = np.clip(g, 0.0, n - 1.0)
        i0 = np.minimum(np.floor(g).astype(int), max(n - 2, 0))
        return i0, np.minimum(i0 + 1, n - 1), g - i0

    y0, y1, ly = taps(gy, V)
    x0, x1, lx = taps(gx, U)
    ly, lx = ly[:, None], lx[None, :]
    val = (
        (1 - ly) * (1 - lx) * crop[np.ix_(y0, x0)]
        + (1 - ly) * lx * crop[np.ix_(y0, x1)]
        + ly * (1 - lx) * crop[np.ix_(y1, x0)]
        + ly * lx * crop[np.ix_(y1, x1)]
    )
    return inside & (val >= 0.5)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum()) / float((a | b).sum())


@pytest.mark.parametrize("head", ["bipyramid", "baseline"])
def test_round_trip_iou(head):
    H, W = 256, 384
    ls = level_sizes_for(H, W)
    window_sizes = (11, 15)
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(12):
        r = rng.uniform(12, 90)
        cy, cx = rng.uniform(r, H - r), rng.uniform(r, W - r)
        mask = ellipse_mask(H, W, cy, cx, r * rng.uniform(0.6, 1.0), r * rng.uniform(0.6, 1.0))
        box = tight_box(mask)
        matched = ops.assign_windows(torch.tensor([box]), None, None, ls, STRIDES, window_sizes)
        for w in torch.nonzero(matched >= 0).flatten().tolist():
            # decode the window index: level k, position (y, x), size a
            k, start = 0, 0
            while w >= start + ls[k][0] * ls[k][1] * len(window_sizes):
                start += ls[k][0] * ls[k][1] * len(window_sizes)
                k += 1
            a = (w - start) % len(window_sizes)
            pos = (w - start) // len(window_sizes)
            y, x = divmod(pos, ls[k][1])
            s = STRIDES[k]
            sigma, V = (STRIDES[0], 2**k * window_sizes[a]) if head == "bipyramid" else (s, window_sizes[a])
            assert V * sigma == window_sizes[a] * s  # the window side
            if min(box[2] - box[0], box[3] - box[1]) < 8 * sigma:
                continue  # objects spanning fewer than 8 window pixels are too coarse for the check
            centre = torch.tensor([[y * s, x * s]], dtype=torch.float32)
            crop = ops.crop_windows(torch.as_tensor(mask)[None], torch.tensor([0]), centre, sigma, V, V)
            pasted = paste_ref(crop[0].numpy(), y * s, x * s, sigma, H, W)
            assert iou(pasted, mask) >= 0.9, (head, k, a, box)
            checked += 1
    assert checked >= 10


# ------------------------------------------------------------------------------------------------
# Errors, opcheck
# ------------------------------------------------------------------------------------------------


def _args(**over):
    args = dict(
        masks=torch.zeros(2, 8, 8, dtype=torch.uint8),
        gt_index=torch.tensor([0, 1]),
        centers=torch.zeros(2, 2),
        sigma_vu=1.0,
        V=4,
        U=4,
    )
    args.update(over)
    return args


BAD = [
    (dict(masks=torch.zeros(8, 8)), ValueError, "masks"),
    (dict(masks=torch.zeros(2, 8, 8, dtype=torch.int32)), TypeError, "masks"),
    (dict(gt_index=torch.tensor([[0, 1]])), ValueError, "gt_index"),
    (dict(gt_index=torch.tensor([0, 1], dtype=torch.int32)), TypeError, "gt_index"),
    (dict(centers=torch.zeros(3, 2)), ValueError, "centers"),
    (dict(centers=torch.zeros(2, 3)), ValueError, "centers"),
    (dict(centers=torch.zeros(2, 2, dtype=torch.int64)), TypeError, "centers"),
    (dict(centers=torch.zeros(2, 2, device="meta")), ValueError, "centers"),
    (dict(gt_index=torch.tensor([0, 1], device="meta")), ValueError, "gt_index"),
    (dict(sigma_vu=0.0), ValueError, "sigma_vu"),
    (dict(sigma_vu=float("nan")), ValueError, "sigma_vu"),
    (dict(sigma_vu=1025.0), ValueError, "sigma_vu"),  # ceil(σ)² samples per window pixel: bounded
    (dict(V=0), ValueError, "V"),
    (dict(U=-1), ValueError, "U"),
]


@pytest.mark.parametrize("over,exc,arg", BAD, ids=[f"{b[2]}-{i}" for i, b in enumerate(BAD)])
def test_bad_arguments(over, exc, arg):
    with pytest.raises(exc, match=f"`{arg}`"):
        torch.ops.tensormask.crop_windows(**_args(**over))


@pytest.mark.parametrize("over,exc,arg", BAD, ids=[f"{b[2]}-{i}" for i, b in enumerate(BAD)])
def test_bad_arguments_fake(over, exc, arg):
    with pytest.raises(exc, match=f"`{arg}`"):
        call_in_fake_mode(torch.ops.tensormask.crop_windows, _args(**over))


@pytest.mark.parametrize("bad", [-1, 2])
def test_gt_index_out_of_range(bad):
    with pytest.raises(ValueError, match="`gt_index`"):
        torch.ops.tensormask.crop_windows(**_args(gt_index=torch.tensor([0, bad])))


def test_not_differentiable():
    masks = torch.rand(2, 8, 8, requires_grad=True)
    assert not ops.crop_windows(masks, torch.tensor([0]), torch.tensor([[4.0, 4.0]]), 1.0, 4, 4).requires_grad


def test_opcheck():
    masks = torch.as_tensor(random_masks(2))
    args = (masks, torch.tensor([0, 3, 4, 3]), torch.rand(4, 2) * 60, 2.0, 6, 5)
    torch.library.opcheck(
        torch.ops.tensormask.crop_windows.default,
        args,
        test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"),
    )


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.bool, torch.uint8, torch.float16, torch.float32], ids=str)
def test_cuda_matches_cpu(dtype):
    masks = torch.as_tensor(random_masks(3, G=8, H=120, W=160)).to(dtype)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 8, (300,), generator=g)
    centers = torch.rand(300, 2, generator=g) * torch.tensor([140.0, 180.0]) - 10
    for sigma, V, U in [(1.0, 11, 15), (4.0, 44, 44), (2.5, 7, 3)]:
        cpu = ops.crop_windows(masks, idx, centers, sigma, V, U)
        cuda = ops.crop_windows(masks.cuda(), idx.cuda(), centers.cuda(), sigma, V, U)
        assert torch.equal(cpu, cuda.cpu())


@requires_cuda
def test_cuda_gt_index_out_of_range():
    with pytest.raises(ValueError, match="`gt_index`"):
        torch.ops.tensormask.crop_windows(
            torch.zeros(2, 8, 8, device="cuda"),
            torch.tensor([0, 2], device="cuda"),
            torch.zeros(2, 2, device="cuda"),
            1.0,
            4,
            4,
        )


def test_crop_then_native_paste_round_trips_gt_masks():
    """GT masks cropped into their positive windows' grids (bipyramid and baseline units) and pasted
    back with the native paste op recover the masks: IoU ≥ 0.9 for objects ≥ 8 window pixels wide."""
    h, w = 256, 320
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    masks = torch.stack([
        (yy - 80) ** 2 / 40**2 + (xx - 100) ** 2 / 60**2 < 1,                 # ellipse
        ((yy - 170) ** 2 + (xx - 220) ** 2 < 50**2) & ((yy - 170) ** 2 + (xx - 220) ** 2 > 12**2),  # ring
        (yy > 150) & (yy < 230) & (xx > 30) & (xx < 90),                      # rectangle
    ])
    boxes = []
    for m in masks:
        ys, xs = torch.nonzero(m, as_tuple=True)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    boxes = torch.tensor(boxes, dtype=torch.float32)
    strides = [4, 8, 16, 32, 64]
    levels = [(-(-h // s), -(-w // s)) for s in strides]
    sizes = (11, 15)
    matched = ops.assign_windows(boxes, None, None, levels, strides, sizes)
    checked = 0
    offset = 0
    for k, ((hk, wk), s) in enumerate(zip(levels, strides)):
        count = hk * wk * len(sizes)
        local = matched[offset: offset + count]
        offset += count
        for flat in torch.nonzero(local >= 0).squeeze(1).tolist():
            a, pos = flat % len(sizes), flat // len(sizes)
            y, x = divmod(pos, wk)
            for sigma, grid in ((4.0, sizes[a] * s // 4), (float(s), sizes[a])):  # bipyramid, baseline
                g = int(local[flat])
                side = grid * sigma
                crop = ops.crop_windows(masks, torch.tensor([g]), torch.tensor([[y * s, x * s]], dtype=torch.float32),
                                        sigma, grid, grid)
                obj = boxes[g]
                if min(obj[2] - obj[0], obj[3] - obj[1]) / sigma < 8:  # shorter side ≥ 8 window pixels
                    continue
                box = torch.tensor([[x * s - side / 2, y * s - side / 2, x * s + side / 2, y * s + side / 2]])
                pasted = ops.paste_masks(crop, box, h, w, 0.5)[0]
                iou = float((pasted & masks[g]).sum()) / float((pasted | masks[g]).sum())
                assert iou >= 0.9, (k, a, sigma, iou)
                checked += 1
    assert checked >= 6
