"""Class-aware box non-maximum suppression (paper §4.3: "NMS is applied to the top-scoring predictions
using box IoU on the regressed boxes").

Native kernels: ``cpp/src/ops/nms.cpp`` (CPU: sort, bucket by class, greedy loop per class) and
``cuda/nms.cu`` (CUDA: 64-box bitmask kernel and an on-device reduction); the IoU test is in
``cpp/include/tensormask/detail/nms.h``. The op is not differentiable (its output is indices).
"""

from __future__ import annotations

import math

import torch


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS run independently per class; returns the kept indices by decreasing score.

    The boxes are ranked by a stable descending sort of ``scores`` (equal scores: lower index first;
    NaN scores rank as :func:`torch.sort` puts them, i.e. first). Walking that order, a box is kept
    unless a kept box of the **same class** (``idxs``) ranked before it has IoU > ``iou_threshold``
    with it; boxes of different classes never suppress each other. Equivalent to torchvision's
    ``batched_nms`` but exact for any coordinates (no coordinate-offset trick) and deterministic.

    IoU uses continuous coordinates as torchvision: ``area = (x2 − x1)·(y2 − y1)``,
    ``inter = max(0, min(x2) − max(x1))·max(0, min(y2) − max(y1))``,
    ``IoU = inter / (area_a + area_b − inter)``, defined as 0 when that union is ≤ 0 (e.g. two
    zero-area boxes, which therefore never suppress each other at a threshold ≥ 0). It is evaluated in
    float64, identically on CPU and CUDA.

    Args:
        boxes: ``(R, 4)`` float boxes ``(x1, y1, x2, y2)``, image pixels (x2 ≥ x1, y2 ≥ y1).
        scores: ``(R,)`` float scores (any floating dtype).
        idxs: ``(R,)`` int64 class ids (any values, negative included).
        iou_threshold: suppress at IoU strictly above this (e.g. 0.5 in the paper's setting).

    Returns:
        ``keep``: ``(K,)`` int64 indices into ``boxes``, sorted by decreasing score, on the device of
        ``boxes``.
    """
    return torch.ops.tensormask.batched_nms(boxes, scores, idxs, float(iou_threshold))


def _check_same_device(t: torch.Tensor, arg: str, ref: torch.Tensor, ref_arg: str, op: str) -> None:
    if t.device != ref.device:
        raise ValueError(
            f"{op}: `{arg}` is on {t.device} but `{ref_arg}` is on {ref.device}; all tensors must be on the same device"
        )


@torch.library.register_fake("tensormask::batched_nms")
def _batched_nms_fake(boxes, scores, idxs, iou_threshold):
    op = "batched_nms"
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{op}: `boxes` must be a (R, 4) tensor of XYXY boxes, got shape {tuple(boxes.shape)}")
    if not boxes.is_floating_point():
        raise TypeError(f"{op}: `boxes` must be a floating point tensor, got {boxes.dtype}")
    R = boxes.shape[0]
    if scores.dim() != 1:
        raise ValueError(
            f"{op}: `scores` must have shape (R,) with R = {R} (the number of boxes), got {tuple(scores.shape)}"
        )
    torch._check_value(
        scores.shape[0] == R,
        lambda: f"{op}: `scores` must have shape (R,) with R = {R} (the number of boxes), got {tuple(scores.shape)}",
    )
    if not scores.is_floating_point():
        raise TypeError(f"{op}: `scores` must be a floating point tensor, got {scores.dtype}")
    if idxs.dim() != 1:
        raise ValueError(
            f"{op}: `idxs` must have shape (R,) with R = {R} (the number of boxes), got {tuple(idxs.shape)}"
        )
    torch._check_value(
        idxs.shape[0] == R,
        lambda: f"{op}: `idxs` must have shape (R,) with R = {R} (the number of boxes), got {tuple(idxs.shape)}",
    )
    if idxs.dtype != torch.int64:
        raise TypeError(f"{op}: `idxs` must be an int64 tensor of class ids, got {idxs.dtype}")
    if math.isnan(iou_threshold):
        raise ValueError(f"{op}: `iou_threshold` must be a number, got nan")
    _check_same_device(scores, "scores", boxes, "boxes", op)
    _check_same_device(idxs, "idxs", boxes, "boxes", op)
    # The number of kept boxes depends on the data.
    k = torch.library.get_ctx().new_dynamic_size()
    torch._check(k <= R)
    return boxes.new_empty((k,), dtype=torch.int64)
