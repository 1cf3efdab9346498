"""Tests of batched_nms (class-aware greedy NMS) against a plain Python greedy loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tensormask  # noqa: F401  (registers torch.ops.tensormask.*)
from tensormask import ops

from .utils import DEVICES, call_in_fake_mode, num_threads, requires_cuda

# ------------------------------------------------------------------------------------------------
# Reference: the definition, in Python floats
# ------------------------------------------------------------------------------------------------


def iou_ref(a, b) -> float:
    """IoU with continuous coordinates, area (x2 − x1)·(y2 − y1); 0 when the union is not positive."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nms_ref(boxes, scores, idxs, thr) -> list[int]:
    """Sort by score (descending; equal scores: lower index first), then keep a box unless a kept box
    of the same class has IoU > thr with it."""
    boxes = torch.as_tensor(boxes).double().tolist()
    scores = torch.as_tensor(scores).double().tolist()
    idxs = torch.as_tensor(idxs).tolist()
    keep: list[int] = []
    for i in sorted(range(len(scores)), key=lambda i: (-scores[i], i)):
        if not any(idxs[k] == idxs[i] and iou_ref(boxes[k], boxes[i]) > thr for k in keep):
            keep.append(i)
    return keep


def random_detections(seed: int, R: int, num_classes: int, offset: float = 0.0):
    """Clustered boxes (heavy overlap), with exact duplicates, zero-area boxes, negative coordinates,
    tied scores and class ids including negative ones."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-40, 200, size=(max(R // 6, 1), 2))
    c = centres[rng.integers(0, len(centres), size=R)] + rng.normal(0, 6, size=(R, 2))
    wh = rng.uniform(2, 60, size=(R, 2))
    boxes = np.concatenate([c - wh / 2, c + wh / 2], axis=1) + offset
    half = rng.random(R) < 0.3
    boxes[half] = np.round(boxes[half] * 2) / 2  # on the half-pixel grid: many exact IoU values
    if R >= 4:
        dup = rng.choice(R, size=R // 8 + 1)
        boxes[rng.choice(R, size=len(dup))] = boxes[dup]  # exact duplicates
        zero = rng.random(R) < 0.05
        boxes[zero, 2] = boxes[zero, 0]  # zero width
        line = rng.random(R) < 0.03
        boxes[line, 3] = boxes[line, 1]  # zero height
    scores = np.round(rng.uniform(0, 1, size=R), 2)  # many ties
    idxs = rng.integers(-2, num_classes - 2, size=R)
    return (
        torch.as_tensor(boxes, dtype=torch.float32),
        torch.as_tensor(scores, dtype=torch.float32),
        torch.as_tensor(idxs, dtype=torch.int64),
    )


# ------------------------------------------------------------------------------------------------
# Reference comparisons
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("R,num_classes", [(1, 1), (2, 1), (40, 1), (120, 3), (200, 6), (200, 80)])
@pytest.mark.parametrize("thr", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_matches_reference(device, R, num_classes, thr):
    boxes, scores, idxs = random_detections(R * 7 + num_classes, R, num_classes)
    keep = ops.batched_nms(boxes.to(device), scores.to(device), idxs.to(device), thr)
    assert keep.dtype == torch.int64 and keep.device.type == device and keep.dim() == 1
    assert keep.tolist() == nms_ref(boxes, scores, idxs, thr)


@pytest.mark.parametrize("seed", range(3))
def test_float64_and_large_coordinates(seed):
    # Far from the origin, classes with big ids: an offset trick would lose precision here.
    boxes, scores, idxs = random_detections(seed, 150, 5, offset=1e6)
    boxes = boxes.double() + torch.rand(150, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    idxs = idxs * 1_000_003
    for thr in (0.4, 0.6):
        assert ops.batched_nms(boxes, scores, idxs, thr).tolist() == nms_ref(boxes, scores, idxs, thr)


def test_empty():
    keep = ops.batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert keep.shape == (0,) and keep.dtype == torch.int64


def test_hand_computed():
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # 0: class 0, kept
            [1.0, 0.0, 11.0, 10.0],  # 1: class 0, IoU 90/110 with box 0 → suppressed
            [1.0, 0.0, 11.0, 10.0],  # 2: class 1: another class, kept
            [20.0, 20.0, 30.0, 30.0],  # 3: class 0, best score, kept
            [0.0, 0.0, 10.0, 10.0],  # 4: class 0, same score as box 0, later index → suppressed by it
            [5.0, 0.0, 15.0, 10.0],  # 5: class 0, IoU 50/150 with box 0 < 0.5 → kept; IoU 60/140 with box 1
        ]
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95, 0.9, 0.6])
    idxs = torch.tensor([0, 0, 1, 0, 0, 0])
    assert ops.batched_nms(boxes, scores, idxs, 0.5).tolist() == [3, 0, 2, 5]
    # suppressed boxes do not suppress: box 1 is gone, so box 5 (IoU 0.43 with it) stays even at 0.4
    assert ops.batched_nms(boxes, scores, idxs, 0.4).tolist() == [3, 0, 2, 5]
    assert ops.batched_nms(boxes, scores, idxs, 0.3).tolist() == [3, 0, 2]
    # exact IoU on the threshold is not suppressed (strictly above only)
    assert ops.batched_nms(boxes[[0, 5]], scores[[0, 5]], idxs[[0, 5]], 1 / 3).tolist() == [0, 1]


def test_zero_area_and_identical_boxes():
    boxes = torch.tensor([[5.0, 5.0, 5.0, 9.0], [5.0, 5.0, 5.0, 9.0], [2.0, 2.0, 4.0, 4.0], [2.0, 2.0, 4.0, 4.0]])
    scores = torch.tensor([0.5, 0.6, 0.7, 0.7])
    idxs = torch.zeros(4, dtype=torch.int64)
    # zero-area boxes have IoU 0 with everything; identical boxes with equal score: first index wins
    assert ops.batched_nms(boxes, scores, idxs, 0.5).tolist() == [2, 1, 0]
    assert ops.batched_nms(boxes, scores, idxs, -0.1).tolist() == [2]  # IoU 0 > −0.1 suppresses all


def test_noncontiguous_and_dtypes():
    boxes, scores, idxs = random_detections(11, 90, 4)
    expected = nms_ref(boxes, scores, idxs, 0.5)
    b = boxes.t().contiguous().t()  # column-major storage
    s = torch.stack([scores, scores], dim=1)[:, 0]
    i = torch.stack([idxs, idxs], dim=1)[:, 1]
    assert not (b.is_contiguous() or s.is_contiguous() or i.is_contiguous())
    assert ops.batched_nms(b, s, i, 0.5).tolist() == expected
    assert ops.batched_nms(boxes.double(), scores.double(), idxs, 0.5).tolist() == expected
    # float16 scores: ties change, the reference sees the same rounded scores
    s16 = scores.half()
    assert ops.batched_nms(boxes, s16, idxs, 0.5).tolist() == nms_ref(boxes, s16, idxs, 0.5)


def test_deterministic_across_threads():
    boxes, scores, idxs = random_detections(5, 300, 20)
    with num_threads(1):
        a = ops.batched_nms(boxes, scores, idxs, 0.5)
    with num_threads(2):
        b = ops.batched_nms(boxes, scores, idxs, 0.5)
    assert torch.equal(a, b)


def test_not_differentiable():
    boxes, scores, idxs = random_detections(1, 20, 2)
    keep = ops.batched_nms(boxes.requires_grad_(), scores.requires_grad_(), idxs, 0.5)
    assert not keep.requires_grad


# ------------------------------------------------------------------------------------------------
# Errors, opcheck, compile
# ------------------------------------------------------------------------------------------------


def _args(**over):
    args = dict(
        boxes=torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 9.0, 9.0]]),
        scores=torch.tensor([0.9, 0.8]),
        idxs=torch.tensor([0, 0]),
        iou_threshold=0.5,
    )
    args.update(over)
    return args


BAD = [
    (dict(boxes=torch.zeros(2, 4, 1)), ValueError, "boxes"),
    (dict(boxes=torch.zeros(2, 5)), ValueError, "boxes"),
    (dict(boxes=torch.zeros(2, 4, dtype=torch.int64)), TypeError, "boxes"),
    (dict(scores=torch.zeros(3)), ValueError, "scores"),
    (dict(scores=torch.zeros(2, 1)), ValueError, "scores"),
    (dict(scores=torch.zeros(2, dtype=torch.int64)), TypeError, "scores"),
    (dict(idxs=torch.zeros(1, dtype=torch.int64)), ValueError, "idxs"),
    (dict(idxs=torch.zeros(2, dtype=torch.int32)), TypeError, "idxs"),
    (dict(idxs=torch.zeros(2)), TypeError, "idxs"),
    (dict(iou_threshold=float("nan")), ValueError, "iou_threshold"),
    (dict(scores=torch.zeros(2, device="meta")), ValueError, "scores"),
    (dict(idxs=torch.zeros(2, dtype=torch.int64, device="meta")), ValueError, "idxs"),
]


@pytest.mark.parametrize("over,exc,arg", BAD, ids=[f"{b[2]}-{i}" for i, b in enumerate(BAD)])
def test_bad_arguments(over, exc, arg):
    with pytest.raises(exc, match=f"`{arg}`"):
        torch.ops.tensormask.batched_nms(**_args(**over))


@pytest.mark.parametrize("over,exc,arg", BAD, ids=[f"{b[2]}-{i}" for i, b in enumerate(BAD)])
def test_bad_arguments_fake(over, exc, arg):
    with pytest.raises(exc, match=f"`{arg}`"):
        call_in_fake_mode(torch.ops.tensormask.batched_nms, _args(**over))


def test_opcheck():
    boxes, scores, idxs = random_detections(3, 60, 3)
    torch.library.opcheck(
        torch.ops.tensormask.batched_nms.default,
        (boxes, scores, idxs, 0.5),
        test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"),
    )


def test_torch_compile_fullgraph():
    boxes, scores, idxs = random_detections(4, 50, 3)

    def f(b, s, i):
        keep = ops.batched_nms(b, s, i, 0.5)
        return b[keep].sum(dim=1)

    expected = f(boxes, scores, idxs)
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        out = torch.compile(f, fullgraph=True, backend="aot_eager")(boxes, scores, idxs)
    assert torch.equal(out, expected)


@requires_cuda
@pytest.mark.parametrize("R,num_classes", [(1, 1), (63, 2), (64, 2), (65, 2), (500, 1), (3000, 80)])
def test_cuda_matches_cpu(R, num_classes):
    boxes, scores, idxs = random_detections(R, R, num_classes)
    for thr in (0.3, 0.5, 0.7):
        cpu = ops.batched_nms(boxes, scores, idxs, thr)
        cuda = ops.batched_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), thr)
        assert cuda.device.type == "cuda"
        assert torch.equal(cpu, cuda.cpu())
