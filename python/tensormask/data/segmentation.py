"""COCO segmentations (polygons, compressed and uncompressed RLE): validation that names the
problem, and decoding to a boolean mask with pycocotools — what :mod:`tensormask.data.coco` checks
each annotation with."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from pycocotools import mask as mask_util

__all__ = ["is_int", "is_number", "rle_counts", "check_segmentation", "polygons_outside",
           "polygon_self_intersects", "decode_segmentation"]


def is_int(x: Any) -> bool:
    """A JSON integer (Python or NumPy int, not bool)."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def is_number(x: Any) -> bool:
    """A finite JSON number (int or float, not bool, NaN or inf)."""
    return (is_int(x) or isinstance(x, (float, np.floating))) and math.isfinite(float(x))


def rle_counts(counts: str | bytes) -> list[int]:
    """Decode the LEB128-like string of a compressed COCO RLE into run lengths.

    A pure-Python twin of pycocotools' ``rleFrString`` that *checks* its input: the C decoder reads
    past the end of a truncated string and writes past the mask for counts that do not add up to
    ``h*w``, so compressed RLEs are validated with this before pycocotools sees them.

    Raises:
        ValueError: on a character outside the alphabet, a string ending inside a number, or a
            negative run length.
    """
    if isinstance(counts, str):
        counts = counts.encode("ascii", errors="replace")
    out: list[int] = []
    p, n = 0, len(counts)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise ValueError("compressed RLE string ends inside a run length")
            c = counts[p] - 48
            if not 0 <= c < 64:
                raise ValueError(f"invalid character {chr(counts[p])!r} in compressed RLE string")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(out) > 2:
            x += out[-2]
        if x < 0:
            raise ValueError(f"negative run length {x} in compressed RLE string")
        out.append(x)
    return out


def check_segmentation(seg: Any, height: int | None, width: int | None) -> str | None:
    """Validate the structure of a COCO ``segmentation`` without decoding it.

    Returns ``None`` if it is well formed, else a message saying what is wrong. ``height``/``width``
    (the image size) are checked against an RLE's ``size`` and counts when given.
    """
    if isinstance(seg, list):
        for i, poly in enumerate(seg):
            if not isinstance(poly, list):
                return f"polygon {i} is a {type(poly).__name__}, expected a list of coordinates"
            if len(poly) % 2:
                return f"polygon {i} has an odd number of coordinates ({len(poly)})"
            if not all(is_number(v) for v in poly):
                return f"polygon {i} has non-numeric or non-finite coordinates"
        return None
    if isinstance(seg, dict):
        if "counts" not in seg or "size" not in seg:
            return "RLE needs 'counts' and 'size'"
        size = seg["size"]
        if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(is_int(v) and v >= 0 for v in size)):
            return f"RLE 'size' must be [height, width], got {size!r}"
        h, w = int(size[0]), int(size[1])
        if height is not None and width is not None and (h, w) != (height, width):
            return f"RLE size {[h, w]} differs from the image size {[height, width]}"
        counts = seg["counts"]
        if isinstance(counts, list):
            if not all(is_int(v) and v >= 0 for v in counts):
                return "uncompressed RLE 'counts' must be non-negative integers"
            runs = counts
        elif isinstance(counts, (str, bytes)):
            try:
                runs = rle_counts(counts)
            except ValueError as e:
                return str(e)
        else:
            return f"RLE 'counts' must be a string or a list of integers, got {type(counts).__name__}"
        total = int(sum(runs))
        if total != h * w:
            return f"RLE run lengths add up to {total}, expected height*width = {h * w}"
        return None
    return f"segmentation must be a list of polygons or an RLE dict, got {type(seg).__name__}"


def polygons_outside(polys: list[list[float]], height: int, width: int) -> bool:
    """True when every point of every polygon ``[x0, y0, x1, y1, ...]`` (pixels) lies outside the
    ``height × width`` image on the same side, so the rasterised mask is empty."""
    for poly in polys:
        xs, ys = poly[0::2], poly[1::2]
        if not (max(xs) <= 0 or min(xs) >= width or max(ys) <= 0 or min(ys) >= height):
            return False
    return True


def polygon_self_intersects(poly: list[float]) -> bool:
    """True when two non-adjacent edges of the closed polygon ``[x0, y0, x1, y1, ...]`` cross (a proper
    crossing; edges that only touch or overlap collinearly do not count). O(n²) vectorised."""
    p = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    n = len(p)
    if n < 4:
        return False
    a, b = p, np.roll(p, -1, axis=0)  # edge i: a[i] -> b[i]

    def orient(o, q, r):  # sign of the cross product (q − o) × (r − o), broadcast over edge pairs
        return np.sign((q[..., 0] - o[..., 0]) * (r[..., 1] - o[..., 1]) - (q[..., 1] - o[..., 1]) * (r[..., 0] - o[..., 0]))

    A, B = a[:, None], b[:, None]
    C, D = a[None, :], b[None, :]
    cross = (orient(A, B, C) * orient(A, B, D) < 0) & (orient(C, D, A) * orient(C, D, B) < 0)
    i, j = np.triu_indices(n, k=2)
    keep = ~((i == 0) & (j == n - 1))  # the first and the last edge share a vertex
    return bool(cross[i[keep], j[keep]].any())


def decode_segmentation(seg: list | dict, height: int, width: int) -> np.ndarray:
    """Decode a (validated, see :func:`check_segmentation`) segmentation to a bool (H, W) mask.

    Polygons with fewer than three points are degenerate and ignored; a segmentation with none left
    decodes to an empty mask.
    """
    if isinstance(seg, list):
        polys = [p for p in seg if len(p) >= 6]
        if not polys:
            return np.zeros((height, width), dtype=bool)
        rle = mask_util.merge(mask_util.frPyObjects(polys, height, width))
    elif isinstance(seg["counts"], list):
        rle = mask_util.frPyObjects(seg, height, width)
    else:
        rle = {"size": list(seg["size"]), "counts": seg["counts"]}
    with warnings.catch_warnings():  # pycocotools' NumPy-2 "copy keyword" DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        m = mask_util.decode(rle)
    if m.shape != (height, width):
        raise ValueError(f"decoded mask has shape {m.shape}, expected {(height, width)}")
    return np.ascontiguousarray(m, dtype=bool)
