"""Slow, obviously-correct reference implementations of the TensorMask 4D tensor ops.

Written straight from the formulas of the paper (§3.4–§3.6) and the numeric convention of the
project, *not* from the native kernels. Everything is float64 numpy with explicit Python loops over
the output elements (the batch axis N is the only one handled as a vector: every formula below is
the same for all n). Keep test sizes small.

Tensors are 5D ``(N, V, U, H, W)``: (V, U) is the window (mask) sub-tensor, (H, W) the spatial
sub-tensor.

align2nat / nat2align (α a positive integer)::

    align2nat: out[n, v, u, y, x] = x[n, v, u, y + α·(v − ⌊V/2⌋), x + α·(u − ⌊U/2⌋)]
    nat2align: out[n, v, u, y, x] = x[n, v, u, y − α·(v − ⌊V/2⌋), x − α·(u − ⌊U/2⌋)]

with ``pad_val`` where the spatial index lies outside [0, H) × [0, W).

up_align2nat / swap_align2nat (input (N, V̂, Û, H, W), λ ≥ 1, Vo = λV̂, Uo = λÛ). For an output
index (v, u, y, x) the input is sampled at the real coordinates::

    sv = (v + 0.5)/λ − 0.5                su = (u + 0.5)/λ − 0.5
    sy = Y + v − Vo/2 + 0.5               sx = X + u − Uo/2 + 0.5

where (Y, X) = (y, x) for up_align2nat (output (N, Vo, Uo, H, W)) and (Y, X) = (y·λ, x·λ) for
swap_align2nat (output (N, Vo, Uo, ⌈H/λ⌉, ⌈W/λ⌉)); divisions are real divisions.

* ``mode="bilinear"``: quadrilinear interpolation over the 16 neighbours: on each axis the two taps
  ``floor(s)`` (weight ``1 − frac(s)``) and ``floor(s) + 1`` (weight ``frac(s)``); the weight of a
  neighbour is the product of its 4 per-axis weights.
* ``mode="nearest"``: on the window axes a single tap ``floor(sv + 0.5)`` (resp. ``floor(su + 0.5)``)
  with weight 1; the spatial axes are still interpolated linearly (2 taps each, 4 neighbours).

A neighbour whose index lies outside the input contributes ``pad_val × weight``.

Backward references are the *scatter transpose* of the forward: loop over the output elements, and
add ``grad_out × weight`` to every neighbour that lies inside the input (pad_val gets no gradient).
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np

MODES = ("bilinear", "nearest")


def _as_f64(x) -> np.ndarray:
    """float64 numpy copy of a numpy array or a (CPU or CUDA, possibly half) torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# align2nat / nat2align
# ---------------------------------------------------------------------------------------------


def _shift_ref(x, alpha: int, pad_val: float, sign: int) -> np.ndarray:
    """out[n, v, u, y, x] = x[n, v, u, y + sign·α·(v − ⌊V/2⌋), x + sign·α·(u − ⌊U/2⌋)], else pad_val."""
    x = _as_f64(x)
    N, V, U, H, W = x.shape
    out = np.empty_like(x)
    for v in range(V):
        for u in range(U):
            for y in range(H):
                for xx in range(W):
                    iy = y + sign * alpha * (v - V // 2)
                    ix = xx + sign * alpha * (u - U // 2)
                    if 0 <= iy < H and 0 <= ix < W:
                        out[:, v, u, y, xx] = x[:, v, u, iy, ix]
                    else:
                        out[:, v, u, y, xx] = pad_val
    return out


def align2nat_ref(x, alpha: int = 1, pad_val: float = 0.0) -> np.ndarray:
    """Natural from aligned: ``out[n,v,u,y,x] = x[n,v,u, y + α(v − ⌊V/2⌋), x + α(u − ⌊U/2⌋)]``.

    ``pad_val`` where that spatial index is outside ``[0, H) × [0, W)``.
    """
    return _shift_ref(x, alpha, pad_val, +1)


def nat2align_ref(x, alpha: int = 1, pad_val: float = 0.0) -> np.ndarray:
    """Aligned from natural: ``out[n,v,u,y,x] = x[n,v,u, y − α(v − ⌊V/2⌋), x − α(u − ⌊U/2⌋)]``.

    ``pad_val`` where that spatial index is outside ``[0, H) × [0, W)``.
    """
    return _shift_ref(x, alpha, pad_val, -1)


def align2nat_valid_mask(V: int, U: int, H: int, W: int, alpha: int = 1) -> np.ndarray:
    """Boolean (V, U, H, W) mask of the aligned positions that survive nat2align(align2nat(·)).

    nat2align(align2nat(x))[v,u,y,x] reads align2nat(x)[v,u, y', x'] with y' = y − α(v − ⌊V/2⌋),
    which in turn reads x[v,u, y' + α(v − ⌊V/2⌋), ...] = x[v,u,y,x]. It is x itself iff the
    intermediate index (y', x') is inside [0, H) × [0, W) (y itself always is), else pad_val.
    Pass ``-alpha`` for align2nat(nat2align(·)), whose intermediate index is y + α(v − ⌊V/2⌋).
    """
    mask = np.zeros((V, U, H, W), dtype=bool)
    for v in range(V):
        for u in range(U):
            for y in range(H):
                for xx in range(W):
                    yp = y - alpha * (v - V // 2)
                    xp = xx - alpha * (u - U // 2)
                    mask[v, u, y, xx] = 0 <= yp < H and 0 <= xp < W
    return mask


# ---------------------------------------------------------------------------------------------
# up_align2nat / swap_align2nat
# ---------------------------------------------------------------------------------------------


def _linear_taps(s: float) -> list[tuple[int, float]]:
    """The two linear-interpolation taps of real coordinate s: (⌊s⌋, 1 − frac), (⌊s⌋ + 1, frac)."""
    i0 = math.floor(s)
    frac = s - i0
    return [(i0, 1.0 - frac), (i0 + 1, frac)]


def _window_taps(s: float, mode: str) -> list[tuple[int, float]]:
    """Taps on a window axis: linear in bilinear mode, the single tap ⌊s + 0.5⌋ in nearest mode."""
    if mode == "bilinear":
        return _linear_taps(s)
    if mode == "nearest":
        return [(math.floor(s + 0.5), 1.0)]
    raise ValueError(f"unknown mode {mode!r}")


def output_shape(in_shape, lam: int, subsample: bool) -> tuple[int, int, int, int, int]:
    """Output shape of up_align2nat (subsample=False) / swap_align2nat (subsample=True)."""
    N, V, U, H, W = in_shape
    if subsample:
        return (N, lam * V, lam * U, -(-H // lam), -(-W // lam))
    return (N, lam * V, lam * U, H, W)


def sample_taps(
    v: int, u: int, y: int, x: int, lam: int, mode: str, in_shape, subsample: bool
) -> Iterator[tuple[tuple[int, int, int, int] | None, float]]:
    """Neighbours of output element (v, u, y, x): yields ``((iv, iu, iy, ix) or None, weight)``.

    ``None`` marks a neighbour outside the input (it contributes pad_val × weight to the forward and
    nothing to the backward).
    """
    _, V, U, H, W = in_shape
    Vo, Uo = lam * V, lam * U
    Y, X = (y * lam, x * lam) if subsample else (y, x)
    sv = (v + 0.5) / lam - 0.5
    su = (u + 0.5) / lam - 0.5
    sy = Y + v - Vo / 2 + 0.5
    sx = X + u - Uo / 2 + 0.5
    for iv, wv in _window_taps(sv, mode):
        for iu, wu in _window_taps(su, mode):
            for iy, wy in _linear_taps(sy):
                for ix, wx in _linear_taps(sx):
                    w = wv * wu * wy * wx
                    inside = 0 <= iv < V and 0 <= iu < U and 0 <= iy < H and 0 <= ix < W
                    yield ((iv, iu, iy, ix) if inside else None), w


def _resample_ref(x, lam: int, mode: str, pad_val: float, subsample: bool) -> np.ndarray:
    x = _as_f64(x)
    out_shape = output_shape(x.shape, lam, subsample)
    N, Vo, Uo, Ho, Wo = out_shape
    out = np.zeros(out_shape, dtype=np.float64)
    for v in range(Vo):
        for u in range(Uo):
            for y in range(Ho):
                for xx in range(Wo):
                    acc = np.zeros(N, dtype=np.float64)
                    for idx, w in sample_taps(v, u, y, xx, lam, mode, x.shape, subsample):
                        if idx is None:
                            acc += pad_val * w
                        else:
                            iv, iu, iy, ix = idx
                            acc += x[:, iv, iu, iy, ix] * w
                    out[:, v, u, y, xx] = acc
    return out


def _resample_backward_ref(grad, lam: int, mode: str, in_shape, subsample: bool) -> np.ndarray:
    grad = _as_f64(grad)
    N, V, U, H, W = in_shape
    assert grad.shape == output_shape(in_shape, lam, subsample), (grad.shape, in_shape)
    gin = np.zeros(in_shape, dtype=np.float64)
    _, Vo, Uo, Ho, Wo = grad.shape
    for v in range(Vo):
        for u in range(Uo):
            for y in range(Ho):
                for xx in range(Wo):
                    for idx, w in sample_taps(v, u, y, xx, lam, mode, in_shape, subsample):
                        if idx is not None:
                            iv, iu, iy, ix = idx
                            gin[:, iv, iu, iy, ix] += grad[:, v, u, y, xx] * w
    return gin


def up_align2nat_ref(x, lam: int, mode: str = "bilinear", pad_val: float = -6.0) -> np.ndarray:
    """(N, V̂, Û, H, W) → (N, λV̂, λÛ, H, W).

    out[n, v, u, y, x] = Σ_taps w · x[n, iv, iu, iy, ix] (pad_val for taps outside the input), the
    taps/weights interpolating x at (sv, su, sy, sx) = ((v+.5)/λ − .5, (u+.5)/λ − .5,
    y + v − Vo/2 + .5, x + u − Uo/2 + .5); see the module docstring for the modes.
    """
    return _resample_ref(x, lam, mode, pad_val, subsample=False)


def swap_align2nat_ref(x, lam: int, mode: str = "bilinear", pad_val: float = -6.0) -> np.ndarray:
    """(N, V̂, Û, H, W) → (N, λV̂, λÛ, ⌈H/λ⌉, ⌈W/λ⌉).

    Same as :func:`up_align2nat_ref` with the spatial samples ``sy = y·λ + v − Vo/2 + .5`` and
    ``sx = x·λ + u − Uo/2 + .5``.
    """
    return _resample_ref(x, lam, mode, pad_val, subsample=True)


def up_align2nat_backward_ref(grad, lam: int, mode: str, in_shape) -> np.ndarray:
    """Gradient of up_align2nat w.r.t. its input of shape ``in_shape`` (scatter transpose)."""
    return _resample_backward_ref(grad, lam, mode, tuple(in_shape), subsample=False)


def swap_align2nat_backward_ref(grad, lam: int, mode: str, in_shape) -> np.ndarray:
    """Gradient of swap_align2nat w.r.t. its input of shape ``in_shape`` (scatter transpose)."""
    return _resample_backward_ref(grad, lam, mode, tuple(in_shape), subsample=True)
