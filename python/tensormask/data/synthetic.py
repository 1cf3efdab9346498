"""An embedded synthetic instance segmentation dataset in COCO format ("shapes").

Images show textured shapes of several classes — ``disk``, ``ring`` (a disk with a hole), ``star``
(non-convex), ``triangle``, ``crescent``, ``l_shape``, ``cross`` — on a cluttered, noisy background.
Colours and textures (solid, stripes, checker, noise, gradient) are drawn independently of the class,
so only the shape identifies it. Sizes are log-uniform over ``scale_range`` (≈12 px to
image-filling), objects are placed on top of earlier ones with probability ``overlap`` and painted in
z-order; each instance's ground truth is its *visible* part (occluded pixels removed), so the masks
of one image are disjoint. Objects left with fewer than ``min_visible_pixels`` visible pixels (or a
visible fraction below ``min_visible_fraction``) are removed from the scene before it is painted, so
no unlabelled fragment remains. Optional crowd regions (``iscrowd=1``) are clusters of small shapes
of one class.

Layout written by :func:`generate` (``OUT``)::

    OUT/annotations.json   COCO instances: info, licenses, images, annotations, categories
    OUT/images/000001.png  RGB PNG images; file_name in the JSON is relative to OUT/images

Each annotation has ``id``, ``image_id``, ``category_id``, ``segmentation`` (compressed RLE:
``{"size": [H, W], "counts": str}``), ``area`` (visible pixels), ``bbox`` (``[x, y, w, h]``, the
tight box of the visible mask), ``iscrowd`` and ``_full_area`` (pixels of the whole shape inside the
image, before occlusion; ``area < _full_area`` means the instance is partly occluded).

Output is a pure function of ``(seed, config)``: image ``i`` is drawn from its own
``SeedSequence([seed, i])``, so the bytes do not depend on the number of worker processes and the
first images of a larger set equal a smaller one's.

Presets: ``"demo"`` (used by the demo: 256–320 px images, 2–6 objects, 5 classes, moderate overlap,
larger objects behind smaller ones, no crowds) and ``"benchmark"`` (for the ablations: 320–448 px,
5–14 objects, 7 classes, strong overlap, random z-order, 12 px to image-filling, 10% crowd images).

Command line: ``tensormask make-synthetic OUT --images N --seed S [--preset demo|benchmark]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image
from pycocotools import mask as mask_util

from .synthetic_drawing import SHAPES, place_shape, render_background, render_texture, sample_texture

__all__ = ["SHAPES", "PRESETS", "SyntheticConfig", "render_image", "generate", "main"]



@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the generator. Ranges are inclusive ``(min, max)``.

    Attributes:
        image_size: range of image height and of width (drawn independently), pixels.
        objects_per_image: range of the number of objects placed (before removal of hidden ones).
        scale_range: range of object sizes (diameter of the shape's circle), pixels, log-uniform;
            capped at the image's shorter side.
        overlap: probability that an object is placed overlapping an earlier one (0 = uniform).
        num_classes: how many of :data:`SHAPES` are used (the first ``num_classes``).
        crowd_prob: probability that an image gets one crowd region (``iscrowd=1``).
        min_visible_pixels / min_visible_fraction: an object is kept only if at least this many of
            its pixels (and this fraction of its in-image pixels) stay visible.
        random_z_order: paint in random order; ``False`` paints larger objects first (behind).
        clutter: maximum number of background strokes.
        noise_std: standard deviation of the per-pixel sensor noise (0–255 scale).
    """

    image_size: tuple[int, int] = (256, 320)
    objects_per_image: tuple[int, int] = (2, 6)
    scale_range: tuple[float, float] = (16.0, 192.0)
    overlap: float = 0.3
    num_classes: int = 5
    crowd_prob: float = 0.0
    min_visible_pixels: int = 48
    min_visible_fraction: float = 0.3
    random_z_order: bool = False
    clutter: int = 6
    noise_std: float = 4.0

    def __post_init__(self) -> None:
        def rng_ok(r: Sequence[float], lo: float) -> bool:
            return len(r) == 2 and lo <= r[0] <= r[1]

        if not rng_ok(self.image_size, 16):
            raise ValueError(f"image_size must be (min, max) with 16 <= min <= max, got {self.image_size}")
        if not rng_ok(self.objects_per_image, 0):
            raise ValueError(f"objects_per_image must be (min, max) with 0 <= min <= max, got {self.objects_per_image}")
        if not rng_ok(self.scale_range, 4):
            raise ValueError(f"scale_range must be (min, max) with 4 <= min <= max, got {self.scale_range}")
        if not 1 <= self.num_classes <= len(SHAPES):
            raise ValueError(f"num_classes must be in 1..{len(SHAPES)}, got {self.num_classes}")
        for name in ("overlap", "crowd_prob", "min_visible_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    @property
    def class_names(self) -> tuple[str, ...]:
        return SHAPES[: self.num_classes]


PRESETS: dict[str, SyntheticConfig] = {
    # The demo's setting: fewer tiny objects, calmer background than "benchmark"; still 5 classes,
    # overlaps and occlusion and a 6× scale range.
    "demo": SyntheticConfig(scale_range=(32.0, 200.0), objects_per_image=(2, 5), clutter=3, noise_std=3.0),
    "benchmark": SyntheticConfig(
        image_size=(320, 448),
        objects_per_image=(5, 14),
        scale_range=(12.0, 448.0),
        overlap=0.7,
        num_classes=7,
        crowd_prob=0.1,
        min_visible_pixels=24,
        min_visible_fraction=0.15,
        random_z_order=True,
        clutter=12,
        noise_std=6.0,
    ),
}


@dataclass
class _Object:
    """A placed object: a mask over its clipped region ``[y0:y1, x0:x1]`` of the image."""

    label: int  # contiguous 0..K-1
    cx: float
    cy: float
    radius: float
    y0: int
    x0: int
    mask: np.ndarray  # bool (y1 - y0, x1 - x0)
    texture: dict[str, Any]
    iscrowd: bool = False

    @property
    def region(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y0 + self.mask.shape[0]), slice(self.x0, self.x0 + self.mask.shape[1])

    @property
    def full_area(self) -> int:
        return int(self.mask.sum())


# ------------------------------------------------------------------------------------ scenes
def _sample_objects(rng: np.random.Generator, h: int, w: int, cfg: SyntheticConfig) -> list[_Object]:
    objs: list[_Object] = []
    n = int(rng.integers(cfg.objects_per_image[0], cfg.objects_per_image[1] + 1))
    lo = math.log(cfg.scale_range[0])
    hi = math.log(max(cfg.scale_range[0], min(cfg.scale_range[1], min(h, w))))
    for _ in range(n):
        label = int(rng.integers(cfg.num_classes))
        radius = math.exp(rng.uniform(lo, hi)) / 2
        if objs and rng.random() < cfg.overlap:
            other = objs[int(rng.integers(len(objs)))]
            phi, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 0.9) * (other.radius + radius)
            cx = float(np.clip(other.cx + dist * math.cos(phi), 0, w))
            cy = float(np.clip(other.cy + dist * math.sin(phi), 0, h))
        else:
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        placed = place_shape(rng, SHAPES[label], cx, cy, radius, h, w)
        tex = sample_texture(rng)
        if placed is not None:
            objs.append(_Object(label, cx, cy, radius, placed[0], placed[1], placed[2], tex))
    if rng.random() < cfg.crowd_prob:
        crowd = _sample_crowd(rng, h, w, cfg)
        if crowd is not None:
            objs.append(crowd)
    return objs


def _sample_crowd(rng: np.random.Generator, h: int, w: int, cfg: SyntheticConfig) -> _Object | None:
    """A cluster of many small shapes of one class, annotated as a single crowd region."""
    if min(h, w) < 100:
        return None
    label = int(rng.integers(cfg.num_classes))
    size = rng.uniform(40, min(h, w) * 0.5)
    cx, cy = rng.uniform(size / 2, w - size / 2), rng.uniform(size / 2, h - size / 2)
    y0, x0 = int(cy - size / 2), int(cx - size / 2)
    mask = np.zeros((int(size) + 1, int(size) + 1), dtype=bool)
    mask = mask[: h - y0, : w - x0]
    for _ in range(int(rng.integers(8, 20))):
        px, py = rng.uniform(x0, x0 + mask.shape[1]), rng.uniform(y0, y0 + mask.shape[0])
        placed = place_shape(rng, SHAPES[label], px, py, rng.uniform(4, 8), h, w)
        if placed is None:
            continue
        sy, sx, m = placed
        # clip the member into the cluster's box
        ly0, lx0 = max(sy, y0), max(sx, x0)
        ly1, lx1 = min(sy + m.shape[0], y0 + mask.shape[0]), min(sx + m.shape[1], x0 + mask.shape[1])
        if ly1 > ly0 and lx1 > lx0:
            mask[ly0 - y0 : ly1 - y0, lx0 - x0 : lx1 - x0] |= m[ly0 - sy : ly1 - sy, lx0 - sx : lx1 - sx]
    if not mask.any():
        return None
    return _Object(label, cx, cy, size / 2, y0, x0, mask, sample_texture(rng), iscrowd=True)


def _visible(objs: list[_Object], h: int, w: int) -> tuple[np.ndarray, list[int]]:
    """Owner map (index into ``objs`` of the top object per pixel, -1 = background) and visible counts."""
    owner = np.full((h, w), -1, dtype=np.int16)
    for i, o in enumerate(objs):
        owner[o.region][o.mask] = i
    counts = [int((owner[o.region][o.mask] == i).sum()) for i, o in enumerate(objs)]
    return owner, counts


def render_image(rng: np.random.Generator, cfg: SyntheticConfig) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Draw one image.

    Returns:
        ``image`` uint8 (H, W, 3) RGB and a list of instances in z-order (bottom first), each a dict
        with ``mask`` (bool (H, W), visible part), ``label`` (contiguous), ``iscrowd``,
        ``full_area`` (in-image pixels of the whole shape) and ``area`` (visible pixels).
    """
    h = int(rng.integers(cfg.image_size[0], cfg.image_size[1] + 1))
    w = int(rng.integers(cfg.image_size[0], cfg.image_size[1] + 1))
    img = render_background(rng, h, w, cfg.clutter)
    objs = _sample_objects(rng, h, w, cfg)
    if not cfg.random_z_order:
        objs.sort(key=lambda o: -o.radius)  # stable: larger objects behind

    # Remove objects that would be (almost) hidden, worst first, until every one is visible enough.
    # Removing an object never hides another, so this ends with a consistent scene.
    while True:
        owner, counts = _visible(objs, h, w)
        need = [max(cfg.min_visible_pixels, cfg.min_visible_fraction * o.full_area) for o in objs]
        ratios = [c / n for c, n in zip(counts, need)]
        if not objs or min(ratios) >= 1.0:
            break
        objs.pop(int(np.argmin(ratios)))

    for o in objs:
        ys, xs = o.region
        img[ys, xs][o.mask] = render_texture(o.texture, o.y0, o.x0, *o.mask.shape)[o.mask]
    if cfg.noise_std > 0:
        # uniform noise with the requested standard deviation (cheaper to draw than Gaussian)
        img += (rng.random(img.shape, dtype=np.float32) - np.float32(0.5)) * np.float32(cfg.noise_std * math.sqrt(12.0))
    image = np.clip(img + 0.5, 0, 255).astype(np.uint8)

    instances = []
    for i, (o, c) in enumerate(zip(objs, counts)):
        instances.append(
            {"mask": owner == i, "label": o.label, "iscrowd": o.iscrowd, "full_area": o.full_area, "area": c}
        )
    return image, instances


def _image_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(index)])))


def _encode(mask: np.ndarray) -> tuple[dict[str, Any], list[int], int]:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    bbox = [int(xs[0]), int(ys[0]), int(xs[-1] + 1 - xs[0]), int(ys[-1] + 1 - ys[0])]
    return rle, bbox, int(mask.sum())


def _make_one(args: tuple[int, int, SyntheticConfig, str]) -> dict[str, Any]:
    """Render image ``index``, write its PNG, return its JSON fragments (ids assigned later)."""
    index, seed, cfg, image_dir = args
    image, instances = render_image(_image_rng(seed, index), cfg)
    file_name = f"{index + 1:06d}.png"
    Image.fromarray(image).save(os.path.join(image_dir, file_name), format="PNG", compress_level=1)
    anns = []
    for inst in instances:
        rle, bbox, area = _encode(inst["mask"])
        anns.append(
            {
                "category_id": inst["label"] + 1,
                "segmentation": rle,
                "area": area,
                "bbox": bbox,
                "iscrowd": int(inst["iscrowd"]),
                "_full_area": inst["full_area"],
            }
        )
    h, w = image.shape[:2]
    return {"image": {"file_name": file_name, "height": h, "width": w}, "anns": anns}


def generate(
    out_dir: str | os.PathLike,
    num_images: int,
    seed: int = 0,
    config: SyntheticConfig | str = "demo",
    workers: int = 1,
) -> dict[str, Any]:
    """Write ``num_images`` images and ``annotations.json`` under ``out_dir`` (see the module docstring).

    Args:
        config: a :class:`SyntheticConfig` or a preset name (``"demo"``, ``"benchmark"``).
        workers: processes used to render; the output is the same for any number.

    Returns:
        A summary: ``json_path``, ``image_root``, ``images``, ``annotations``, ``seconds``.
    """
    preset = config if isinstance(config, str) else "custom"
    if isinstance(config, str):
        if config not in PRESETS:
            raise ValueError(f"unknown preset {config!r}; choose from {sorted(PRESETS)}")
        config = PRESETS[config]
    if num_images < 0:
        raise ValueError(f"num_images must be >= 0, got {num_images}")
    t0 = time.perf_counter()
    out_dir = os.fspath(out_dir)
    image_dir = os.path.join(out_dir, "images")
    os.makedirs(image_dir, exist_ok=True)
    jobs = [(i, seed, config, image_dir) for i in range(num_images)]
    if workers > 1 and num_images > 1:
        import multiprocessing as mp

        with mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn").Pool(workers) as pool:
            parts = pool.map(_make_one, jobs, chunksize=max(1, num_images // (4 * workers)))
    else:
        parts = [_make_one(j) for j in jobs]

    images, annotations = [], []
    for image_id, part in enumerate(parts, start=1):
        images.append({"id": image_id, **part["image"]})
        for ann in part["anns"]:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **ann})
    cfg_dict = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
    data = {
        "info": {
            "description": "TensorMask synthetic shapes (tensormask.data.synthetic)",
            "version": "1.0",
            "seed": int(seed),
            "preset": preset,
            "config": cfg_dict,
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(config.class_names)
        ],
    }
    json_path = os.path.join(out_dir, "annotations.json")
    with open(json_path, "w") as f:
        json.dump(data, f, separators=(",", ":"))
    return {
        "json_path": json_path,
        "image_root": image_dir,
        "images": len(images),
        "annotations": len(annotations),
        "seconds": time.perf_counter() - t0,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``tensormask make-synthetic OUT --images N --seed S [--preset P] [--workers W]``."""
    parser = argparse.ArgumentParser(
        prog="tensormask make-synthetic",
        description="Write a synthetic COCO-format instance segmentation dataset (OUT/annotations.json, OUT/images/).",
    )
    parser.add_argument("out", help="output folder")
    parser.add_argument("--images", type=int, default=200, help="number of images (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default 0)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="demo", help="difficulty preset (default demo)")
    parser.add_argument(
        "--workers", type=int, default=min(4, os.cpu_count() or 1), help="processes (output does not depend on it)"
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")

    def run(args: argparse.Namespace) -> int:
        if args.images < 0:
            parser.error("--images must be >= 0")
        s = generate(args.out, args.images, seed=args.seed, config=args.preset, workers=max(1, args.workers))
        print(
            f"wrote {s['images']} images, {s['annotations']} annotations to {args.out} "
            f"({s['seconds']:.1f} s, preset {args.preset}, seed {args.seed})"
        )
        return 0

    from ..cli_utils import run_command

    return run_command(parser, run, argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
