"""Prediction heads of TensorMask (paper §4.1, Fig. 6–8): class, box and mask.

All heads run on every FPN level P2..P7 (level k = 0..5, stride s_k = 4·2^k image pixels) with weights
shared across levels but not between tasks. Parameter names follow detectron2's ``TensorMaskHead`` so
that its checkpoints load 1:1::

    cls_subnet.{0,2,4,6}.{weight,bias}   cls_score.{weight,bias}
    bbox_subnet.{0,2,4,6}.*              bbox_pred.*            (absent with box_head=False)
    mask_subnet.{0,2,4,6}.*              mask_pred_11.*, mask_pred_15.*  (one per window size)
    mask_fuse.0.*                        (tensor bipyramid only)

(With ``norm="GN"``, not in detectron2, each subnet holds convs 0, 3, 6, 9 and GroupNorms 1, 4, 7, 10.)

Output conventions (:class:`HeadOutputs`):

* class logits ``(N, A·K, H_k, W_k)``, window-size-major: channel ``a·K + k`` is class k of window
  size ``window_sizes[a]``; box deltas ``(N, A·4, H_k, W_k)``, channel ``a·4 + j``.
* mask logits in the *natural* representation (§3.2), class-agnostic, indexed [level][window size]:
  ``(N, V, U, H_k, W_k)``; ``out[n, :, :, y, x]`` is the mask of the window centred at image pixel
  ``(y·s_k, x·s_k)`` (detectron2's anchor centre). Baseline heads: V = V_0 with σ_VU = σ_HW = s_k.
  Tensor bipyramid: V = 2^k·V_0 with σ_VU = s_0. Either way the window is V_0·s_k image pixels wide;
  :meth:`TensorMaskHead.window_geometry` gives these numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import HeadConfig
from ..ops import decode_windows, gather_natural_windows, swap_align2nat, up_align2nat, upscale_natural_windows
from .bipyramid import bipyramid_mask_logits, build_mask_fuse, fuse_to_finest

MASK_HEADS = ("simple_natural", "simple_aligned", "upscale_natural", "upscale_aligned", "bipyramid")
INTERPOLATIONS = ("bilinear", "nearest")


class HeadOutputs(NamedTuple):
    """Raw outputs of :class:`TensorMaskHead` for L levels and A window sizes.

    Attributes:
        cls_logits: L tensors ``(N, A·K, H_k, W_k)``, channel ``a·K + k`` (window-size-major).
        box_deltas: L tensors ``(N, A·4, H_k, W_k)``, channel ``a·4 + j`` for (dx, dy, dw, dh); ``None``
            without a box head.
        mask_logits: ``mask_logits[k][a]`` is ``(N, V_ka, U_ka, H_k, W_k)``, natural representation;
            ``None`` when the head ran with ``dense_masks=False`` (inference decodes masks sparsely).
        mask_features: L tensors ``(N, C_mask, H', W')``, the input of the ``mask_pred_XX`` convs of
            each level (the tensor bipyramid's fused P2-resolution maps, else the mask trunk output).
    """

    cls_logits: list[torch.Tensor]
    box_deltas: list[torch.Tensor] | None
    mask_logits: list[list[torch.Tensor]] | None
    mask_features: list[torch.Tensor] | None = None


class WindowGeometry(NamedTuple):
    """Geometry of the windows of one (level, window size).

    Attributes:
        side_px: window side in image pixels (V_0·s_k for every head).
        sigma_vu_px: σ_VU, the size of one mask pixel in image pixels (s_k for the baseline heads, s_0
            for the tensor bipyramid).
        size: V = U, the number of mask pixels per side of the output (side_px = size·sigma_vu_px).
    """

    side_px: float
    sigma_vu_px: float
    size: int


HEAD_NORMS = ("none", "GN")


def make_subnet(in_channels: int, channels: int, num_convs: int, norm: str = "none", gn_groups: int = 32) -> nn.Sequential:
    """``num_convs`` × (3×3 conv, padding 1 [+ GroupNorm] + ReLU), as an ``nn.Sequential``.

    Without norm (paper, detectron2) the convs sit at indices 0, 2, 4, ...; with ``norm="GN"`` each
    conv is followed by ``GroupNorm(gn_groups, channels)`` (FCOS) and the convs sit at 0, 3, 6, ...
    with the norms at 1, 4, 7, .... The norms' affine parameters are shared across levels, like the
    convs. ``norm`` and ``gn_groups`` are validated with the rest of the head config (``_check_config``).
    """
    layers: list[nn.Module] = []
    cur = in_channels
    for _ in range(num_convs):
        layers.append(nn.Conv2d(cur, channels, kernel_size=3, stride=1, padding=1))
        if norm == "GN":
            layers.append(nn.GroupNorm(gn_groups, channels))
        layers.append(nn.ReLU())
        cur = channels
    return nn.Sequential(*layers)


def permute_to_N_HWA_K(x: torch.Tensor, k: int) -> torch.Tensor:  # noqa: N802 (detectron2's name)
    """``(N, A·K, H, W)`` → ``(N, H·W·A, K)``: row ``(y·W + x)·A + a`` holds channels ``a·K .. a·K+K−1``.

    This is the flattening order of windows within a level (detectron2); levels are concatenated
    along dim 1 after it.
    """
    n, c, h, w = x.shape
    if c % k != 0:
        raise ValueError(f"permute_to_N_HWA_K: {c} channels is not a multiple of K={k}")
    return x.view(n, c // k, k, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, k)


def to_4d(x: torch.Tensor, v: int, u: int) -> torch.Tensor:
    """conv output ``(N, V·U, H, W)`` → ``(N, V, U, H, W)``; channel ``v·U + u`` becomes (v, u)."""
    n, c, h, w = x.shape
    if c != v * u:
        raise ValueError(f"to_4d: expected {v}·{u} = {v * u} channels, got {c}")
    return x.reshape(n, v, u, h, w)


def upscale_natural(x: torch.Tensor, lam: int) -> torch.Tensor:
    """Bilinear upsampling of the window sub-tensor of a natural tensor by λ (Fig. 6c).

    Each window ``x[n, :, :, y, x]`` is upsampled as an image (``F.interpolate``, bilinear,
    ``align_corners=False``); windows do not see each other.

    Args:
        x: natural tensor ``(N, V̂, Û, H, W)`` with σ_VU = λ·σ_HW.
        lam: integer λ ≥ 1.

    Returns:
        natural tensor ``(N, λV̂, λÛ, H, W)`` with σ_VU = σ_HW.
    """
    if lam == 1:
        return x
    n, v, u, h, w = x.shape
    y = x.permute(0, 3, 4, 1, 2).reshape(n * h * w, 1, v, u)
    y = F.interpolate(y, size=(lam * v, lam * u), mode="bilinear", align_corners=False)
    return y.reshape(n, h, w, lam * v, lam * u).permute(0, 3, 4, 1, 2).contiguous()


def baseline_mask_logits(
    x: torch.Tensor,
    head: str,
    size: int,
    lam: int = 1,
    interpolation: str = "bilinear",
    pad_val: float = -6.0,
) -> torch.Tensor:
    """conv+reshape output → natural mask logits for the four baseline heads of Fig. 6.

    Args:
        x: output of the 1×1 conv ``mask_pred_%02d`` on one level, ``(N, C, H, W)`` with σ_HW = s_k;
            C = V·U for the simple heads, (V/λ)·(U/λ) for the upscale heads; channel ``v·U' + u``.
        head: ``"simple_natural"`` (6a), ``"simple_aligned"`` (6b), ``"upscale_natural"`` (6c) or
            ``"upscale_aligned"`` (6d).
        size: output window size V = U.
        lam: λ of the upscale heads (must divide ``size``); ignored by the simple heads.
        interpolation: ``"bilinear"`` or ``"nearest"`` on (V̂, Û) for ``upscale_aligned``
            (nearest = the unaligned, InstanceFCN-like head).
        pad_val: logit outside the feature map for the aligned heads.

    Returns:
        natural logits ``(N, V, U, H, W)`` with σ_VU = σ_HW = s_k.
    """
    if head == "simple_natural":
        return to_4d(x, size, size)
    if head == "simple_aligned":
        # swap_align2nat with λ = 1 is align2nat(α = 1) for odd V (detectron2's aligned head).
        return swap_align2nat(to_4d(x, size, size), 1, "bilinear", pad_val)
    if size % lam != 0:
        raise ValueError(f"upscale_lambda={lam} does not divide window size {size}")
    coarse = size // lam
    if head == "upscale_natural":
        return upscale_natural(to_4d(x, coarse, coarse), lam)
    if head == "upscale_aligned":
        return up_align2nat(to_4d(x, coarse, coarse), lam, interpolation, pad_val)
    raise ValueError(f"unknown baseline mask head {head!r} (known: {', '.join(MASK_HEADS[:4])})")


class TensorMaskHead(nn.Module):
    """Class, box and mask heads of TensorMask on an FPN pyramid (weights shared across levels).

    Args:
        cfg: head options; ``cfg.mask_head`` picks the mask head, ``cfg.window_sizes`` the A window
            sizes V_0 (level-0 units), ``cfg.upscale_lambda``/``cfg.interpolation`` configure the
            upscale heads (``interpolation`` is used by ``upscale_aligned`` only; the bipyramid and
            ``upscale_natural`` are always bilinear).
        in_channels: channels C of every FPN level.
        num_levels: number of levels L (6 for P2..P7).

    Raises:
        ValueError: for an unknown head or interpolation, duplicate or non-positive window sizes, or
            an ``upscale_lambda`` that does not divide every window size (upscale heads).
    """

    def __init__(self, cfg: HeadConfig, in_channels: int, num_levels: int):
        super().__init__()
        _check_config(cfg, num_levels)
        self.cfg = cfg
        self.num_levels = num_levels
        self.num_classes = cfg.num_classes
        self.window_sizes = tuple(int(v) for v in cfg.window_sizes)
        self.num_window_sizes = len(self.window_sizes)
        self.mask_head = cfg.mask_head
        self.bipyramid = cfg.mask_head == "bipyramid"
        self.upscale_lambda = cfg.upscale_lambda if cfg.mask_head.startswith("upscale") else 1
        self.pad_val = float(cfg.mask_pad_val)
        A, K = self.num_window_sizes, cfg.num_classes

        self.cls_subnet = make_subnet(in_channels, cfg.cls_channels, cfg.num_convs, cfg.norm, cfg.gn_groups)
        cls_in = cfg.cls_channels if cfg.num_convs > 0 else in_channels
        self.cls_score = nn.Conv2d(cls_in, A * K, kernel_size=3, stride=1, padding=1)
        init_modules: list[nn.Module] = [self.cls_subnet, self.cls_score]

        self.bbox_subnet: nn.Sequential | None = None
        self.bbox_pred: nn.Conv2d | None = None
        if cfg.box_head:
            self.bbox_subnet = make_subnet(in_channels, cfg.bbox_channels, cfg.num_convs, cfg.norm, cfg.gn_groups)
            bbox_in = cfg.bbox_channels if cfg.num_convs > 0 else in_channels
            self.bbox_pred = nn.Conv2d(bbox_in, A * 4, kernel_size=3, stride=1, padding=1)
            init_modules += [self.bbox_subnet, self.bbox_pred]

        self.mask_subnet = make_subnet(in_channels, cfg.mask_channels, cfg.num_convs, cfg.norm, cfg.gn_groups)
        mask_in = cfg.mask_channels if cfg.num_convs > 0 else in_channels
        init_modules.append(self.mask_subnet)
        for v in self.window_sizes:
            coarse = v // self.upscale_lambda
            conv = nn.Conv2d(mask_in, coarse * coarse, kernel_size=1, stride=1, padding=0)
            self.add_module(self.mask_pred_name(v), conv)
            init_modules.append(conv)
        self.mask_fuse: nn.Sequential | None = None
        if self.bipyramid:
            self.mask_fuse = build_mask_fuse(mask_in)
            init_modules.append(self.mask_fuse)

        # detectron2 initialisation: N(0, 0.01) weights, zero biases; class prior on the class bias.
        # init="kaiming" uses He-normal weights in the conv trunks instead (narrow heads trained from
        # scratch, like the CPU demo's, barely pass a signal through N(0, 0.01) layers).
        predictors = {self.cls_score, self.bbox_pred, *(getattr(self, self.mask_pred_name(v)) for v in self.window_sizes)}
        for module in init_modules:
            for layer in module.modules():
                if isinstance(layer, nn.Conv2d):
                    if cfg.init == "kaiming" and layer not in predictors:
                        nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
                    else:
                        nn.init.normal_(layer.weight, mean=0.0, std=0.01)
                    nn.init.constant_(layer.bias, 0.0)
        nn.init.constant_(self.cls_score.bias, -math.log((1.0 - cfg.prior_prob) / cfg.prior_prob))

    @staticmethod
    def mask_pred_name(size: int) -> str:
        """Attribute name of the 1×1 mask conv of window size ``size`` (``mask_pred_15``)."""
        return "mask_pred_%02d" % size

    def output_size(self, level: int, window_idx: int) -> int:
        """V = U of ``mask_logits[level][window_idx]``: 2^k·V_0 (bipyramid) or V_0 (baseline heads)."""
        v0 = self.window_sizes[window_idx]
        return v0 * 2**level if self.bipyramid else v0

    def window_geometry(self, strides: Sequence[float]) -> list[list[WindowGeometry]]:
        """Window side, mask unit σ_VU and mask size per level and window size.

        Args:
            strides: the L level strides s_k in image pixels (4, 8, …, 128 for P2..P7).

        Returns:
            ``geom[k][a]`` = ``WindowGeometry(side_px = V_0·s_k, sigma_vu_px, size)`` with
            ``(sigma_vu_px, size) = (s_k, V_0)`` for the baseline heads and ``(s_0, 2^k·V_0)`` for the
            tensor bipyramid; always ``side_px == size·sigma_vu_px``.

        Raises:
            ValueError: wrong number of strides, or (bipyramid) strides that are not s_0·2^k.
        """
        if len(strides) != self.num_levels:
            raise ValueError(f"window_geometry: expected {self.num_levels} strides, got {len(strides)}")
        if self.bipyramid and any(s != strides[0] * 2**k for k, s in enumerate(strides)):
            raise ValueError(f"window_geometry: the tensor bipyramid needs strides s_0·2^k, got {tuple(strides)}")
        geom = []
        for k, s in enumerate(strides):
            sigma = strides[0] if self.bipyramid else s
            row = []
            for a in range(self.num_window_sizes):
                size = self.output_size(k, a)
                row.append(WindowGeometry(side_px=size * sigma, sigma_vu_px=sigma, size=size))
            geom.append(row)
        return geom

    def forward(self, features: Sequence[torch.Tensor], dense_masks: bool = True) -> HeadOutputs:
        """Run all heads.

        Args:
            features: L FPN maps ``(N, C, H_k, W_k)``, finest first, σ_HW = s_k. The tensor bipyramid
                needs ``H_k = ⌈H_(k−1)/2⌉`` (as FPN: P6/P7 come from stride-2 convs on inputs padded to 32).
            dense_masks: compute the dense mask logits of every window (training). With False only the
                mask features are returned and masks are decoded later for the few windows that
                survive NMS (:func:`tensormask.ops.decode_windows`).

        Returns:
            :class:`HeadOutputs`; mask logits ``(N, V, U, H_k, W_k)`` per level and window size (for the
            bipyramid the spatial size is ``⌈H_0/2^k⌉ × ⌈W_0/2^k⌉``, equal to H_k × W_k under the
            condition above).
        """
        if len(features) != self.num_levels:
            raise ValueError(f"TensorMaskHead: expected {self.num_levels} feature maps, got {len(features)}")
        cls_logits = [self.cls_score(self.cls_subnet(x)) for x in features]
        box_deltas = None
        if self.bbox_pred is not None:
            box_deltas = [self.bbox_pred(self.bbox_subnet(x)) for x in features]
        mask_feats = self.mask_features(features)
        mask_logits = self.dense_mask_logits(mask_feats) if dense_masks else None
        return HeadOutputs(cls_logits, box_deltas, mask_logits, mask_feats)

    def mask_features(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Input of the ``mask_pred_XX`` convs per level: the mask trunk output, fused to P2
        resolution for the tensor bipyramid (Fig. 8)."""
        mask_feats = [self.mask_subnet(x) for x in features]
        return fuse_to_finest(mask_feats, self.mask_fuse) if self.bipyramid else mask_feats

    def mask_pred(self, window_idx: int) -> nn.Conv2d:
        """The 1×1 conv of window size ``window_sizes[window_idx]``."""
        return getattr(self, self.mask_pred_name(self.window_sizes[window_idx]))

    def window_mask_logits(
        self, mask_feats: Sequence[torch.Tensor], level: int, window_idx: int, windows: torch.Tensor
    ) -> torch.Tensor:
        """Natural mask logits of a list of windows, for any mask head, differentiable: training's mask
        loss at the positive windows and inference's masks of the windows kept by NMS. The 1×1 conv
        ``mask_pred_XX`` is evaluated only where those windows read it
        (:func:`tensormask.ops.decode_windows`, :func:`~tensormask.ops.gather_natural_windows`,
        :func:`~tensormask.ops.upscale_natural_windows`), so neither the dense V̂·Û-channel conv
        output nor the dense logits (nor their gradients) are built.

        Args:
            mask_feats: :meth:`mask_features` of the batch: per level ``(N, C, H, W)``, the fused
                P2-resolution map (tensor bipyramid) or the mask trunk output of the level.
            level: level k; window_idx: index a into ``window_sizes``.
            windows: ``(P, 3)`` int64 rows ``(n, y, x)`` on level k's grid.

        Returns:
            ``(P, V, V)`` (V = :meth:`output_size`), equal to
            ``dense_mask_logits(mask_feats)[k][a][n, :, :, y, x]``; dtype of the features.
        """
        v = self.window_sizes[window_idx]
        feat = mask_feats[level]
        conv = self.mask_pred(window_idx)
        # The conv's parameters in the features' dtype (bfloat16 under CPU autocast, like the conv's).
        weight, bias = conv.weight.to(feat.dtype), conv.bias.to(feat.dtype)
        if self.bipyramid:
            return decode_windows(feat, weight, bias, windows, v, v, 2**level, True, "bilinear", self.pad_val)
        if self.mask_head == "simple_aligned":
            return decode_windows(feat, weight, bias, windows, v, v, 1, True, "bilinear", self.pad_val)
        if self.mask_head == "simple_natural":
            return gather_natural_windows(feat, weight, bias, windows, v, v)
        lam = self.upscale_lambda
        if self.mask_head == "upscale_aligned":
            return decode_windows(feat, weight, bias, windows, v // lam, v // lam, lam, False, self.cfg.interpolation, self.pad_val)
        return upscale_natural_windows(feat, weight, bias, windows, v // lam, v // lam, lam)

    def dense_mask_logits(self, mask_feats: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
        """Natural mask logits of every window: ``[k][a]`` = ``(N, V_ka, U_ka, H_k, W_k)``."""
        mask_logits: list[list[torch.Tensor]] = []
        for k, feat in enumerate(mask_feats):
            row = []
            for a, v in enumerate(self.window_sizes):
                conv = self.mask_pred(a)
                if self.bipyramid:
                    row.append(bipyramid_mask_logits(conv(feat), v, k, self.pad_val))
                else:
                    row.append(
                        baseline_mask_logits(conv(feat), self.mask_head, v, self.upscale_lambda, self.cfg.interpolation, self.pad_val)
                    )
            mask_logits.append(row)
        return mask_logits


def _check_config(cfg: HeadConfig, num_levels: int) -> None:
    if cfg.mask_head not in MASK_HEADS:
        raise ValueError(f"unknown mask_head {cfg.mask_head!r} (known: {', '.join(MASK_HEADS)})")
    if cfg.interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be 'bilinear' or 'nearest', got {cfg.interpolation!r}")
    if num_levels < 1:
        raise ValueError(f"num_levels must be positive, got {num_levels}")
    if cfg.num_classes < 1 or cfg.num_convs < 0:
        raise ValueError(f"need num_classes ≥ 1 and num_convs ≥ 0, got {cfg.num_classes} and {cfg.num_convs}")
    if cfg.init not in ("normal", "kaiming"):
        raise ValueError(f"head.init must be 'normal' or 'kaiming', got {cfg.init!r}")
    if not 0.0 < cfg.prior_prob < 1.0:
        raise ValueError(f"prior_prob must lie in (0, 1), got {cfg.prior_prob}")
    if cfg.norm not in HEAD_NORMS:
        raise ValueError(f"model.head.norm must be one of {', '.join(HEAD_NORMS)}; got {cfg.norm!r}")
    if cfg.norm == "GN" and cfg.num_convs > 0:
        towers = [cfg.cls_channels, cfg.mask_channels] + ([cfg.bbox_channels] if cfg.box_head else [])
        for channels in towers:
            if cfg.gn_groups < 1 or channels % cfg.gn_groups:
                raise ValueError(f"model.head.gn_groups={cfg.gn_groups} must divide the tower channels ({channels})")
    sizes = tuple(cfg.window_sizes)
    if not sizes or any(int(v) != v or v < 1 for v in sizes):
        raise ValueError(f"window_sizes must be positive integers, got {sizes}")
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"window_sizes must be distinct (one mask_pred_XX conv each), got {sizes}")
    if cfg.mask_head.startswith("upscale"):
        lam = cfg.upscale_lambda
        if int(lam) != lam or lam < 1:
            raise ValueError(f"upscale_lambda must be a positive integer, got {lam}")
        for v in sizes:
            if v % lam != 0:
                raise ValueError(f"upscale_lambda={lam} does not divide window size {v}")
