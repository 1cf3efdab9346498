"""Training/test transforms on :class:`~tensormask.data.structures.Sample`.

Every transform is called as ``t(sample, generator=None) -> sample``; randomness comes only from
``generator`` (a ``torch.Generator``; ``None`` = torch's global RNG), so a seeded generator gives the
same output every time. Padding to the FPN's size divisibility is left to the model.

Paper setting (TensorMask §4.4, detectron2): shorter side sampled uniformly from [640, 800] with the
longer side capped at 1333 and horizontal flips with probability 0.5 for training; shorter side 800
for testing. The CPU demo uses smaller images (see :func:`build_transforms`).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

import numpy as np

from .structures import Sample, nonempty, nonempty_boxes

__all__ = [
    "Compose",
    "ResizeShortestEdge",
    "RandomHorizontalFlip",
    "build_transforms",
    "resize_sample",
    "hflip_sample",
    "resized_shape",
    "resize_image",
]


def resized_shape(h: int, w: int, short_edge: int, max_size: int) -> tuple[int, int, float]:
    """Size after scaling the shorter side to ``short_edge``, the longer capped at ``max_size``.

    detectron2's ``ResizeShortestEdge.get_output_shape``, with its float64 operations in its order
    (sizes on a .5 boundary round as there, e.g. 352×704 → 666×1333): the shorter side becomes
    ``short_edge``, the longer ``short_edge / min(h, w) · max(h, w)``; if the longer exceeds
    ``max_size`` both are multiplied by ``max_size / longer``; then ``int(x + 0.5)`` (at least 1 here,
    where detectron2 would produce an empty image).

    Returns ``(new_h, new_w, scale)`` with ``scale = new_h / h`` before rounding.
    """
    size = float(short_edge)
    scale = size / min(h, w)
    new_h, new_w = (size, scale * w) if h < w else (scale * h, size)
    if max(new_h, new_w) > max_size:
        cap = max_size / max(new_h, new_w)
        new_h, new_w = new_h * cap, new_w * cap
    return max(1, int(new_h + 0.5)), max(1, int(new_w + 0.5)), new_h / h


def resize_image(image: torch.Tensor, new_h: int, new_w: int) -> torch.Tensor:
    """Resize a ``(C, H, W)`` image to ``(C, new_h, new_w)`` as detectron2's ``ResizeTransform``.

    uint8 images: ``PIL.Image.resize((new_w, new_h), BILINEAR)`` on the HWC array (Pillow's bilinear
    filter widens with the downscale factor, i.e. antialiases; fixed-point weights, uint8 rounding
    after each pass) — detectron2's pixels exactly. Other dtypes: ``F.interpolate`` bilinear with
    antialiasing (align_corners=False), same dtype.
    """
    if image.dtype != torch.uint8:
        out = F.interpolate(image[None].float(), size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
        return out[0].to(image.dtype)
    if tuple(image.shape[-2:]) == (new_h, new_w):
        return image.clone()
    from PIL import Image

    hwc = image.permute(1, 2, 0).contiguous().cpu().numpy()
    pil = Image.fromarray(hwc[:, :, 0] if hwc.shape[2] == 1 else hwc)
    out = np.asarray(pil.resize((new_w, new_h), Image.BILINEAR))
    return torch.from_numpy(out.reshape(new_h, new_w, -1).copy()).permute(2, 0, 1).contiguous().to(image.device)


def _drop_empty(sample: Sample) -> Sample:
    """detectron2's ``filter_empty_instances`` after a transform: drop instances whose box is empty
    (width or height ≤ 1e-5 px) or, for RLE/bitmask instances, whose mask has no pixel left (a polygon
    instance keeps its polygons, so it stays); drop crowd regions without a pixel."""
    has_poly = torch.tensor([p is not None for p in sample.polygons], dtype=torch.bool)
    keep = nonempty_boxes(sample.boxes) & (has_poly | nonempty(sample.masks))
    out = sample.select(keep) if not bool(keep.all()) else sample
    ckeep = nonempty(sample.crowd_masks)
    return out if bool(ckeep.all()) else out.replace(crowd_masks=sample.crowd_masks[ckeep])


def _scale_boxes(boxes: torch.Tensor, sx: float, sy: float, new_h: int, new_w: int) -> torch.Tensor:
    """detectron2's ``ResizeTransform.apply_box`` (x·sx, y·sy in float64) then its clip to the image."""
    b = boxes.numpy().astype(np.float64) * np.array([sx, sy, sx, sy])
    b = np.minimum(b.clip(min=0.0), [new_w, new_h, new_w, new_h])
    return torch.from_numpy(b.astype(np.float32)).reshape(-1, 4)


def _map_polygons(polygons: list, fn) -> list:
    """``fn`` applied to a copy of every polygon (flat float64 [x0, y0, x1, y1, ...]) of every instance;
    instances without polygons (``None``) stay ``None``."""
    return [None if inst is None else [fn(p.copy()) for p in inst] for inst in polygons]


def _scale_polygons(polygons: list, sx: float, sy: float) -> list:
    """Polygons resized as coordinates (detectron2's ``apply_polygons``: x·sx, y·sy, float64, unclipped)."""
    def scale(q: np.ndarray) -> np.ndarray:
        q[0::2] *= sx
        q[1::2] *= sy
        return q

    return _map_polygons(polygons, scale)


def _flip_polygons(polygons: list, w: int) -> list:
    """Polygons mirrored left-right: x → W − x (detectron2's ``HFlipTransform.apply_coords``)."""
    def flip(q: np.ndarray) -> np.ndarray:
        q[0::2] = w - q[0::2]
        return q

    return _map_polygons(polygons, flip)


def _resize_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if masks.shape[0] == 0:
        return torch.zeros((0, *size), dtype=torch.bool, device=masks.device)
    # nearest-exact samples at pixel centres (plain "nearest" is shifted by half a pixel).
    out = F.interpolate(masks[None].to(torch.uint8), size=size, mode="nearest-exact")
    return out[0].bool()


def resize_sample(sample: Sample, new_h: int, new_w: int, scale: float | None = None) -> Sample:
    """Resize image (:func:`resize_image`: PIL bilinear as detectron2), masks (nearest at pixel centres), boxes and polygons.

    Boxes and polygons are scaled per axis by ``new_w / W`` and ``new_h / H`` as coordinates
    (detectron2's ``ResizeTransform``), boxes then clipped to the image. RLE/bitmask instances whose
    mask vanishes (thinner than a pixel after shrinking) and instances with an empty box are dropped
    (see :func:`_drop_empty`). ``scale`` (default: ``new_h / H``) multiplies the sample's recorded
    :attr:`Sample.scale`.
    """
    h, w = sample.image_size
    if scale is None:
        scale = new_h / h
    if (new_h, new_w) == (h, w):
        return sample.replace(scale=sample.scale * scale)
    img = resize_image(sample.image, new_h, new_w)
    out = sample.replace(
        image=img,
        masks=_resize_masks(sample.masks, (new_h, new_w)),
        boxes=_scale_boxes(sample.boxes, new_w * 1.0 / w, new_h * 1.0 / h, new_h, new_w),
        polygons=_scale_polygons(sample.polygons, new_w * 1.0 / w, new_h * 1.0 / h),
        crowd_masks=_resize_masks(sample.crowd_masks, (new_h, new_w)),
        scale=sample.scale * scale,
    )
    return _drop_empty(out)


def hflip_sample(sample: Sample) -> Sample:
    """Mirror image, masks and crowd masks left-right; boxes flipped exactly (x1' = W − x2) and
    polygons as coordinates (x' = W − x)."""
    w = sample.image_size[1]
    boxes = sample.boxes.clone()
    boxes[:, 0] = w - sample.boxes[:, 2]
    boxes[:, 2] = w - sample.boxes[:, 0]
    return sample.replace(
        image=sample.image.flip(-1),
        masks=sample.masks.flip(-1),
        boxes=boxes,
        polygons=_flip_polygons(sample.polygons, w),
        crowd_masks=sample.crowd_masks.flip(-1),
        flipped=not sample.flipped,
    )


class ResizeShortestEdge:
    """Scale so the shorter side is ``short_edge_length`` (sampled), the longer at most ``max_size``.

    Args:
        short_edge_length: an int, or with ``sample_style="range"`` a ``(min, max)`` pair sampled
            uniformly (integers, inclusive), or with ``"choice"`` a set of values picked uniformly.
        max_size: cap of the longer side.
        sample_style: ``"range"`` or ``"choice"``.
    """

    def __init__(
        self, short_edge_length: int | Sequence[int], max_size: int = 1333, sample_style: str = "range"
    ) -> None:
        if isinstance(short_edge_length, int):
            short_edge_length = (short_edge_length, short_edge_length)
        sizes = tuple(int(s) for s in short_edge_length)
        if sample_style not in ("range", "choice"):
            raise ValueError(f"sample_style must be 'range' or 'choice', got {sample_style!r}")
        if not sizes or min(sizes) < 1 or (sample_style == "range" and (len(sizes) != 2 or sizes[0] > sizes[1])):
            raise ValueError(f"invalid short_edge_length {short_edge_length!r} for sample_style {sample_style!r}")
        if max_size < max(sizes):
            raise ValueError(f"max_size {max_size} is smaller than the shorter side {max(sizes)}")
        self.sizes, self.max_size, self.sample_style = sizes, int(max_size), sample_style

    def sample_short_edge(self, generator: torch.Generator | None = None) -> int:
        if self.sample_style == "range":
            lo, hi = self.sizes
            if lo == hi:
                return lo
            return int(torch.randint(lo, hi + 1, (1,), generator=generator).item())
        return self.sizes[int(torch.randint(len(self.sizes), (1,), generator=generator).item())]

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        h, w = sample.image_size
        new_h, new_w, scale = resized_shape(h, w, self.sample_short_edge(generator), self.max_size)
        return resize_sample(sample, new_h, new_w, scale)

    def __repr__(self) -> str:
        return (
            f"ResizeShortestEdge(short_edge_length={self.sizes}, max_size={self.max_size}, "
            f"sample_style={self.sample_style!r})"
        )


class RandomHorizontalFlip:
    """Flip left-right with probability ``prob``."""

    def __init__(self, prob: float = 0.5) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        self.prob = float(prob)

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        # Always draw, so the random stream does not depend on prob being 0 or 1.
        if torch.rand((1,), generator=generator).item() < self.prob:
            return hflip_sample(sample)
        return sample

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(prob={self.prob})"


class Compose:
    """Apply transforms in order, all drawing from the same generator."""

    def __init__(self, transforms: Sequence) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        for t in self.transforms:
            sample = t(sample, generator)
        return sample

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


def build_transforms(
    train: bool,
    min_size_train: Sequence[int] = (640, 800),
    max_size: int = 1333,
    min_size_test: int = 800,
    flip_prob: float = 0.5,
    sample_style: str = "range",
) -> Compose:
    """The paper's pipeline: training = random shorter side in ``min_size_train`` + flip; test = fixed size.

    The demo uses ``min_size_train=(256, 320), min_size_test=288, max_size=512``.
    """
    if train:
        return Compose([ResizeShortestEdge(min_size_train, max_size, sample_style), RandomHorizontalFlip(flip_prob)])
    return Compose([ResizeShortestEdge(min_size_test, max_size, "range")])
