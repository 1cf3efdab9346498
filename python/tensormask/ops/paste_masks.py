"""Mask pasting (paper §4.3: "to convert predicted soft masks to binary masks at the original image
resolution, we use the same method and hyper-parameters as Mask R-CNN") and RLE encoding.

Native kernels: ``cpp/src/ops/paste_masks.cpp`` (CPU, parallel over (mask, image row)) and
``cuda/paste_masks.cu`` (CUDA, one thread per pixel inside a box); the sampling math is in
``cpp/include/tensormask/detail/paste.h``. The op is not differentiable (its output is bool).
"""

from __future__ import annotations

import math

import numpy as np
import torch


def paste_masks(
    masks: torch.Tensor, boxes: torch.Tensor, image_h: int, image_w: int, threshold: float = 0.5
) -> torch.Tensor:
    """Paste soft masks into an ``image_h × image_w`` image and threshold them, all masks at once.

    Mask p is an M×M grid of probabilities covering the box ``boxes[p] = (x1, y1, x2, y2)`` (for
    TensorMask the window box: centre ± side/2), grid cell (v, u) being centred at
    ``(y1 + (v + ½)·(y2 − y1)/M, x1 + (u + ½)·(x2 − x1)/M)``. Image pixel (i, j), centred at
    ``(i + ½, j + ½)``, is True iff its centre lies in the box, ``x1 ≤ j + ½ < x2`` and
    ``y1 ≤ i + ½ < y2``, and the bilinear interpolation of the grid at grid coordinates::

        gx = (j + ½ − x1) / (x2 − x1) · M − ½,    gy = (i + ½ − y1) / (y2 − y1) · M − ½

    with grid values outside the grid taken as 0 is ``≥ threshold``. This is detectron2's
    ``paste_masks_in_image`` (``grid_sample``, ``align_corners=False``, zero padding) restricted to
    the box; pixels outside the box are False (with threshold ≥ 0.5 detectron2 gives the same there).
    Boxes may extend beyond the image, be smaller than a pixel (then they cover at most the one pixel
    whose centre they contain) or be empty (x2 ≤ x1: an all-False mask). The interpolation is
    evaluated in float64, bit-identically on CPU and CUDA.

    Work is O(P·box area) for the sampling; the dense output is zero-filled elsewhere. Masks of
    different resolutions are pasted by separate calls (group them by M); non-square ``(P, Mh, Mw)``
    grids are accepted too.

    Args:
        masks: ``(P, M, M)`` float soft masks (probabilities in [0, 1]), M ≥ 1.
        boxes: ``(P, 4)`` float boxes ``(x1, y1, x2, y2)`` the grids cover, image pixels.
        image_h: output height (pixels).
        image_w: output width (pixels).
        threshold: binarisation threshold on the interpolated probability (0.5 as Mask R-CNN).

    Returns:
        ``(P, image_h, image_w)`` bool, on the device of ``masks``.
    """
    return torch.ops.tensormask.paste_masks(masks, boxes, image_h, image_w, float(threshold))


def masks_to_rle(masks: torch.Tensor, counts_as_str: bool = True) -> list[dict]:
    """COCO run-length encoding of binary masks, with pycocotools' ``mask.encode``.

    Args:
        masks: ``(P, H, W)`` bool (or 0/1 integer) masks, e.g. the output of :func:`paste_masks`; any
            device (copied to the CPU).
        counts_as_str: decode the compressed ``counts`` bytes to ``str`` (JSON-ready, as detectron2's
            COCO evaluation writes them); pycocotools accepts both forms.

    Returns:
        P dicts ``{"size": [H, W], "counts": ...}``, one per mask, in order.

    Raises:
        ImportError: pycocotools is not installed.
    """
    try:
        from pycocotools import mask as mask_util
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("masks_to_rle needs pycocotools (pip install pycocotools)") from e
    if masks.dim() != 3:
        raise ValueError(f"masks_to_rle: `masks` must be a 3D (P, H, W) tensor, got shape {tuple(masks.shape)}")
    if masks.is_floating_point() or masks.is_complex():
        raise TypeError(f"masks_to_rle: `masks` must be a bool or integer tensor, got {masks.dtype}")
    if masks.shape[0] == 0:
        return []
    # pycocotools wants (H, W, P) uint8 in Fortran order.
    array = np.asfortranarray(masks.detach().to("cpu", torch.uint8).permute(1, 2, 0).numpy())
    rles = mask_util.encode(array)
    if counts_as_str:
        for rle in rles:
            rle["counts"] = rle["counts"].decode("utf-8")
    return rles


@torch.library.register_fake("tensormask::paste_masks")
def _paste_masks_fake(masks, boxes, image_h, image_w, threshold=0.5):
    op = "paste_masks"
    if masks.dim() != 3:
        raise ValueError(f"{op}: `masks` must be a 3D (P, M, M) tensor, got shape {tuple(masks.shape)}")
    torch._check_value(
        masks.shape[1] >= 1 and masks.shape[2] >= 1,
        lambda: f"{op}: `masks` must have a mask resolution of at least 1×1, got shape {tuple(masks.shape)}",
    )
    if not masks.is_floating_point():
        raise TypeError(f"{op}: `masks` must be a floating point tensor, got {masks.dtype}")
    P = masks.shape[0]
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(
            f"{op}: `boxes` must have shape (P, 4) with P = {P} (the number of masks), got shape {tuple(boxes.shape)}"
        )
    torch._check_value(
        boxes.shape[0] == P,
        lambda: f"{op}: `boxes` must have shape (P, 4) with P = {P} (the number of masks), "
        f"got shape {tuple(boxes.shape)}",
    )
    if not boxes.is_floating_point():
        raise TypeError(f"{op}: `boxes` must be a floating point tensor, got {boxes.dtype}")
    torch._check_value(image_h >= 0, lambda: f"{op}: `image_h` must be non-negative, got {image_h}")
    torch._check_value(image_w >= 0, lambda: f"{op}: `image_w` must be non-negative, got {image_w}")
    if math.isnan(threshold):
        raise ValueError(f"{op}: `threshold` must be a number, got nan")
    if boxes.device != masks.device:
        raise ValueError(
            f"{op}: `boxes` is on {boxes.device} but `masks` is on {masks.device}; "
            "all tensors must be on the same device"
        )
    return masks.new_empty((P, image_h, image_w), dtype=torch.bool)
