"""Sparse mask decoding (paper §3.5–3.6, §4.3): the masks of a list of windows — at inference the few
that survive NMS, in training the positive windows of the mask loss — computed straight from the
mask-head features.

The dense path evaluates, for every level and window size, the 1×1 conv ``mask_pred_XX`` (C → V̂·Û
channels) over the whole feature map and converts the result to natural masks of *every* window
(>100k per image), of which ≤ 100 are kept. :func:`decode_windows` computes the masks of a list of
windows only, evaluating the 1×1 conv only at the (channel, position) pairs those windows read, so the
dense V̂·Û-channel map and the dense natural tensor are never built.

Native kernels: ``cpp/src/ops/decode_windows.cpp`` (CPU), ``cuda/decode_windows.cu`` (CUDA); the plan
and the work bounds are in ``cpp/include/tensormask/detail/decode.h``, the sampling in
``cpp/include/tensormask/detail/sampling.h`` (the same as :func:`~tensormask.ops.swap_align2nat`).

Which call for which head (``conv = head.mask_pred_XX``, ``feat`` the features that conv reads)::

    bipyramid, level k     decode_windows(fused[k], conv.weight, conv.bias, windows, V, V, 2**k)
    simple_aligned         decode_windows(mask_feats[k], conv.weight, conv.bias, windows, V, V, 1)
    upscale_aligned        decode_windows(mask_feats[k], ..., V // lam, V // lam, lam, subsample=False,
                                          mode=head.cfg.interpolation)
    simple_natural         gather_natural_windows(mask_feats[k], conv.weight, conv.bias, windows, V, V)
    upscale_natural        upscale_natural_windows(mask_feats[k], ..., V // lam, V // lam, lam)

with ``windows`` rows ``(n, y, x)`` in the level's output grid (the position of the window in the dense
mask logits ``mask_logits[k][a][n, :, :, y, x]``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_mode, check_positive

_OP = "decode_windows"


def _weight_2d(weight: torch.Tensor, op: str) -> torch.Tensor:
    """A 1×1 conv weight ``(O, C, 1, 1)`` as ``(O, C)``; 2D weights pass through."""
    if weight.dim() == 4:
        if weight.shape[2:] != (1, 1):
            raise ValueError(f"{op}: `weight` must be (V·U, C) or a 1×1 conv weight (V·U, C, 1, 1), got {tuple(weight.shape)}")
        return weight.reshape(weight.shape[0], weight.shape[1])
    return weight


def _bias_or_zeros(bias: torch.Tensor | None, weight: torch.Tensor) -> torch.Tensor:
    return weight.new_zeros(weight.shape[0]) if bias is None else bias


def decode_windows(
    features: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    windows: torch.Tensor,
    V: int,
    U: int,
    lam: int,
    subsample: bool = True,
    mode: str = "bilinear",
    pad_val: float = -6.0,
) -> torch.Tensor:
    """Natural masks of a list of windows of an *aligned* mask head (tensor bipyramid, simple_aligned,
    upscale_aligned), without the dense conv output.

    Equal (to float rounding) to::

        A = F.conv2d(features, weight.view(V·U, C, 1, 1), bias).reshape(N, V, U, H, W)
        op = swap_align2nat if subsample else up_align2nat
        op(A, lam, mode, pad_val)[windows[:, 0], :, :, windows[:, 1], windows[:, 2]]

    i.e. output ``(v, u)`` of window ``(n, y, x)`` interpolates the aligned values
    ``A[n, iv, iu, iy, ix] = bias[iv·U + iu] + weight[iv·U + iu] · features[n, :, iy, ix]`` at window
    position ``sv = (v + 0.5)/λ − 0.5`` (nearest: ``⌊sv + 0.5⌋``) and spatial position
    ``sy = y·s + v − λV/2 + 0.5`` (s = λ with ``subsample``, else 1), likewise for (u, x); samples
    outside A count as ``pad_val``.

    Work per window: the distinct aligned values it reads are computed once, one C-long dot product
    each: ≈ 4·(λV)·(λU)·C multiply-adds for bilinear λ ≥ 2 (λV·λU·C for λ = 1, odd V), then 16 per
    output pixel.

    Differentiable in ``features``, ``weight`` and ``bias`` (``decode_windows_backward``, ≈ 2× the
    forward's work; padding has no gradient): training computes the mask loss of the positive windows
    with it, without the dense conv output and its gradient. A second derivative raises.

    Args:
        features: ``(N, C, H, W)`` float features the conv reads (for the bipyramid: the fused level-k
            features at P2 resolution).
        weight: ``(V·U, C)`` (or the conv's ``(V·U, C, 1, 1)``), dtype of ``features``.
        bias: ``(V·U,)`` or ``None`` (zeros).
        windows: ``(P, 3)`` int64 rows ``(n, y, x)`` in the output grid: ``0 ≤ y < ⌈H/λ⌉`` with
            ``subsample`` (the level-k grid for the bipyramid), else ``0 ≤ y < H``.
        V, U: window size V̂ × Û of the aligned tensor (conv channels = V·U, channel ``v·U + u``).
        lam: upscale factor λ ≥ 1 (2^k for the bipyramid).
        subsample: swap_align2nat (True) or up_align2nat (False) geometry.
        mode: ``"bilinear"`` or ``"nearest"`` on the window axes.
        pad_val: value of samples outside the aligned tensor.

    Returns:
        ``(P, λV, λU)`` natural mask logits, dtype of ``features``.

    Raises:
        ValueError: bad ranks or sizes (``weight`` rows ≠ V·U, columns ≠ C), windows out of range
            (naming the row), tensors on different devices. TypeError: non-floating features,
            mismatched dtypes, non-int64 windows.
    """
    weight = _weight_2d(weight, _OP)
    bias = _bias_or_zeros(bias, weight)
    return torch.ops.tensormask.decode_windows(
        features, weight, bias, windows, int(V), int(U), int(lam), bool(subsample), mode, float(pad_val)
    )


def _check_natural(features, weight, bias, windows, V, U, op):
    if features.dim() != 4:
        raise ValueError(f"{op}: `features` must be a 4D tensor (N, C, H, W), got shape {tuple(features.shape)}")
    if weight.dim() != 2 or weight.shape[0] != V * U or weight.shape[1] != features.shape[1]:
        raise ValueError(
            f"{op}: `weight` must be (V·U, C) = ({V * U}, {features.shape[1]}), got {tuple(weight.shape)}"
        )
    if bias.shape != (V * U,):
        raise ValueError(f"{op}: `bias` must be (V·U,) = ({V * U},), got {tuple(bias.shape)}")
    if windows.dim() != 2 or windows.shape[1] != 3:
        raise ValueError(f"{op}: `windows` must be (P, 3) rows (n, y, x), got {tuple(windows.shape)}")
    if windows.dtype != torch.int64:
        raise TypeError(f"{op}: `windows` must be an int64 tensor, got {windows.dtype}")
    for name, t in (("weight", weight), ("bias", bias), ("windows", windows)):
        if t.device != features.device:
            raise ValueError(f"{op}: `{name}` is on {t.device} but `features` is on {features.device}")
    if windows.numel() and not torch.compiler.is_compiling():
        n, _, h, w = features.shape
        bound = torch.tensor([n, h, w], device=windows.device)
        bad = ((windows < 0) | (windows >= bound)).any(dim=1)
        if bool(bad.any()):
            p = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"{op}: `windows` row {p} = {tuple(windows[p].tolist())} is out of range: need 0 <= n < {n}, "
                f"0 <= y < {h}, 0 <= x < {w}"
            )


def gather_natural_windows(
    features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, windows: torch.Tensor, V: int, U: int
) -> torch.Tensor:
    """Masks of a list of windows of the ``simple_natural`` head (Fig. 6a): the 1×1 conv evaluated only
    at the window positions.

    Equal to ``baseline_mask_logits(conv(features), "simple_natural", V)[n, :, :, y, x]`` for each
    row ``(n, y, x)`` of ``windows``; P·V·U·C multiply-adds.

    Args:
        features: ``(N, C, H, W)`` mask features of one level.
        weight: ``(V·U, C)`` or ``(V·U, C, 1, 1)``; bias ``(V·U,)`` or ``None``.
        windows: ``(P, 3)`` int64 rows ``(n, y, x)``, ``0 ≤ y < H``, ``0 ≤ x < W``.
        V, U: window size; channel ``v·U + u`` is mask pixel (v, u).

    Returns:
        ``(P, V, U)``.
    """
    op = "gather_natural_windows"
    weight = _weight_2d(weight, op)
    bias = _bias_or_zeros(bias, weight)
    _check_natural(features, weight, bias, windows, V, U, op)
    n, y, x = windows.unbind(1)
    f = features[n, :, y, x]  # (P, C)
    return torch.addmm(bias, f, weight.t()).reshape(-1, V, U)


def upscale_natural_windows(
    features: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    windows: torch.Tensor,
    V: int,
    U: int,
    lam: int,
) -> torch.Tensor:
    """Masks of a list of windows of the ``upscale_natural`` head (Fig. 6c): the V̂ × Û conv output at
    the window positions, each upsampled by λ as an image (bilinear, ``align_corners=False``).

    Equal to ``baseline_mask_logits(conv(features), "upscale_natural", λV, λ)[n, :, :, y, x]``
    (:func:`tensormask.modeling.heads.upscale_natural`).

    Args:
        features, weight, bias, windows: as :func:`gather_natural_windows`.
        V, U: coarse window size V̂ × Û (conv channels V̂·Û).
        lam: upscale factor λ ≥ 1.

    Returns:
        ``(P, λV, λU)``.
    """
    check_positive(lam, "upscale_natural_windows", "lam")
    coarse = gather_natural_windows(features, weight, bias, windows, V, U)
    if lam == 1:
        return coarse
    up = F.interpolate(coarse.unsqueeze(1), size=(lam * V, lam * U), mode="bilinear", align_corners=False)
    return up.squeeze(1)


# ---- fake kernel (torch.compile / export) -------------------------------------------------------------


@torch.library.register_fake("tensormask::decode_windows")
def _decode_windows_fake(features, weight, bias, windows, V, U, lam, subsample=True, mode="bilinear", pad_val=-6.0):
    _check_decode_fake(_OP, features, weight, bias, windows, V, U, lam, mode)
    return features.new_empty((windows.shape[0], lam * V, lam * U))


@torch.library.register_fake("tensormask::decode_windows_backward")
def _decode_windows_backward_fake(grad, features, weight, windows, V, U, lam, subsample, mode):
    op = "decode_windows_backward"
    _check_decode_fake(op, features, weight, None, windows, V, U, lam, mode)
    expected = (windows.shape[0], lam * V, lam * U)
    if tuple(grad.shape) != expected:
        raise ValueError(f"{op}: `grad` must have the output's shape (P, λV, λU) = {expected}, got {tuple(grad.shape)}")
    if grad.dtype != features.dtype:
        raise TypeError(f"{op}: `grad` must have the dtype of `features` ({features.dtype}), got {grad.dtype}")
    return features.new_empty(features.shape), weight.new_empty(weight.shape), weight.new_empty((weight.shape[0],))


def _check_decode_fake(op, features, weight, bias, windows, V, U, lam, mode):
    """The checks of ``check_decode_args`` (decode.h) on fake tensors; ``bias`` may be None."""
    if features.dim() != 4:
        raise ValueError(f"{op}: `features` must be a 4D tensor (N, C, H, W), got {features.dim()}D with shape {tuple(features.shape)}")
    if not features.is_floating_point():
        raise TypeError(f"{op}: `features` must be a floating point tensor, got {features.dtype}")
    if weight.dim() != 2:
        raise ValueError(f"{op}: `weight` must be a 2D tensor (V·U, C), got {weight.dim()}D with shape {tuple(weight.shape)}")
    if bias is not None and bias.dim() != 1:
        raise ValueError(f"{op}: `bias` must be a 1D tensor (V·U,), got {bias.dim()}D with shape {tuple(bias.shape)}")
    if windows.dim() != 2 or windows.shape[1] != 3:
        raise ValueError(f"{op}: `windows` must be a 2D tensor (P, 3) of rows (n, y, x), got shape {tuple(windows.shape)}")
    named = [("weight", weight)] + ([("bias", bias)] if bias is not None else [])
    for name, t in named:
        if t.dtype != features.dtype:
            raise TypeError(f"{op}: `{name}` must have the dtype of `features` ({features.dtype}), got {t.dtype}")
    if windows.dtype != torch.int64:
        raise TypeError(f"{op}: `windows` must be an int64 tensor, got {windows.dtype}")
    for name, t in named + [("windows", windows)]:
        if t.device != features.device:
            raise ValueError(f"{op}: `{name}` is on {t.device} but `features` is on {features.device}")
    check_positive(V, op, "V")
    check_positive(U, op, "U")
    check_positive(lam, op, "lam")
    check_mode(mode, op)
    if weight.shape[0] != V * U:
        raise ValueError(f"{op}: `weight` must have V·U = {V}·{U} = {V * U} rows, got {weight.shape[0]}")
    if weight.shape[1] != features.shape[1]:
        raise ValueError(f"{op}: `weight` must have C = {features.shape[1]} columns (the channels of `features`), got {weight.shape[1]}")
    if bias is not None and bias.shape[0] != V * U:
        raise ValueError(f"{op}: `bias` must have V·U = {V * U} elements, got {bias.shape[0]}")
