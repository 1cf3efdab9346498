"""Reading images: any format Pillow reads, EXIF orientation applied, RGB uint8, with the size
checked from the header before anything is decoded (decompression bombs are a clear error)."""

from __future__ import annotations

import os
import re
import warnings

import numpy as np
from PIL import Image, ImageOps

__all__ = ["MAX_IMAGE_PIXELS", "ImageTooLargeError", "load_image"]


MAX_IMAGE_PIXELS = 100_000_000
"""Largest image :func:`load_image` decodes: 100 megapixels (10000 × 10000, ~300 MB as RGB). The size
is read from the file's header and a larger image is refused before anything is decoded, so a small
file declaring 60000 × 60000 pixels (a decompression bomb) is a clear error, not an out-of-memory kill.
Pass ``max_pixels`` to :func:`load_image` or set this attribute for another limit (Pillow's own
``Image.MAX_IMAGE_PIXELS`` check still refuses above twice its value, ~179 MP by default)."""

_PIL_BOMB_RE = re.compile(r"\((\d+) pixels\)")


class ImageTooLargeError(OSError):
    """An image whose header declares more pixels than the limit; refused before decoding."""


def _too_large(path: str, pixels: int, size: str, limit: int) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"cannot read image {path}: it declares {size}{pixels:,} pixels, more than the limit of {limit:,} "
        "(tensormask.data.images.MAX_IMAGE_PIXELS); refused before decoding")


def load_image(path: str, max_pixels: int | None = None) -> np.ndarray:
    """Read an image as uint8 (H, W, 3) RGB, applying its EXIF orientation.

    Args:
        path: an image file (any format Pillow reads).
        max_pixels: refuse images whose header declares more pixels (default :data:`MAX_IMAGE_PIXELS`).

    Raises:
        FileNotFoundError: the file does not exist.
        ImageTooLargeError (an OSError): the header declares more than ``max_pixels`` pixels (not decoded).
        OSError: the file cannot be decoded (truncated, not an image, ...), naming the path.
    """
    limit = MAX_IMAGE_PIXELS if max_pixels is None else int(max_pixels)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with warnings.catch_warnings():  # Pillow warns between its limit and twice it: ours decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)  # reads the header only
        with im:
            w, h = im.size
            if w * h > limit:
                raise _too_large(path, w * h, f"{w}×{h} = ", limit)
            im = ImageOps.exif_transpose(im)
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except ImageTooLargeError:
        raise
    except Image.DecompressionBombError as e:  # above Pillow's own limit: refused in Image.open
        m = _PIL_BOMB_RE.search(str(e))
        raise _too_large(path, int(m.group(1)) if m else limit + 1, "", limit) from None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, struct.error ...
        raise OSError(f"cannot read image {path}: {type(e).__name__}: {e}") from e
    return arr
