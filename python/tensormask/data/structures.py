"""The per-image training/evaluation sample and its helpers.

A :class:`Sample` holds one image and its ground truth at the image's current size (after any
transform). Coordinates are in image pixels (pixel i covers ``[i, i + 1)``), boxes are XYXY with
exclusive ``x2``/``y2``: a mask whose foreground columns are ``c0..c1`` (inclusive) has tight box
``x1 = c0`` and ``x2 = c1 + 1``, so the box of a full ``H×W`` mask is ``(0, 0, W, H)``.

Ground-truth boxes follow detectron2: the annotation's ``bbox`` (``[x, y, w, h]`` → XYXY), mapped by
the same resize and flip as the image and clipped to it; the tight box of the mask only for an
annotation without ``bbox``. Polygon annotations also keep their polygons, carried through the
transforms as polygons (detectron2's ``PolygonMasks``), for the mask targets.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["Sample", "collate", "masks_to_boxes", "nonempty", "nonempty_boxes", "xywh_to_xyxy"]


def xywh_to_xyxy(bbox: Sequence[float], height: int, width: int) -> np.ndarray:
    """A COCO ``bbox`` ``[x, y, w, h]`` as float64 XYXY clipped to the ``height × width`` image
    (detectron2's ``BoxMode.convert`` then its clip in ``transform_instance_annotations``)."""
    x, y, w, h = (float(v) for v in bbox)
    box = np.array([x, y, x + w, y + h], dtype=np.float64).clip(min=0.0)
    return np.minimum(box, [width, height, width, height])


def nonempty_boxes(boxes: torch.Tensor, threshold: float = 1e-5) -> torch.Tensor:
    """bool (G,): boxes wider and taller than ``threshold`` pixels (detectron2's ``Boxes.nonempty``)."""
    return ((boxes[:, 2] - boxes[:, 0]) > threshold) & ((boxes[:, 3] - boxes[:, 1]) > threshold)


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight XYXY boxes (x2/y2 exclusive) of binary masks.

    Args:
        masks: bool (G, H, W).

    Returns:
        float32 (G, 4). An empty mask gets the box (0, 0, 0, 0); callers drop empty masks first.
    """
    if masks.dim() != 3:
        raise ValueError(f"masks must be (G, H, W), got shape {tuple(masks.shape)}")
    g, h, w = masks.shape
    if g == 0:
        return torch.zeros((0, 4), dtype=torch.float32, device=masks.device)
    if masks.device.type == "cpu":
        # NumPy's boolean reductions are much faster than torch's on CPU.
        m = masks.bool().numpy()
        cols, rows = m.any(axis=1), m.any(axis=2)  # (G, W), (G, H)
        boxes = np.stack(
            [cols.argmax(1), rows.argmax(1), w - cols[:, ::-1].argmax(1), h - rows[:, ::-1].argmax(1)], axis=1
        ).astype(np.float32)
        boxes[~cols.any(axis=1)] = 0.0
        return torch.from_numpy(boxes)
    masks = masks.bool()
    cols = masks.any(dim=1)
    rows = masks.any(dim=2)
    # argmax returns the first maximal index: first True from the left, and from the right on the flip.
    x1 = cols.to(torch.uint8).argmax(dim=1)
    x2 = w - cols.flip(1).to(torch.uint8).argmax(dim=1)
    y1 = rows.to(torch.uint8).argmax(dim=1)
    y2 = h - rows.flip(1).to(torch.uint8).argmax(dim=1)
    boxes = torch.stack([x1, y1, x2, y2], dim=1).to(torch.float32)
    boxes[~cols.any(dim=1)] = 0.0
    return boxes


def nonempty(masks: torch.Tensor) -> torch.Tensor:
    """bool (G,): which of the (G, H, W) masks have at least one pixel."""
    if masks.device.type == "cpu":
        return torch.from_numpy(masks.bool().numpy().any(axis=(1, 2)))
    return masks.flatten(1).any(dim=1)


@dataclass
class Sample:
    """One image with its ground truth.

    Attributes:
        image: uint8 (3, H, W), RGB.
        masks: bool (G, H, W), one visible-instance mask per object (non-crowd). A polygon
            instance's mask may be empty after a downscale (its polygons are not).
        boxes: float32 (G, 4), XYXY ground-truth boxes (x2/y2 exclusive): the annotation's ``bbox``
            transformed with the image (detectron2), or the tight box of the mask where the
            annotation has no ``bbox``.
        labels: int64 (G,), contiguous class labels in ``0..K-1``.
        crowd_masks: bool (C, H, W), crowd (``iscrowd=1``) regions, to be ignored by the losses.
        image_id: the image's id in the dataset's JSON.
        file_name: the image's file name as written in the JSON.
        orig_size: (H, W) of the image as read from disk (after EXIF orientation).
        scale: resize factor applied to the original image (new shorter side / old shorter side,
            before rounding); :attr:`scale_xy` gives the exact per-axis factors.
        flipped: whether a horizontal flip was applied.
        ann_ids: int64 (G,), the annotation id of each instance (-1 where unknown).
        polygons: per instance, the polygons of a polygon annotation — a list of float64 (2·n,)
            arrays ``[x0, y0, x1, y1, ...]`` (n ≥ 3) in the current image's pixel coordinates — or
            ``None`` for an RLE/bitmask annotation; ``None`` (the default) = all ``None``.
    """

    image: torch.Tensor
    masks: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    crowd_masks: torch.Tensor
    image_id: int
    file_name: str
    orig_size: tuple[int, int]
    scale: float = 1.0
    flipped: bool = False
    ann_ids: torch.Tensor | None = None
    polygons: list[list[np.ndarray] | None] | None = None

    def __post_init__(self) -> None:
        if self.ann_ids is None:
            self.ann_ids = torch.full((self.labels.shape[0],), -1, dtype=torch.int64)
        if self.polygons is None:
            self.polygons = [None] * int(self.labels.shape[0])
        self.validate()

    # ------------------------------------------------------------------ properties
    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of :attr:`image`."""
        return int(self.image.shape[1]), int(self.image.shape[2])

    @property
    def num_instances(self) -> int:
        return int(self.labels.shape[0])

    @property
    def scale_xy(self) -> tuple[float, float]:
        """Exact (sx, sy) with ``current = original * s`` per axis; divide predictions by it to map back."""
        h, w = self.image_size
        oh, ow = self.orig_size
        return w / ow, h / oh

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Check dtypes and shapes; raise ``ValueError`` naming the file on any inconsistency."""

        def bad(msg: str) -> ValueError:
            return ValueError(f"invalid sample for '{self.file_name}' (image id {self.image_id}): {msg}")

        im = self.image
        if im.dtype != torch.uint8 or im.dim() != 3 or im.shape[0] != 3:
            raise bad(f"image must be uint8 (3, H, W), got {im.dtype} {tuple(im.shape)}")
        h, w = self.image_size
        g = self.labels.shape[0]
        checks = [
            (self.masks, torch.bool, (g, h, w), "masks"),
            (self.boxes, torch.float32, (g, 4), "boxes"),
            (self.labels, torch.int64, (g,), "labels"),
            (self.ann_ids, torch.int64, (g,), "ann_ids"),
        ]
        for t, dtype, shape, name in checks:
            if t.dtype != dtype or tuple(t.shape) != shape:
                raise bad(f"{name} must be {dtype} {shape}, got {t.dtype} {tuple(t.shape)}")
        polys = self.polygons
        if not isinstance(polys, list) or len(polys) != g:
            raise bad(f"polygons must be a list of {g} entries (None or a list of polygons), got {type(polys).__name__}"
                      + (f" of {len(polys)}" if isinstance(polys, list) else ""))
        for i, inst in enumerate(polys):
            if inst is None:
                continue
            if not isinstance(inst, list) or not inst or not all(
                isinstance(p, np.ndarray) and p.dtype == np.float64 and p.ndim == 1 and p.size >= 6 and p.size % 2 == 0
                for p in inst
            ):
                raise bad(f"polygons[{i}] must be None or a non-empty list of float64 (2n,) arrays with n >= 3")
        cm = self.crowd_masks
        if cm.dtype != torch.bool or cm.dim() != 3 or tuple(cm.shape[1:]) != (h, w):
            raise bad(f"crowd_masks must be bool (C, {h}, {w}), got {cm.dtype} {tuple(cm.shape)}")

    # ------------------------------------------------------------------ utilities
    def replace(self, **changes: Any) -> "Sample":
        """A copy with fields replaced (validated)."""
        return dataclasses.replace(self, **changes)

    def select(self, keep: torch.Tensor) -> "Sample":
        """A copy with only the instances where the bool (G,) ``keep`` is True (crowd regions kept)."""
        idx = torch.nonzero(keep).flatten().tolist()
        return self.replace(
            masks=self.masks[keep],
            boxes=self.boxes[keep],
            labels=self.labels[keep],
            ann_ids=self.ann_ids[keep],
            polygons=[self.polygons[i] for i in idx],
        )

    def to(self, device: torch.device | str) -> "Sample":
        """A copy with every tensor moved to ``device``."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return dataclasses.replace(self, **moved)


def collate(samples: Sequence[Sample | None]) -> list[Sample]:
    """``collate_fn`` for ``torch.utils.data.DataLoader``: a plain list, nothing stacked.

    Images differ in size; the model pads them to its size divisibility. ``None`` entries (images a
    dataset in ``on_error="skip"`` mode could not read) are dropped, so the list may be shorter than
    the batch size, or empty.
    """
    return [s for s in samples if s is not None]
