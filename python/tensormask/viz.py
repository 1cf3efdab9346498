"""Drawing detections: colour masks, boxes, class names and scores over the image (Pillow)."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def palette(n: int) -> list[tuple[int, int, int]]:
    """n well-separated RGB colours (golden-ratio hue walk)."""
    out = []
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75, 0.95)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    masks: np.ndarray | None,
    class_names: Sequence[str],
    alpha: float = 0.5,
) -> Image.Image:
    """Overlay detections on an image.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        boxes: ``(D, 4)`` XYXY image pixels.
        scores: ``(D,)`` in [0, 1].
        labels: ``(D,)`` contiguous class ids.
        masks: ``(D, H, W)`` bool or None.
        class_names: name of each class id.
        alpha: mask opacity.

    Returns:
        the annotated RGB image.
    """
    canvas = image.astype(np.float32).copy()
    colours = palette(max(len(boxes), 1))
    if masks is not None:
        for i, m in enumerate(masks):
            canvas[m] = canvas[m] * (1 - alpha) + np.array(colours[i], np.float32) * alpha
    out = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    for i, (box, score, label) in enumerate(zip(boxes, scores, labels)):
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle([x1, y1, x2, y2], outline=colours[i], width=2)
        name = class_names[int(label)] if 0 <= int(label) < len(class_names) else str(int(label))
        text = f"{name} {float(score):.2f}"
        tx, ty = x1 + 2, max(y1 - 12, 0)
        tw = draw.textlength(text, font=font)
        draw.rectangle([tx - 1, ty, tx + tw + 1, ty + 11], fill=(0, 0, 0))
        draw.text((tx, ty), text, fill=colours[i], font=font)
    return out
