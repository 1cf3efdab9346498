"""Box coder: the (dx, dy, dw, dh) parameterisation of R-CNN / detectron2's ``Box2BoxTransform``.

Boxes are XYXY in image pixels: ``(x1, y1, x2, y2)``, width ``x2 − x1`` (no "+1"), centre
``x1 + width/2``. With weights ``(wx, wy, ww, wh)``::

    dx = wx·(tx − sx)/sw      dy = wy·(ty − sy)/sh
    dw = ww·log(tw/sw)        dh = wh·log(th/sh)

where (sx, sy, sw, sh) are the centre and size of the source box (the sliding window) and
(tx, ty, tw, th) those of the target box. TensorMask uses weights (1.5, 1.5, 0.75, 0.75)
(``LossConfig.bbox_reg_weights``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

# Clamp of dw/dh before exp(), as detectron2: a box may grow at most 1000/16 ≈ 62× per side.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


class Box2BoxTransform:
    """Encode target boxes relative to source boxes and decode deltas back (detectron2 semantics).

    Args:
        weights: ``(wx, wy, ww, wh)`` scaling of the deltas (dimensionless).
        scale_clamp: upper bound applied to dw/dh (after dividing by ww/wh) before ``exp``.
    """

    def __init__(self, weights: Sequence[float] = (1.5, 1.5, 0.75, 0.75), scale_clamp: float = DEFAULT_SCALE_CLAMP):
        if len(weights) != 4:
            raise ValueError(f"Box2BoxTransform: `weights` must have 4 entries (wx, wy, ww, wh), got {tuple(weights)}")
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = float(scale_clamp)

    def __repr__(self) -> str:
        return f"Box2BoxTransform(weights={self.weights}, scale_clamp={self.scale_clamp:.4f})"

    def get_deltas(self, src_boxes: torch.Tensor, target_boxes: torch.Tensor) -> torch.Tensor:
        """Deltas that transform ``src_boxes`` into ``target_boxes``.

        Args:
            src_boxes: ``(R, 4)`` XYXY boxes in image pixels (the windows), positive width/height.
            target_boxes: ``(R, 4)`` XYXY boxes in image pixels (the ground truth).

        Returns:
            ``(R, 4)`` deltas ``(dx, dy, dw, dh)``, dimensionless.
        """
        if src_boxes.shape != target_boxes.shape or src_boxes.shape[-1:] != (4,) or src_boxes.dim() != 2:
            raise ValueError(
                f"get_deltas: expected two (R, 4) tensors, got {tuple(src_boxes.shape)} and {tuple(target_boxes.shape)}"
            )
        src_w = src_boxes[:, 2] - src_boxes[:, 0]
        src_h = src_boxes[:, 3] - src_boxes[:, 1]
        src_x = src_boxes[:, 0] + 0.5 * src_w
        src_y = src_boxes[:, 1] + 0.5 * src_h

        tgt_w = target_boxes[:, 2] - target_boxes[:, 0]
        tgt_h = target_boxes[:, 3] - target_boxes[:, 1]
        tgt_x = target_boxes[:, 0] + 0.5 * tgt_w
        tgt_y = target_boxes[:, 1] + 0.5 * tgt_h

        wx, wy, ww, wh = self.weights
        dx = wx * (tgt_x - src_x) / src_w
        dy = wy * (tgt_y - src_y) / src_h
        dw = ww * torch.log(tgt_w / src_w)
        dh = wh * torch.log(tgt_h / src_h)
        return torch.stack((dx, dy, dw, dh), dim=1)

    def apply_deltas(self, deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Decode ``deltas`` relative to ``boxes``.

        Args:
            deltas: ``(R, 4·k)`` deltas ``(dx, dy, dw, dh)`` (k ≥ 1 boxes per row, as detectron2).
            boxes: ``(R, 4)`` XYXY source boxes in image pixels.

        Returns:
            ``(R, 4·k)`` XYXY boxes in image pixels, in the dtype of ``deltas`` promoted to at least
            float32 (detectron2 computes in float32).
        """
        if deltas.dim() != 2 or deltas.shape[1] % 4 != 0 or boxes.dim() != 2 or boxes.shape[1] != 4:
            raise ValueError(
                f"apply_deltas: expected deltas (R, 4k) and boxes (R, 4), got {tuple(deltas.shape)} and {tuple(boxes.shape)}"
            )
        if deltas.shape[0] != boxes.shape[0]:
            raise ValueError(f"apply_deltas: {deltas.shape[0]} rows of deltas for {boxes.shape[0]} boxes")
        dtype = torch.promote_types(deltas.dtype, torch.float32)
        deltas = deltas.to(dtype)
        boxes = boxes.to(dtype)

        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        ctr_x = boxes[:, 0] + 0.5 * widths
        ctr_y = boxes[:, 1] + 0.5 * heights

        wx, wy, ww, wh = self.weights
        dx = deltas[:, 0::4] / wx
        dy = deltas[:, 1::4] / wy
        dw = torch.clamp(deltas[:, 2::4] / ww, max=self.scale_clamp)
        dh = torch.clamp(deltas[:, 3::4] / wh, max=self.scale_clamp)

        pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
        pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
        pred_w = torch.exp(dw) * widths[:, None]
        pred_h = torch.exp(dh) * heights[:, None]

        x1 = pred_ctr_x - 0.5 * pred_w
        y1 = pred_ctr_y - 0.5 * pred_h
        x2 = pred_ctr_x + 0.5 * pred_w
        y2 = pred_ctr_y + 0.5 * pred_h
        return torch.stack((x1, y1, x2, y2), dim=-1).reshape(deltas.shape)
