"""Inference post-processing (paper §4.3, §A.4): from dense head outputs to at most 100 detections
per image with binary masks at the requested output resolution.

Per image: sigmoid class scores of all windows × classes, score threshold, top-k candidates, box
decoding (regressed boxes, or the masks' bounding boxes for §A.4's NMS on mask boxes), class-aware
NMS on the **unclipped** boxes, the top ``detections_per_image``, then (detectron2's ``arch.py``
``_postprocess``) the boxes are scaled to the output size, clipped to it and detections whose box is
empty after clipping (width or height ≤ 0) are dropped (:func:`clip_and_drop_empty`); then the masks
of the kept windows only are decoded sparsely (:meth:`TensorMaskHead.window_mask_logits`, native
:func:`tensormask.ops.decode_windows`) and pasted into the image (native
:func:`tensormask.ops.paste_masks`). Nothing dense beyond the class scores is built. The stages are
``torch.profiler`` ranges ``tensormask.{candidates,nms,decode,paste}`` (``benchmarks/bench_e2e.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.profiler import record_function

from ..ops import batched_nms, paste_masks
from .heads import HeadOutputs, TensorMaskHead, permute_to_N_HWA_K
from .losses import window_index_table
from .targets import window_boxes


def top_candidates(scores: torch.Tensor, threshold: float, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The at most ``k`` largest of ``scores`` above ``threshold``, by decreasing score; equal scores in
    increasing index order (a stable sort, as the native NMS orders its input).

    Sorts only the candidates not below the k-th largest score (``torch.topk``), not all of them:
    with a low threshold a full sort of every window × class (13 M at 800×1216) dominated the
    post-processing.

    Args:
        scores: ``(R,)`` sigmoid scores of every (window, class), flattened window-major.
        threshold: keep scores strictly above it.
        k: at most this many (``topk_candidates``).

    Returns:
        ``(indices, values)``, both ``(min(k, #above),)``: flat indices into ``scores`` (int64) and their scores.
    """
    cand = torch.nonzero(scores > threshold).squeeze(1)
    values = scores[cand]
    if 0 < k < values.numel():
        kth = torch.topk(values, k, sorted=False).values.min()
        keep = torch.nonzero(values >= kth).squeeze(1)  # the k largest and every score tied with the k-th
        cand, values = cand[keep], values[keep]
    values, order = values.sort(descending=True, stable=True)
    return cand[order[:k]], values[:k]


def _decode_soft_masks(head: TensorMaskHead, mask_features: Sequence[torch.Tensor], image: int,
                       index: torch.Tensor) -> list[torch.Tensor]:
    """Sigmoid masks of windows given as rows (level, a, y, x) of one image, in row order."""
    out: list[torch.Tensor | None] = [None] * len(index)
    for k in range(len(mask_features)):
        for a in range(len(head.window_sizes)):
            sel = torch.nonzero((index[:, 0] == k) & (index[:, 1] == a)).squeeze(1)
            if sel.numel() == 0:
                continue
            rows = torch.cat((torch.full_like(sel[:, None], image), index[sel][:, 2:]), dim=1)
            logits = head.window_mask_logits(mask_features, k, a, rows)
            for i, m in zip(sel.tolist(), logits.sigmoid()):
                out[i] = m
    return out  # type: ignore[return-value]


def _mask_boxes(soft: Sequence[torch.Tensor], wboxes: torch.Tensor, threshold: float) -> torch.Tensor:
    """Bounding boxes (image px) of the window-grid pixels above ``threshold`` (§A.4 mask-box NMS);
    a mask with no such pixel gets its window's centre point."""
    boxes = []
    for m, wb in zip(soft, wboxes):
        v = m.shape[0]
        sigma = (wb[2] - wb[0]) / v
        ys, xs = torch.nonzero(m >= threshold, as_tuple=True)
        if ys.numel() == 0:
            c = torch.stack(((wb[0] + wb[2]) / 2, (wb[1] + wb[3]) / 2))
            boxes.append(torch.cat((c, c)))
            continue
        boxes.append(torch.stack((wb[0] + xs.min() * sigma, wb[1] + ys.min() * sigma,
                                  wb[0] + (xs.max() + 1) * sigma, wb[1] + (ys.max() + 1) * sigma)))
    return torch.stack(boxes) if boxes else wboxes.new_zeros((0, 4))


def clip_and_drop_empty(boxes: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """detectron2's ``Boxes.clip`` then ``Boxes.nonempty(threshold=0)``.

    Args:
        boxes: ``(D, 4)`` XYXY boxes at the output resolution (not modified).
        height, width: the output image size.

    Returns:
        ``(clipped, keep)``: the boxes with x clamped to ``[0, width]`` and y to ``[0, height]``, and a
        ``(D,)`` bool mask, true where the clipped box has width > 0 and height > 0 (false for NaN).
    """
    clipped = torch.stack((boxes[:, 0].clamp(0, width), boxes[:, 1].clamp(0, height),
                           boxes[:, 2].clamp(0, width), boxes[:, 3].clamp(0, height)), dim=1)
    keep = (clipped[:, 2] - clipped[:, 0] > 0) & (clipped[:, 3] - clipped[:, 1] > 0)
    return clipped, keep


def select_detections(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, nms_thresh: float,
                      max_detections: int, input_size: tuple[int, int],
                      output_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """detectron2's order of the last steps: class-aware NMS on the unclipped boxes, the first
    ``max_detections`` survivors, boxes scaled from the input to the output size, clipped to it, and
    empty boxes dropped.

    Args:
        boxes: ``(R, 4)`` float XYXY candidate boxes at the input resolution, unclipped.
        scores: ``(R,)`` candidate scores; labels: ``(R,)`` int64 classes.
        nms_thresh: IoU threshold of :func:`tensormask.ops.batched_nms`.
        max_detections: at most this many NMS survivors are kept (before dropping empty boxes).
        input_size, output_size: (H, W) of the network's input image and of the output.

    Returns:
        ``(keep, boxes)``: ``(D,)`` int64 indices into the candidates by decreasing score and their
        ``(D, 4)`` clipped, non-empty boxes at the output size, D ≤ ``max_detections``.
    """
    (h_in, w_in), (h_out, w_out) = input_size, output_size
    keep = batched_nms(boxes, scores, labels, nms_thresh)[:max_detections]
    sx, sy = w_out / w_in, h_out / h_in
    scaled = boxes[keep] * boxes.new_tensor([sx, sy, sx, sy])
    clipped, nonempty = clip_and_drop_empty(scaled, h_out, w_out)
    return keep[nonempty], clipped[nonempty]


@torch.no_grad()
def postprocess(model, outputs: HeadOutputs, input_sizes: Sequence[tuple[int, int]],
                output_sizes: Sequence[tuple[int, int]] | None = None) -> list[dict[str, torch.Tensor]]:
    """Detections of a batch.

    Args:
        model: the :class:`~tensormask.modeling.tensormask.TensorMask` (its head, box coder, strides and
            ``cfg.inference``).
        outputs: head outputs of the batch (class logits, box deltas, mask features).
        input_sizes: N (H_i, W_i) sizes of the images as fed to the network (before padding).
        output_sizes: N sizes to report detections at (e.g. the original image sizes); default the
            input sizes. Boxes are scaled and masks pasted directly at this resolution.

    Returns:
        per image ``{"boxes": (D, 4) XYXY px, "scores": (D,), "labels": (D,) int64 contiguous ids,
        "masks": (D, H_out, W_out) bool}``, D ≤ ``detections_per_image``, by decreasing score; every box
        lies inside the output image and has positive width and height (:func:`select_detections`).
    """
    cfg = model.cfg.inference
    head: TensorMaskHead = model.head
    output_sizes = list(output_sizes) if output_sizes is not None else list(input_sizes)
    num_classes, num_sizes = head.num_classes, len(head.window_sizes)
    level_sizes = [tuple(x.shape[-2:]) for x in outputs.cls_logits]
    device = outputs.cls_logits[0].device
    with record_function("tensormask.candidates"):
        table = window_index_table(level_sizes, num_sizes, device=device)
        logits = torch.cat([permute_to_N_HWA_K(x, num_classes) for x in outputs.cls_logits], dim=1)
        deltas = None
        if outputs.box_deltas is not None:
            deltas = torch.cat([permute_to_N_HWA_K(x, 4) for x in outputs.box_deltas], dim=1)
    mask_features = outputs.mask_features
    if mask_features is None:
        raise ValueError("postprocess needs the head's mask features (run the head with dense_masks=False)")
    results = []
    for n, ((h_in, w_in), (h_out, w_out)) in enumerate(zip(input_sizes, output_sizes)):
        with record_function("tensormask.candidates"):
            cand, cand_scores = top_candidates(logits[n].flatten().sigmoid(), cfg.score_thresh, cfg.topk_candidates)
            labels = cand % num_classes
            win = cand // num_classes
            index = table[win]
            wboxes = window_boxes(index, model.strides, head.window_sizes)
        soft = None
        if cfg.nms_on == "mask_box" or deltas is None:
            with record_function("tensormask.decode"):
                soft = _decode_soft_masks(head, mask_features, n, index)
                boxes = _mask_boxes(soft, wboxes, cfg.mask_threshold)
        else:
            with record_function("tensormask.candidates"):
                boxes = model.box_coder.apply_deltas(deltas[n][win].float(), wboxes)
        with record_function("tensormask.nms"):
            keep, boxes = select_detections(boxes, cand_scores, labels, cfg.nms_thresh, cfg.detections_per_image,
                                            (h_in, w_in), (h_out, w_out))
        index, wboxes = index[keep], wboxes[keep]
        if soft is not None:
            soft = [soft[i] for i in keep.tolist()]
        else:
            with record_function("tensormask.decode"):
                soft = _decode_soft_masks(head, mask_features, n, index)
        sx, sy = w_out / w_in, h_out / h_in
        wboxes = wboxes * wboxes.new_tensor([sx, sy, sx, sy])  # masks are pasted in their (unclipped) windows
        with record_function("tensormask.paste"):
            masks = torch.zeros((len(keep), h_out, w_out), dtype=torch.bool, device=device)
            sizes = torch.tensor([m.shape[0] for m in soft], device=device) if soft else torch.zeros(0, device=device)
            for size in sizes.unique().tolist():
                sel = torch.nonzero(sizes == size).squeeze(1)
                grids = torch.stack([soft[i] for i in sel.tolist()]).float()
                masks[sel] = paste_masks(grids, wboxes[sel].float(), h_out, w_out, cfg.mask_threshold)
        results.append({"boxes": boxes, "scores": cand_scores[keep], "labels": labels[keep], "masks": masks})
    return results
