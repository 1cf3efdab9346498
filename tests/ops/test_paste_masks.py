"""Tests of paste_masks (Mask R-CNN-style mask pasting) against explicit per-pixel loops, against
detectron2's grid_sample formulation, and of masks_to_rle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tensormask  # noqa: F401  (registers torch.ops.tensormask.*)
from tensormask import ops

from .utils import DEVICES, call_in_fake_mode, num_threads, requires_cuda

# Mismatches with the float64 reference are only allowed where the reference value is this close to
# the threshold (the kernel evaluates the same formula in a different order of operations).
BAND = 1e-5

# ------------------------------------------------------------------------------------------------
# Reference: explicit loops over the image pixels, straight from the definition
# ------------------------------------------------------------------------------------------------


def paste_ref(masks, boxes, H: int, W: int) -> np.ndarray:
    """Interpolated values (P, H, W) float64, NaN outside the boxes.

    Pixel (i, j) is inside box (x1, y1, x2, y2) when x1 ≤ j + ½ < x2 and y1 ≤ i + ½ < y2; its value is
    the bilinear interpolation of the mask grid at gx = (j + ½ − x1)/(x2 − x1)·M − ½ (likewise gy),
    grid values outside the grid being 0."""
    masks = torch.as_tensor(masks).double().numpy()
    boxes = torch.as_tensor(boxes).double().tolist()
    P = masks.shape[0]
    out = np.full((P, H, W), np.nan)
    for p in range(P):
        m = masks[p]
        Mh, Mw = m.shape
        x1, y1, x2, y2 = boxes[p]

        def grid(i, k):
            return m[i, k] if 0 <= i < Mh and 0 <= k < Mw else 0.0

        for i in range(H):
            if not (y1 <= i + 0.5 < y2):
                continue
            gy = (i + 0.5 - y1) / (y2 - y1) * Mh - 0.5
            y0 = math.floor(gy)
            ly = gy - y0
            for j in range(W):
                if not (x1 <= j + 0.5 < x2):
                    continue
                gx = (j + 0.5 - x1) / (x2 - x1) * Mw - 0.5
                x0 = math.floor(gx)
                lx = gx - x0
                out[p, i, j] = (
                    (1 - ly) * (1 - lx) * grid(y0, x0)
                    + (1 - ly) * lx * grid(y0, x0 + 1)
                    + ly * (1 - lx) * grid(y0 + 1, x0)
                    + ly * lx * grid(y0 + 1, x0 + 1)
                )
    return out


def assert_matches(out: torch.Tensor, values: np.ndarray, threshold: float) -> None:
    """`out` equals (values ≥ threshold) (False where values is NaN), except where the value is within
    BAND of the threshold."""
    assert out.dtype == torch.bool and tuple(out.shape) == values.shape
    inside = ~np.isnan(values)
    expected = inside & (np.nan_to_num(values, nan=-np.inf) >= threshold)
    got = out.cpu().numpy()
    bad = got != expected
    bad &= ~(inside & (np.abs(np.nan_to_num(values) - threshold) <= BAND))
    assert not bad.any(), f"{bad.sum()} mismatches, first at {np.argwhere(bad)[:5].tolist()}"


def random_masks(seed: int, P: int, Mh: int, Mw: int | None = None) -> torch.Tensor:
    """Soft masks: smooth blobs (threshold crossings in the interior), uniform noise, and values that
    sit exactly on 0.5 / 0 / 1."""
    Mw = Mh if Mw is None else Mw
    rng = np.random.default_rng(seed)
    v, u = np.meshgrid(np.arange(Mh) + 0.5, np.arange(Mw) + 0.5, indexing="ij")
    out = []
    for p in range(P):
        kind = p % 3
        if kind == 0:
            cy, cx = rng.uniform(0, Mh), rng.uniform(0, Mw)
            r = rng.uniform(0.3, 0.7) * max(Mh, Mw)
            m = 1 / (1 + np.exp(((v - cy) ** 2 + (u - cx) ** 2 - r * r) / (r + 1)))
        elif kind == 1:
            m = rng.uniform(0, 1, size=(Mh, Mw))
        else:
            m = rng.choice([0.0, 0.5, 1.0, 0.25, 0.75], size=(Mh, Mw))
        out.append(m)
    return torch.as_tensor(np.stack(out) if P else np.zeros((0, Mh, Mw)))


def random_boxes(seed: int, P: int, H: int, W: int) -> torch.Tensor:
    """Boxes inside, partly outside and fully outside the image, tiny (< 1 px) and empty ones, and
    boxes with edges on pixel centres / pixel edges."""
    rng = np.random.default_rng(seed)
    out = []
    for p in range(P):
        kind = p % 6
        if kind == 0:  # inside
            w, h = rng.uniform(3, W * 0.8), rng.uniform(3, H * 0.8)
            x1, y1 = rng.uniform(0, W - w), rng.uniform(0, H - h)
        elif kind == 1:  # partly outside (any side)
            w, h = rng.uniform(5, W * 1.2), rng.uniform(5, H * 1.2)
            x1, y1 = rng.uniform(-w * 0.7, W - w * 0.3), rng.uniform(-h * 0.7, H - h * 0.3)
        elif kind == 2:  # tiny, below one pixel
            w, h = rng.uniform(0.05, 1.0), rng.uniform(0.05, 1.5)
            x1, y1 = rng.uniform(0, W - 1), rng.uniform(0, H - 1)
        elif kind == 3:  # edges on the half-pixel grid (pixel centres and edges)
            x1, y1 = np.round(rng.uniform(-3, W - 4) * 2) / 2, np.round(rng.uniform(-3, H - 4) * 2) / 2
            w, h = np.round(rng.uniform(1, W / 2) * 2) / 2, np.round(rng.uniform(1, H / 2) * 2) / 2
        elif kind == 4:  # TensorMask window box: centre ± side/2 at integer centres
            cx, cy, side = rng.integers(0, W), rng.integers(0, H), rng.choice([11, 15, 22, 30, 44])
            x1, y1, w, h = cx - side / 2, cy - side / 2, side, side
        else:  # empty (zero width) or fully outside
            if rng.random() < 0.5:
                x1, y1, w, h = rng.uniform(0, W), rng.uniform(0, H), 0.0, rng.uniform(1, 10)
            else:
                x1, y1, w, h = W + 2.0, rng.uniform(0, H), 5.0, 5.0
        out.append([x1, y1, x1 + w, y1 + h])
    return torch.as_tensor(np.array(out, dtype=np.float64).reshape(P, 4), dtype=torch.float32)


# ------------------------------------------------------------------------------------------------
# Reference comparisons
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("M", [1, 11, 15, 30])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_matches_reference(device, M, dtype):
    H, W, P = 37, 53, 12
    masks = random_masks(M, P, M).to(dtype)
    boxes = random_boxes(M + 1, P, H, W)
    values = paste_ref(masks, boxes, H, W)
    for threshold in (0.5, 0.3, 0.8):
        out = ops.paste_masks(masks.to(device), boxes.to(device), H, W, threshold)
        assert out.device.type == device
        assert_matches(out, values, threshold)


def test_rectangular_grid_and_box_dtype():
    H, W = 30, 41
    masks = random_masks(2, 7, 9, 14).float()
    boxes = random_boxes(3, 7, H, W).double() + 0.123
    assert_matches(ops.paste_masks(masks, boxes, H, W), paste_ref(masks, boxes, H, W), 0.5)


def test_half_masks():
    H, W = 24, 20
    masks = random_masks(4, 6, 11).half()
    boxes = random_boxes(5, 6, H, W)
    assert_matches(ops.paste_masks(masks, boxes, H, W), paste_ref(masks, boxes, H, W), 0.5)


def test_tiny_boxes_cover_at_most_one_pixel():
    masks = torch.ones(4, 3, 3)
    # centre of pixel (2, 3) is (x 3.5, y 2.5)
    boxes = torch.tensor(
        [
            [3.2, 2.3, 3.8, 2.9],  # contains the centre (3.5, 2.5)
            [3.6, 2.3, 3.9, 2.9],  # no pixel centre inside
            [3.5, 2.5, 3.50001, 2.50001],  # the centre on the (inclusive) top-left edge
            [3.4, 2.4, 3.5, 2.5],  # the centre on the (exclusive) bottom-right edge
        ]
    )
    out = ops.paste_masks(masks, boxes, 5, 6, threshold=0.1)
    assert out.sum((1, 2)).tolist() == [1, 0, 1, 0]
    assert out[0, 2, 3] and out[2, 2, 3]
    assert_matches(out, paste_ref(masks, boxes, 5, 6), 0.1)


def test_hand_computed():
    # 2×2 grid over the box [0, 4)²: along each axis, pixel k has taps
    #   k=0: 0.25·(outside) + 0.75·g0,  k=1: 0.75·g0 + 0.25·g1,  k=2: 0.25·g0 + 0.75·g1,  k=3: 0.75·g1
    masks = torch.tensor([[[1.0, 0.2], [0.6, 0.0]]])
    out = ops.paste_masks(masks, torch.tensor([[0.0, 0.0, 4.0, 4.0]]), 4, 5)
    # rows: (0.5625 0.6 0.3 0.1125), (0.675 0.7125 0.3375 0.1125), (0.525 0.5375 0.2125 0.0375), (0.3375 ...)
    expected = torch.tensor(
        [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool
    )
    assert torch.equal(out[0], expected)


def test_matches_detectron2_grid_sample():
    """Same values as detectron2's _do_paste_mask (grid_sample, align_corners=False, zero padding),
    evaluated over the whole image in float64, inside the boxes."""
    H, W, P, M = 45, 60, 10, 15
    masks = random_masks(8, P, M)
    boxes = random_boxes(9, P, H, W).double()
    x1, y1, x2, y2 = boxes.unbind(1)
    img_y = torch.arange(H, dtype=torch.float64) + 0.5
    img_x = torch.arange(W, dtype=torch.float64) + 0.5
    gy = (img_y[None] - y1[:, None]) / (y2 - y1)[:, None] * 2 - 1
    gx = (img_x[None] - x1[:, None]) / (x2 - x1)[:, None] * 2 - 1
    grid = torch.stack([gx[:, None, :].expand(P, H, W), gy[:, :, None].expand(P, H, W)], dim=3)
    with np.errstate(invalid="ignore"):
        values = F.grid_sample(masks[:, None], grid, align_corners=False)[:, 0].numpy()
    inside = ((img_y[None] >= y1[:, None]) & (img_y[None] < y2[:, None]))[:, :, None] & (
        (img_x[None] >= x1[:, None]) & (img_x[None] < x2[:, None])
    )[:, None, :]
    values[~inside.numpy()] = np.nan
    assert_matches(ops.paste_masks(masks, boxes, H, W), values, 0.5)


def test_empty_inputs():
    out = ops.paste_masks(torch.zeros(0, 28, 28), torch.zeros(0, 4), 20, 30)
    assert out.shape == (0, 20, 30) and out.dtype == torch.bool
    out = ops.paste_masks(torch.ones(2, 5, 5), torch.tensor([[0.0, 0, 4, 4], [1, 1, 3, 3]]), 0, 7)
    assert out.shape == (2, 0, 7)
    # empty, inverted and NaN boxes paste nothing
    boxes = torch.tensor([[2.0, 2, 2, 6], [5, 5, 1, 1], [float("nan"), 0, 4, 4]])
    assert not ops.paste_masks(torch.ones(3, 4, 4), boxes, 8, 8, threshold=0.0).any()


def test_box_covering_the_image_and_more():
    masks = torch.ones(1, 30, 30)
    out = ops.paste_masks(masks, torch.tensor([[-100.0, -100.0, 200.0, 200.0]]), 16, 24)
    assert out.all()
    out = ops.paste_masks(masks, torch.tensor([[0.0, 0.0, 24.0, 16.0]]), 16, 24, threshold=0.6)
    # the outermost ring of pixels samples half outside the grid along one or two axes
    assert_matches(out, paste_ref(masks, torch.tensor([[0.0, 0.0, 24.0, 16.0]]), 16, 24), 0.6)


def test_noncontiguous_and_threads():
    H, W = 33, 47
    masks = random_masks(1, 9, 15)
    boxes = random_boxes(2, 9, H, W)
    expected = ops.paste_masks(masks, boxes, H, W)
    m = masks.transpose(1, 2).contiguous().transpose(1, 2)
    b = boxes.t().contiguous().t()
    assert not (m.is_contiguous() or b.is_contiguous())
    assert torch.equal(ops.paste_masks(m, b, H, W), expected)
    with num_threads(1):
        assert torch.equal(ops.paste_masks(masks, boxes, H, W), expected)


def test_not_differentiable():
    masks = torch.rand(2, 5, 5, requires_grad=True)
    out = ops.paste_masks(masks, torch.tensor([[0.0, 0, 4, 4], [1, 1, 3, 3]]), 6, 6)
    assert not out.requires_grad


# ------------------------------------------------------------------------------------------------
# masks_to_rle
# ------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools decode vs numpy 2
def test_masks_to_rle_round_trip():
    mask_util = pytest.importorskip("pycocotools.mask")
    H, W = 37, 53
    masks = ops.paste_masks(random_masks(6, 8, 15), random_boxes(7, 8, H, W), H, W)
    rles = ops.masks_to_rle(masks)
    assert len(rles) == 8
    for rle, m in zip(rles, masks):
        assert rle["size"] == [H, W] and isinstance(rle["counts"], str)
        assert np.array_equal(mask_util.decode(rle), m.numpy().astype(np.uint8))
        assert mask_util.area(rle) == int(m.sum())
    raw = ops.masks_to_rle(masks[:2], counts_as_str=False)
    assert isinstance(raw[0]["counts"], bytes) and raw[0]["counts"].decode() == rles[0]["counts"]
    assert ops.masks_to_rle(torch.zeros(0, H, W, dtype=torch.bool)) == []


def test_masks_to_rle_bad_input():
    pytest.importorskip("pycocotools.mask")
    with pytest.raises(ValueError, match="`masks`"):
        ops.masks_to_rle(torch.zeros(4, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="`masks`"):
        ops.masks_to_rle(torch.zeros(1, 4, 4))


# ------------------------------------------------------------------------------------------------
# Errors, opcheck, compile
# ------------------------------------------------------------------------------------------------


def _args(**over):
    args = dict(masks=torch.rand(2, 7, 7), boxes=torch.tensor([[0.0, 0, 4, 4], [1, 1, 3, 3]]), image_h=8, image_w=9)
    args.update(over)
    return args


BAD = [
    (dict(masks=torch.rand(7, 7)), ValueError, "masks"),
    (dict(masks=torch.rand(2, 0, 7)), ValueError, "masks"),
    (dict(masks=torch.zeros(2, 7, 7, dtype=torch.uint8)), TypeError, "masks"),
    (dict(boxes=torch.zeros(3, 4)), ValueError, "boxes"),
    (dict(boxes=torch.zeros(2, 5)), ValueError, "boxes"),
    (dict(boxes=torch.zeros(2, 4, dtype=torch.int64)), TypeError, "boxes"),
    (dict(boxes=torch.zeros(2, 4, device="meta")), ValueError, "boxes"),
    (dict(image_h=-1), ValueError, "image_h"),
    (dict(image_w=-3), ValueError, "image_w"),
    (dict(threshold=float("nan")), ValueError, "threshold"),
]


@pytest.mark.parametrize("over,exc,arg", BAD, ids=[f"{b[2]}-{i}" for i, b in enumerate(BAD)])
def test_bad_arguments(over, exc, arg):
    with pytest.raises(exc, match=f"`{arg}`"):
        torch.ops.tensormask.paste_masks(**_args(**over))


@pytest.mark.parametrize("over,exc,arg", BAD, ids=[f"{b[2]}-{i}" for i, b in enumerate(BAD)])
def test_bad_arguments_fake(over, exc, arg):
    with pytest.raises(exc, match=f"`{arg}`"):
        call_in_fake_mode(torch.ops.tensormask.paste_masks, _args(**over))


def test_opcheck():
    masks = random_masks(3, 5, 11).float()
    boxes = random_boxes(4, 5, 20, 24)
    torch.library.opcheck(
        torch.ops.tensormask.paste_masks.default,
        (masks, boxes, 20, 24, 0.5),
        test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"),
    )


def test_torch_compile_fullgraph():
    masks = random_masks(5, 4, 11).float()
    boxes = random_boxes(6, 4, 20, 24)

    def f(m, b, image):
        return ops.paste_masks(m, b, image.shape[0], image.shape[1]).sum((1, 2))

    image = torch.zeros(20, 24)
    expected = f(masks, boxes, image)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager", dynamic=True)
    assert torch.equal(compiled(masks, boxes, image), expected)


@requires_cuda
@pytest.mark.parametrize("M", [1, 15, 28, 60])
def test_cuda_matches_cpu(M):
    H, W, P = 200, 304, 60
    masks = random_masks(M, P, M).float()
    boxes = random_boxes(M + 2, P, H, W) * 2
    cpu = ops.paste_masks(masks, boxes, H, W)
    cuda = ops.paste_masks(masks.cuda(), boxes.cuda(), H, W)
    assert cuda.device.type == "cuda"
    assert torch.equal(cpu, cuda.cpu())  # the same float64 arithmetic: bit-identical
