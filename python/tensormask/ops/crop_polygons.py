"""Mask targets of polygon annotations: each positive window's polygons rasterised on its own grid.

The polygon counterpart of :func:`tensormask.ops.crop_windows` (which crops bitmasks), after
detectron2's ``PolygonMasks.crop_and_resize`` / ``rasterize_polygons_within_box`` — its default mask
targets, the polygons having been carried through resize and flip as polygons. Pure Python around
pycocotools: one rasterisation per positive window (a few hundred per image at most), on the CPU.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["crop_polygons", "window_box"]


def window_box(cy: float, cx: float, sigma_vu: float, V: int, U: int) -> np.ndarray:
    """float32 XYXY box ``[cx − U·σ/2, cy − V·σ/2, cx + U·σ/2, cy + V·σ/2]`` of a window (image pixels),
    float32 as detectron2's anchors."""
    half_w, half_h = np.float32(U * sigma_vu / 2), np.float32(V * sigma_vu / 2)
    cx, cy = np.float32(cx), np.float32(cy)
    return np.array([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dtype=np.float32)


def _rasterise(polygons: Sequence[np.ndarray], box: np.ndarray, V: int, U: int) -> np.ndarray:
    """bool (V, U): ``polygons`` (image pixels) shifted by the box's top-left corner, scaled by
    ``U / box_w`` and ``V / box_h`` (each at least 0.1 px, as detectron2), rasterised by pycocotools."""
    from pycocotools import mask as mask_util  # here, not at import: the ops layer loads without it
    w, h = box[2] - box[0], box[3] - box[1]  # float32, as detectron2 computes them from its boxes
    ratio_w = U / max(float(w), 0.1)
    ratio_h = V / max(float(h), 0.1)
    shifted = []
    for p in polygons:
        q = np.array(p, dtype=np.float64)
        q[0::2] = (q[0::2] - box[0]) * ratio_w
        q[1::2] = (q[1::2] - box[1]) * ratio_h
        shifted.append(q)
    rle = mask_util.merge(mask_util.frPyObjects(shifted, V, U))
    with warnings.catch_warnings():  # pycocotools' NumPy-2 "copy keyword" DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_util.decode(rle).astype(bool)


def crop_polygons(
    polygons: Sequence[Sequence[np.ndarray]],
    gt_index: torch.Tensor,
    centers: torch.Tensor,
    sigma_vu: float,
    V: int,
    U: int,
) -> torch.Tensor:
    """Binary mask targets of positive windows from polygon annotations.

    Window p is centred at ``centers[p] = (cy, cx)`` image pixels with V×U pixels of unit ``sigma_vu``
    (the box of :func:`window_box`, as :func:`~tensormask.ops.crop_windows`). The polygons of
    instance ``gt_index[p]`` are shifted by the box's top-left corner, scaled by ``U / box_w`` in x and
    ``V / box_h`` in y, and rasterised at V×U by pycocotools (``frPyObjects`` + ``merge`` +
    ``decode``): detectron2's ``rasterize_polygons_within_box``. Parts outside the image count like
    any other (polygons are not clipped).

    Args:
        polygons: per instance, a non-empty list of float64 ``(2n,)`` arrays ``[x0, y0, ...]``
            (n ≥ 3), image pixels; only the instances named in ``gt_index`` are read.
        gt_index: ``(P,)`` int64, the instance of each window.
        centers: ``(P, 2)`` float window centres ``(cy, cx)``, image pixels.
        sigma_vu: unit σ_VU of the window grid, image pixels (> 0).
        V, U: window grid height and width (≥ 1).

    Returns:
        ``(P, V, U)`` float32 in {0, 1}, on the device of ``centers``.
    """
    if not (0 < float(sigma_vu) < float("inf")):
        raise ValueError(f"crop_polygons: `sigma_vu` must be a positive finite number, got {sigma_vu}")
    if int(V) < 1 or int(U) < 1:
        raise ValueError(f"crop_polygons: `V` and `U` must be positive, got {V} and {U}")
    if gt_index.dim() != 1 or centers.shape != (gt_index.shape[0], 2):
        raise ValueError(
            f"crop_polygons: `gt_index` must be (P,) and `centers` (P, 2), got {tuple(gt_index.shape)} "
            f"and {tuple(centers.shape)}"
        )
    V, U = int(V), int(U)
    idx = gt_index.tolist()
    ctr = centers.detach().cpu().double().numpy()
    out = np.zeros((len(idx), V, U), dtype=np.float32)
    for p, g in enumerate(idx):
        if not 0 <= g < len(polygons) or not polygons[g]:
            raise ValueError(f"crop_polygons: instance {g} (window {p}) has no polygons (of {len(polygons)} instances)")
        out[p] = _rasterise(polygons[g], window_box(ctr[p, 0], ctr[p, 1], float(sigma_vu), V, U), V, U)
    return torch.from_numpy(out).to(centers.device)
