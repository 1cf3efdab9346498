"""Drawing for the synthetic dataset (:mod:`tensormask.data.synthetic`): the shapes of
:data:`SHAPES` rasterised at pixel centres in a random pose, the textures they are painted with, and
the cluttered background. Every function draws from the ``numpy`` generator it is given, in a fixed
order, so a scene is a pure function of its seed."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["SHAPES", "TEXTURES", "clipped_region", "place_shape", "render_background", "render_texture",
           "sample_texture", "shape_mask", "shape_params"]

SHAPES: tuple[str, ...] = ("disk", "ring", "star", "triangle", "crescent", "l_shape", "cross")
TEXTURES: tuple[str, ...] = ("solid", "stripes", "checker", "noise", "gradient")


def _in_convex(u: np.ndarray, v: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Points inside a convex polygon with counter-clockwise ``verts`` (K, 2)."""
    inside = np.ones(u.shape, dtype=bool)
    for (ax, ay), (bx, by) in zip(verts, np.roll(verts, -1, axis=0)):
        inside &= (bx - ax) * (v - ay) - (by - ay) * (u - ax) >= 0
    return inside


def shape_params(kind: str, rng: np.random.Generator) -> dict[str, Any]:
    if kind == "ring":
        return {"inner": rng.uniform(0.45, 0.7)}
    if kind == "star":
        return {"points": int(rng.integers(5, 7)), "inner": rng.uniform(0.38, 0.55)}
    if kind == "triangle":
        return {"angles": np.deg2rad(np.array([90.0, 210.0, 330.0]) + rng.uniform(-15, 15, 3))}
    if kind == "crescent":
        return {"offset": rng.uniform(0.35, 0.6), "bite": rng.uniform(0.75, 0.95)}
    if kind == "l_shape":
        return {"thick": rng.uniform(0.3, 0.45)}
    if kind == "cross":
        return {"half_width": rng.uniform(0.18, 0.3)}
    return {}


def shape_mask(kind: str, p: dict[str, Any], u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The shape in unit coordinates (every shape lies inside the unit disk)."""
    rr = u * u + v * v
    if kind == "disk":
        return rr <= 1.0
    if kind == "ring":
        return (rr <= 1.0) & (rr >= p["inner"] ** 2)
    if kind == "star":
        n, q = p["points"], p["inner"]
        # Straight-edged star: psi = angle from the nearest outer vertex, in [0, pi/n]; the edge joins
        # the outer vertex (1, 0) to the inner one q·(cos pi/n, sin pi/n).
        phase = (np.arctan2(v, u) * (n / (2 * np.pi))) % 1.0
        psi = (0.5 - np.abs(phase - 0.5)) * (2 * np.pi / n)
        ex, ey = q * math.cos(np.pi / n) - 1.0, q * math.sin(np.pi / n)
        radius = ey / (ey * np.cos(psi) - ex * np.sin(psi))
        return rr <= radius * radius
    if kind == "triangle":
        a = p["angles"]
        return _in_convex(u, v, np.stack([np.cos(a), np.sin(a)], axis=1))
    if kind == "crescent":
        return (rr <= 1.0) & ((u - p["offset"]) ** 2 + v * v > p["bite"] ** 2)
    if kind == "l_shape":
        s, t = 0.7, p["thick"]
        box = (np.abs(u) <= s) & (np.abs(v) <= s)
        return box & ((u <= -s + 2 * s * t) | (v >= s - 2 * s * t))
    if kind == "cross":
        w, s = p["half_width"], 0.95
        return ((np.abs(u) <= w) & (np.abs(v) <= s)) | ((np.abs(v) <= w) & (np.abs(u) <= s))
    raise ValueError(f"unknown shape {kind!r}")


def clipped_region(cx: float, cy: float, extent: float, h: int, w: int) -> tuple[int, int, int, int] | None:
    x0, x1 = max(0, int(math.floor(cx - extent))), min(w, int(math.ceil(cx + extent)) + 1)
    y0, y1 = max(0, int(math.floor(cy - extent))), min(h, int(math.ceil(cy + extent)) + 1)
    return (y0, y1, x0, x1) if x1 > x0 and y1 > y0 else None


def _local_coords(cx, cy, radius, angle, aspect, y0, y1, x0, x1):
    """Unit shape coordinates (u, v) of the pixel centres of a region."""
    dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :]
    dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy)[:, None]
    c, s = math.cos(angle), math.sin(angle)
    ax, ay = math.sqrt(aspect), 1.0 / math.sqrt(aspect)
    u = (dx * c + dy * s) / (radius * ax)
    v = (dy * c - dx * s) / (radius * ay)
    return u, v


def place_shape(rng, kind, cx, cy, radius, h, w):
    """Rasterise one shape (random pose) at pixel centres; ``None`` if it misses the image."""
    angle = rng.uniform(0, 2 * np.pi)
    aspect = rng.uniform(0.75, 1.33)
    params = shape_params(kind, rng)
    reg = clipped_region(cx, cy, radius * max(math.sqrt(aspect), 1 / math.sqrt(aspect)) + 1, h, w)
    if reg is None:
        return None
    y0, y1, x0, x1 = reg
    u, v = _local_coords(cx, cy, radius, angle, aspect, y0, y1, x0, x1)
    return y0, x0, shape_mask(kind, params, u, v)


def sample_texture(rng: np.random.Generator) -> dict[str, Any]:
    c1 = rng.uniform(0, 255, 3)
    c2 = rng.uniform(0, 255, 3)
    if np.abs(c1 - c2).max() < 60:  # keep patterns visible
        c2 = 255.0 - c1
    kind = TEXTURES[int(rng.integers(len(TEXTURES)))]
    return {
        "kind": kind,
        "c1": c1.astype(np.float32),
        "c2": c2.astype(np.float32),
        "period": float(rng.uniform(4, 16)),
        "angle": float(rng.uniform(0, np.pi)),
        "seed": int(rng.integers(2**31)),
    }


def render_texture(tex: dict[str, Any], y0: int, x0: int, hh: int, ww: int) -> np.ndarray:
    """Colours (hh, ww, 3) float32 of a texture over a region (absolute pixel coordinates)."""
    x = np.arange(x0, x0 + ww, dtype=np.float32)[None, :]
    y = np.arange(y0, y0 + hh, dtype=np.float32)[:, None]
    k, p = tex["kind"], tex["period"]
    if k == "solid":
        t = np.zeros((hh, ww), dtype=np.float32)
    elif k == "stripes":
        t = (np.sin((x * math.cos(tex["angle"]) + y * math.sin(tex["angle"])) * (2 * np.pi / p)) > 0).astype(np.float32)
    elif k == "checker":
        q = max(2.0, p / 2)
        t = ((np.floor(x / q) + np.floor(y / q)) % 2).astype(np.float32)
    elif k == "noise":
        t = np.random.default_rng(tex["seed"]).random((hh, ww), dtype=np.float32)
    else:  # gradient
        g = x * math.cos(tex["angle"]) + y * math.sin(tex["angle"])
        t = (g - g.min()) / max(float(np.ptp(g)), 1.0)
    t = np.broadcast_to(t, (hh, ww))[..., None]
    return tex["c1"] + t * (tex["c2"] - tex["c1"])


def _interp_weights(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Left node index and weight of the right node for ``n_out`` pixels over ``n_in`` grid nodes."""
    pos = np.linspace(0, n_in - 1, n_out, dtype=np.float32)
    i0 = np.minimum(pos.astype(np.int64), n_in - 2)
    return i0, pos - i0


def _upsample(small: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear upsampling of (gh, gw, C) (gh, gw >= 2) to (h, w, C), one axis at a time."""
    i0, f = _interp_weights(w, small.shape[1])
    f = f[None, :, None]
    tmp = small[:, i0] * (1 - f) + small[:, i0 + 1] * f  # (gh, w, C)
    i0, f = _interp_weights(h, small.shape[0])
    f = f[:, None, None]
    return tmp[i0] * (1 - f) + tmp[i0 + 1] * f


def render_background(rng: np.random.Generator, h: int, w: int, clutter: int) -> np.ndarray:
    """Smooth random colour field plus thin clutter strokes (no object-like blobs)."""
    coarse = _upsample(rng.uniform(0, 255, (4, 4, 3)).astype(np.float32), 12, 12)
    img = _upsample(coarse + rng.normal(0, 20, (12, 12, 3)).astype(np.float32), h, w)
    for _ in range(int(rng.integers(0, clutter + 1))):
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        length, ang = rng.uniform(10, max(h, w) / 2), rng.uniform(0, 2 * np.pi)
        x1, y1 = x0 + length * math.cos(ang), y0 + length * math.sin(ang)
        half = rng.uniform(0.5, 1.5)
        reg = clipped_region((x0 + x1) / 2, (y0 + y1) / 2, length / 2 + half + 1, h, w)
        if reg is None:
            continue
        ry0, ry1, rx0, rx1 = reg
        px = np.arange(rx0, rx1, dtype=np.float32)[None, :] + 0.5
        py = np.arange(ry0, ry1, dtype=np.float32)[:, None] + 0.5
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((px - x0) * dx + (py - y0) * dy) / (dx * dx + dy * dy), 0, 1)
        near = (px - x0 - t * dx) ** 2 + (py - y0 - t * dy) ** 2 <= half * half
        img[ry0:ry1, rx0:rx1][near] = rng.uniform(0, 255, 3).astype(np.float32)
    return img
