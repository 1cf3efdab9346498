"""Training targets of every sliding window (paper §4.2): native label assignment
(:func:`tensormask.ops.assign_windows`), box deltas of the positives and their GT mask crops on each
window's own grid, as detectron2 makes them: the polygons of a polygon annotation rasterised inside
the window (:func:`tensormask.ops.crop_polygons`), RoIAlign of the bitmask of an RLE/bitmask
annotation (:func:`tensormask.ops.crop_windows`), both ≥ 0.5 → foreground.

Units: boxes and centres in image pixels of the network input (after resizing, before padding —
padding is added at the bottom/right and moves nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..config import AssignConfig
from ..ops import assign_windows, crop_polygons, crop_windows
from ..ops.assign import IGNORE
from .box_coder import Box2BoxTransform
from .heads import WindowGeometry
from .losses import IMAGE, WindowTargets, window_index_table


@dataclass
class InstanceTargets:
    """Ground truth of one image at network-input resolution.

    Attributes:
        masks: ``(G, H, W)`` bool instance masks (read for the instances without polygons).
        boxes: ``(G, 4)`` float ground-truth boxes (the annotations' ``bbox``, detectron2), XYXY,
            x2/y2 exclusive pixel edges.
        labels: ``(G,)`` int64 contiguous class ids in [0, K).
        crowd_mask: ``(H, W)`` bool union of crowd regions (windows centred there are ignored), or
            ``None``.
        polygons: per instance, its polygons (a list of float64 ``(2n,)`` arrays ``[x0, y0, ...]``,
            image pixels) or ``None`` to crop ``masks[i]`` instead; ``None`` = no polygons at all.
    """

    masks: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    crowd_mask: torch.Tensor | None = None
    polygons: Sequence | None = None

    def to(self, device: torch.device | str) -> InstanceTargets:
        return InstanceTargets(
            self.masks.to(device),
            self.boxes.to(device),
            self.labels.to(device),
            None if self.crowd_mask is None else self.crowd_mask.to(device),
            self.polygons,
        )


def crop_targets(gt: InstanceTargets, gt_index: torch.Tensor, centers: torch.Tensor, g: WindowGeometry) -> torch.Tensor:
    """``(P, V, V)`` float32 mask targets of P positive windows of one (level, size) of one image:
    :func:`~tensormask.ops.crop_polygons` for polygon instances, :func:`~tensormask.ops.crop_windows`
    for the others (``gt_index`` (P,) instances, ``centers`` (P, 2) window centres (cy, cx))."""
    polys = gt.polygons
    if polys is None or all(polys[i] is None for i in gt_index.tolist()):
        return crop_windows(gt.masks, gt_index, centers, g.sigma_vu_px, g.size, g.size)
    is_poly = torch.tensor([polys[i] is not None for i in gt_index.tolist()], dtype=torch.bool, device=gt_index.device)
    out = torch.empty((gt_index.shape[0], g.size, g.size), dtype=torch.float32, device=gt.masks.device)
    out[is_poly] = crop_polygons(polys, gt_index[is_poly], centers[is_poly], g.sigma_vu_px, g.size, g.size).to(out.device)
    rest = ~is_poly
    if bool(rest.any()):
        out[rest] = crop_windows(gt.masks, gt_index[rest], centers[rest], g.sigma_vu_px, g.size, g.size)
    return out


def window_boxes(index: torch.Tensor, strides: Sequence[int], window_sizes: Sequence[int]) -> torch.Tensor:
    """XYXY boxes of windows given as rows (level, window_size_idx, y, x).

    The window at level k, position (y, x), size a is centred at (y·s_k, x·s_k) with side
    ``window_sizes[a]·s_k`` image pixels (docs/tensor-ops.md, "Window geometry").
    """
    s = torch.as_tensor(strides, dtype=torch.float32, device=index.device)[index[:, 0]]
    side = torch.as_tensor(window_sizes, dtype=torch.float32, device=index.device)[index[:, 1]] * s
    cy, cx = index[:, 2].float() * s, index[:, 3].float() * s
    half = side / 2
    return torch.stack((cx - half, cy - half, cx + half, cy + half), dim=1)


@torch.no_grad()
def build_targets(
    gts: Sequence[InstanceTargets],
    level_sizes: Sequence[tuple[int, int]],
    strides: Sequence[int],
    window_sizes: Sequence[int],
    geometry: Sequence[Sequence[WindowGeometry]],
    num_classes: int,
    assign_cfg: AssignConfig,
    box_coder: Box2BoxTransform | None,
) -> WindowTargets:
    """Label all windows of a batch and build their class, box and mask targets.

    Args:
        gts: N images' ground truth.
        level_sizes: L feature-map sizes (H_k, W_k).
        strides: L strides s_k (image pixels).
        window_sizes: A window sizes V_0 (level-0 units).
        geometry: ``geometry[k][a]`` from :meth:`TensorMaskHead.window_geometry` — σ_VU and the mask
            size V of level k, window size a (the crops are taken on that grid).
        num_classes: K; background windows get class target K, ignored ones −1.
        assign_cfg: the assignment rule's parameters.
        box_coder: gives the box targets; ``None`` for a model without box head.

    Returns:
        :class:`WindowTargets` over the batch (positives ordered by image, then flat window index).
    """
    num_levels, num_sizes = len(level_sizes), len(window_sizes)
    device = gts[0].boxes.device if gts else torch.device("cpu")
    table = window_index_table(level_sizes, num_sizes, device=device)  # (R, 4): level, a, y, x
    cls_targets, pos_rows, box_targets = [], [], []
    mask_parts: list[list[list[torch.Tensor]]] = [[[] for _ in range(num_sizes)] for _ in range(num_levels)]
    for i, gt in enumerate(gts):
        matched = assign_windows(
            gt.boxes.float(),
            None,
            gt.crowd_mask,
            level_sizes,
            strides,
            window_sizes,
            assign_cfg.scale_thresh,
            assign_cfg.center_thresh,
            assign_cfg.deduct_unit,
            assign_cfg.uniqueness,
            assign_cfg.fallback,
        )
        cls = torch.full_like(matched, num_classes)
        cls[matched == IGNORE] = -1
        pos = torch.nonzero(matched >= 0).squeeze(1)
        gt_index = matched[pos]
        cls[pos] = gt.labels[gt_index]
        cls_targets.append(cls)
        index = table[pos]  # (P_i, 4)
        pos_rows.append(torch.cat((torch.full_like(index[:, :1], i), index), dim=1))
        if box_coder is not None:
            box_targets.append(box_coder.get_deltas(window_boxes(index, strides, window_sizes), gt.boxes[gt_index].float()))
        for k in range(num_levels):
            for a in range(num_sizes):
                sel = (index[:, 0] == k) & (index[:, 1] == a)
                if not bool(sel.any()):
                    continue
                g = geometry[k][a]
                centers = index[sel][:, 2:].float() * strides[k]  # (cy, cx)
                mask_parts[k][a].append(crop_targets(gt, gt_index[sel], centers, g))
    pos_index = torch.cat(pos_rows) if pos_rows else torch.zeros(0, 5, dtype=torch.int64, device=device)
    assert pos_index.shape[1] == 5 and (pos_index[:, IMAGE] >= 0).all()
    return WindowTargets(
        cls_target=torch.stack(cls_targets) if cls_targets else torch.zeros(0, len(table), dtype=torch.int64),
        pos_index=pos_index,
        box_target=torch.cat(box_targets) if box_coder is not None and box_targets else None,
        mask_target=[[torch.cat(parts) if parts else None for parts in row] for row in mask_parts],
    )
