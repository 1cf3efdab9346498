"""Label assignment of the sliding windows (paper §4.2, footnote 3) and the mask-target crop.

Native kernels: ``cpp/src/ops/assign_windows.cpp``, ``cpp/src/ops/crop_windows.cpp`` (CPU) and
``cuda/assign_windows.cu``, ``cuda/crop_windows.cu`` (CUDA); the rule and the sampling formula are in
``cpp/include/tensormask/detail/assign.h``. Both ops are non-differentiable (their outputs never
require grad).

Window geometry. FPN level k has stride s_k image pixels and a feature map (H_k, W_k). At every
position (y, x) of level k there is one square window per entry of ``window_sizes``: window a has
side ``side = window_sizes[a]·s_k`` image pixels (``window_sizes`` are in level-0 units at level 0,
e.g. (11, 15) → 44 and 60 px at level 0, 88 and 120 px at level 1), is centred at image pixel
``(cy, cx) = (y·s_k, x·s_k)`` and covers ``[c − side/2, c + side/2]`` on each axis. Windows are
numbered level after level, and inside level k in (y, x, a) row-major order::

    index = sum_{j<k} H_j·W_j·A + (y·W_k + x)·A + a        (A = len(window_sizes))

as detectron2 flattens its (H, W, A) anchors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

#: Label of a negative (background) window.
NEGATIVE = -1
#: Label of an ignored window (no classification loss): crowd region, or not unique with
#: ``uniqueness=False``.
IGNORE = -2

MAX_LEVELS = 16
MAX_WINDOW_SIZES = 16
#: Bound on level sizes, strides and window sizes (keeps the native index math far from int64 overflow).
MAX_GRID_VALUE = 2**28
#: Bound on ``crop_windows``' σ_VU (a window pixel averages ceil(σ)² samples).
MAX_CROP_SIGMA = 1024.0


def _flat_level_sizes(level_sizes) -> list[int]:
    """[H_0, W_0, H_1, W_1, ...] from either that flat list or a sequence of (H, W) pairs."""
    out: list[int] = []
    for item in level_sizes:
        if isinstance(item, (Sequence, torch.Size)):
            out.extend(int(v) for v in item)
        else:
            out.append(int(item))
    return out


def num_windows(level_sizes, window_sizes: Sequence[int] = (11, 15)) -> int:
    """Number R of windows over all levels: ``len(window_sizes)·Σ_k H_k·W_k``."""
    flat = _flat_level_sizes(level_sizes)
    return len(window_sizes) * sum(h * w for h, w in zip(flat[0::2], flat[1::2]))


def assign_windows(
    gt_boxes: torch.Tensor,
    gt_is_crowd: torch.Tensor | None,
    crowd_mask: torch.Tensor | None,
    level_sizes,
    strides: Sequence[int],
    window_sizes: Sequence[int] = (11, 15),
    scale_thresh: float = 2.0,
    center_thresh: float = 1.0,
    deduct_unit: bool = True,
    uniqueness: bool = True,
    fallback: bool = True,
) -> torch.Tensor:
    """Label every sliding window of one image with its ground-truth mask (paper §4.2).

    A window (level k, stride s_k, side ``side``, centre c) is *positive* for a non-crowd ground-truth
    mask m with box ``[x1, x2) × [y1, y2)`` (m_w = x2 − x1, m_h = y2 − y1) when:

    (i) **containment**: the window box contains m's box, ``c − side/2 ≤ x1`` and
        ``x2 ≤ c + side/2`` (same for y), and the **size test** holds:
        ``max(m_w, m_h)·scale_thresh ≥ side − (s_k if deduct_unit else 0)``, i.e. m's longer side is
        at least 1/scale_thresh = 1/2 of the window's side, minus one unit because windows are
        sampled on a grid of step s_k (as detectron2 does);
    (ii) **centrality**: the centre of m's box is within ``center_thresh·s_k`` of the window centre
        in ℓ2 distance (inclusive);
    (iii) **uniqueness**: no other non-crowd mask satisfies (i) and (ii) for that window. If two or
        more do, the window is negative (``uniqueness=True``) or ignored (``uniqueness=False``).

    **Fallback** (footnote 3, ``fallback=True``): when ``max(m_w, m_h)·scale_thresh`` is smaller than
    ``min_window_size = min(window_sizes)·s_0 − (s_0 if deduct_unit else 0)`` (= 40 px by default),
    the size test uses ``min_window_size`` instead, so tiny masks can match the smallest windows of
    level 0.

    **Crowd**: masks flagged in ``gt_is_crowd`` never make a window positive and take no part in the
    rule (nor in the uniqueness count); a window whose centre pixel ``(y·s_k, x·s_k)`` lies inside
    ``crowd_mask`` is ignored unless it is positive for a non-crowd mask. With no boxes and no crowd
    region every window is negative.

    Work is O(R) for the crowd test plus, per box and level, only the few positions within
    ``center_thresh·s_k`` of the box centre. The result is deterministic.

    Args:
        gt_boxes: ``(G, 4)`` float ground-truth boxes (in training the annotations' ``bbox``, as
            detectron2), XYXY image pixels, x2/y2 exclusive pixel edges (the tight box of a mask
            covering pixel columns 3..7 has x1 = 3, x2 = 8).
        gt_is_crowd: ``(G,)`` bool; ``None`` = no crowd box.
        crowd_mask: ``(Himg, Wimg)`` bool/uint8, union of the crowd masks at image resolution;
            ``None`` or a 0×0 tensor when there is none.
        level_sizes: feature map sizes, ``[(H_0, W_0), (H_1, W_1), ...]`` or flattened
            ``[H_0, W_0, H_1, W_1, ...]``.
        strides: ``[s_0, s_1, ...]`` image pixels (4·2^k for P2..P7); at most 16 levels.
        window_sizes: window sides in units of each level's stride (at most 16).
        scale_thresh: size-test factor (2 in the paper).
        center_thresh: centrality radius in units of s_k (1 in the paper).
        deduct_unit: subtract one unit s_k from the window side in the size test.
        uniqueness: windows matched by several masks are negative (True) or ignored (False).
        fallback: footnote-3 fallback for small masks.

    Returns:
        ``matched``: ``(R,)`` int64, the GT index (≥ 0) of a positive window, :data:`NEGATIVE` (−1) or
        :data:`IGNORE` (−2); R = :func:`num_windows`, same device as ``gt_boxes``.
    """
    if gt_is_crowd is None:  # (a 0-d gt_boxes gets G = 0 here and the native shape check's error)
        G = gt_boxes.shape[0] if gt_boxes.dim() > 0 else 0
        gt_is_crowd = torch.zeros(G, dtype=torch.bool, device=gt_boxes.device)
    if crowd_mask is None:
        crowd_mask = torch.zeros((0, 0), dtype=torch.uint8, device=gt_boxes.device)
    return torch.ops.tensormask.assign_windows(
        gt_boxes,
        gt_is_crowd,
        crowd_mask,
        _flat_level_sizes(level_sizes),
        [int(s) for s in strides],
        [int(a) for a in window_sizes],
        float(scale_thresh),
        float(center_thresh),
        bool(deduct_unit),
        bool(uniqueness),
        bool(fallback),
    )


def crop_windows(
    masks: torch.Tensor, gt_index: torch.Tensor, centers: torch.Tensor, sigma_vu: float, V: int, U: int
) -> torch.Tensor:
    """Binary mask targets of the positive windows: each window's matched mask on its V×U grid.

    detectron2's ``BitMasks.crop_and_resize`` (its mask targets for bitmask/RLE annotations):
    RoIAlign with ``aligned=True`` and ``sampling_ratio=0`` over the window box, thresholded at
    ``≥ 0.5``. Window p is centred at ``centers[p] = (cy, cx)`` image pixels and has V×U pixels of
    unit ``sigma_vu`` image pixels: the box ``[cx − U·σ/2, cx + U·σ/2) × [cy − V·σ/2, cy + V·σ/2)``.
    Its pixel (v, u) averages ``n × n`` bilinear samples of ``masks[gt_index[p]]``, ``n = ceil(σ)``
    (RoIAlign's adaptive ``ceil(roi_h / V)``), sample ``iy`` of row v at image coordinate
    ``cy − V·σ/2 + v·σ + (iy + ½)·σ/n`` (same for x). Image pixel i is centred at i + ½, so a
    sample reads pixel-index coordinate ``position − ½`` with torchvision's ``roi_align`` border
    rule: 0 when a coordinate is below −1 or above H (W), else clamped into the image. With integer
    σ and window edges on integer pixels (the model's windows) every sample falls on a pixel centre
    and a window pixel is the plain fraction of its σ×σ image pixels that are set.

    Work is O(P·V·U·ceil(σ)²): the windows are never materialised at image resolution.

    For the tensor bipyramid σ_VU = s_0 and V = 2^k·window_sizes[a]; for the baseline heads
    σ_VU = s_k and V = window_sizes[a].

    Args:
        masks: ``(G, Himg, Wimg)`` bool/uint8/float binary masks.
        gt_index: ``(P,)`` int64 index in [0, G) of each window's mask (``matched`` of its window).
        centers: ``(P, 2)`` float window centres ``(cy, cx)``, image pixels.
        sigma_vu: unit σ_VU of the window grid, image pixels, in (0, 1024].
        V: window grid height (pixels).
        U: window grid width (pixels).

    Returns:
        ``(P, V, U)`` float32 in {0, 1}, on the device of ``masks``.
    """
    return torch.ops.tensormask.crop_windows(masks, gt_index, centers, float(sigma_vu), int(V), int(U))


# ------------------------------------------------------------------------------------------------
# Fake kernels: the native kernels' argument checks (see detail/assign.h), then the output shape.
# ------------------------------------------------------------------------------------------------


def _check_same_device(t: torch.Tensor, arg: str, ref: torch.Tensor, ref_arg: str, op: str) -> None:
    if t.device != ref.device:
        raise ValueError(
            f"{op}: `{arg}` is on {t.device} but `{ref_arg}` is on {ref.device}; all tensors must be on the same device"
        )


def _check_window_grid(level_sizes, strides, window_sizes, op: str) -> None:
    L, A = len(strides), len(window_sizes)
    if not 1 <= L <= MAX_LEVELS:
        raise ValueError(f"{op}: `strides` must have 1 to {MAX_LEVELS} entries (one per level), got {L}")
    if len(level_sizes) != 2 * L:
        raise ValueError(
            f"{op}: `level_sizes` must be [H_0, W_0, H_1, W_1, ...] with 2 entries per level "
            f"({2 * L} for {L} strides), got {len(level_sizes)} entries"
        )
    if not 1 <= A <= MAX_WINDOW_SIZES:
        raise ValueError(f"{op}: `window_sizes` must have 1 to {MAX_WINDOW_SIZES} entries, got {A}")
    if any(not 1 <= a <= MAX_GRID_VALUE for a in window_sizes):
        raise ValueError(f"{op}: `window_sizes` must be positive and at most {MAX_GRID_VALUE}, got {list(window_sizes)}")
    if any(not 1 <= s <= MAX_GRID_VALUE for s in strides):
        raise ValueError(f"{op}: `strides` must be positive and at most {MAX_GRID_VALUE}, got {list(strides)}")
    if any(n < 0 for n in level_sizes):
        raise ValueError(f"{op}: `level_sizes` must be non-negative, got {list(level_sizes)}")
    if any(n > MAX_GRID_VALUE for n in level_sizes):
        raise ValueError(f"{op}: `level_sizes` must be at most {MAX_GRID_VALUE}, got {list(level_sizes)}")
    if num_windows(level_sizes, window_sizes) >= 2**63:
        raise ValueError(f"{op}: `level_sizes` {list(level_sizes)} give more than 2^63 windows")


@torch.library.register_fake("tensormask::assign_windows")
def _assign_windows_fake(
    gt_boxes,
    gt_is_crowd,
    crowd_mask,
    level_sizes,
    strides,
    window_sizes=(11, 15),
    scale_thresh=2.0,
    center_thresh=1.0,
    deduct_unit=True,
    uniqueness=True,
    fallback=True,
):
    op = "assign_windows"
    if gt_boxes.dim() != 2 or gt_boxes.shape[1] != 4:
        raise ValueError(f"{op}: `gt_boxes` must be a (G, 4) tensor of XYXY boxes, got shape {tuple(gt_boxes.shape)}")
    if not gt_boxes.is_floating_point():
        raise TypeError(f"{op}: `gt_boxes` must be a floating point tensor, got {gt_boxes.dtype}")
    if gt_is_crowd.dim() != 1 or gt_is_crowd.shape[0] != gt_boxes.shape[0]:
        raise ValueError(f"{op}: `gt_is_crowd` must have shape (G,), got {tuple(gt_is_crowd.shape)}")
    if gt_is_crowd.dtype not in (torch.bool, torch.uint8):
        raise TypeError(f"{op}: `gt_is_crowd` must be a bool or uint8 tensor, got {gt_is_crowd.dtype}")
    if crowd_mask.dim() != 2:
        raise ValueError(
            f"{op}: `crowd_mask` must be a 2D (H, W) tensor (0×0 for none), got shape {tuple(crowd_mask.shape)}"
        )
    if crowd_mask.dtype not in (torch.bool, torch.uint8):
        raise TypeError(f"{op}: `crowd_mask` must be a bool or uint8 tensor, got {crowd_mask.dtype}")
    _check_same_device(gt_is_crowd, "gt_is_crowd", gt_boxes, "gt_boxes", op)
    _check_same_device(crowd_mask, "crowd_mask", gt_boxes, "gt_boxes", op)
    _check_window_grid(level_sizes, strides, window_sizes, op)
    if not (scale_thresh > 0 and scale_thresh != float("inf")):
        raise ValueError(f"{op}: `scale_thresh` must be a positive finite number, got {scale_thresh}")
    if not (0 <= center_thresh < float("inf")):
        raise ValueError(f"{op}: `center_thresh` must be a non-negative finite number, got {center_thresh}")
    return gt_boxes.new_empty((num_windows(level_sizes, window_sizes),), dtype=torch.int64)


@torch.library.register_fake("tensormask::crop_windows")
def _crop_windows_fake(masks, gt_index, centers, sigma_vu, V, U):
    op = "crop_windows"
    if masks.dim() != 3:
        raise ValueError(f"{op}: `masks` must be a 3D (G, H, W) tensor, got shape {tuple(masks.shape)}")
    if not (masks.dtype in (torch.bool, torch.uint8) or masks.is_floating_point()):
        raise TypeError(f"{op}: `masks` must be a bool, uint8 or floating point tensor, got {masks.dtype}")
    if gt_index.dim() != 1:
        raise ValueError(f"{op}: `gt_index` must be a 1D (P,) tensor, got shape {tuple(gt_index.shape)}")
    if gt_index.dtype != torch.int64:
        raise TypeError(f"{op}: `gt_index` must be an int64 tensor, got {gt_index.dtype}")
    if centers.dim() != 2 or centers.shape[1] != 2:
        raise ValueError(f"{op}: `centers` must have shape (P, 2), got {tuple(centers.shape)}")
    torch._check_value(
        centers.shape[0] == gt_index.shape[0],
        lambda: f"{op}: `centers` must have shape (P, 2) with P = {gt_index.shape[0]}, got {tuple(centers.shape)}",
    )
    if not centers.is_floating_point():
        raise TypeError(f"{op}: `centers` must be a floating point tensor, got {centers.dtype}")
    if not (0 < sigma_vu <= MAX_CROP_SIGMA):
        raise ValueError(f"{op}: `sigma_vu` must be a positive number at most {MAX_CROP_SIGMA:g} (pixels), got {sigma_vu}")
    if V < 1:
        raise ValueError(f"{op}: `V` must be a positive integer, got {V}")
    if U < 1:
        raise ValueError(f"{op}: `U` must be a positive integer, got {U}")
    _check_same_device(gt_index, "gt_index", masks, "masks", op)
    _check_same_device(centers, "centers", masks, "masks", op)
    return masks.new_empty((gt_index.shape[0], V, U), dtype=torch.float32)
