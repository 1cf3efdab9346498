"""The tensor bipyramid mask head (paper §3.6, Fig. 7b, Fig. 8), in detectron2's order.

1. Fig. 8: the mask trunk output of every FPN level k, ``(N, C, H_k, W_k)`` with σ_HW = s_k, is
   bilinearly upsampled by 2^k to the finest level's resolution ``(H_0, W_0)`` (σ_HW = s_0), the
   finest level's trunk output is added (also at k = 0, which therefore sees twice its own map), and
   one 3×3 conv + ReLU (``mask_fuse``, shared by all levels) follows.
2. Fig. 7b: a 1×1 conv per window size (``mask_pred_%02d``) gives V·U channels, reshaped to the
   aligned tensor ``(N, V, U, H_0, W_0)`` whose (V, U) unit is 2^k·s_0, and
   ``swap_align2nat(λ = 2^k)`` turns it into the natural tensor
   ``(N, 2^k V, 2^k U, ⌈H_0/2^k⌉, ⌈W_0/2^k⌉)`` with σ_VU = s_0 and σ_HW = 2^k·s_0 = s_k.

So a window of level k covers ``2^k·V·s_0 = V·s_k`` image pixels with ``2^k V`` mask pixels per side
(4 image pixels each for P2), while the number of windows shrinks by 4^k.

The modules (``mask_fuse``, ``mask_pred_XX``) are owned by
:class:`tensormask.modeling.heads.TensorMaskHead` so that parameter names match detectron2's; this
module only holds the parameter-free steps and the builder of ``mask_fuse``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import swap_align2nat


def build_mask_fuse(channels: int) -> nn.Sequential:
    """``mask_fuse``: 3×3 conv (channels → channels, padding 1) + ReLU, as ``nn.Sequential`` so the
    conv's parameters are named ``mask_fuse.0.{weight,bias}`` (detectron2)."""
    return nn.Sequential(nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1), nn.ReLU())


def upsample_to_finest(mask_feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Fig. 8 without the fusing conv: every level brought to the finest resolution, plus the finest map.

    Args:
        mask_feats: per level k = 0..L−1 the mask trunk output ``(N, C, H_k, W_k)``, σ_HW = s_k = 2^k s_0,
            with ``2^k·H_k ≥ H_0`` and ``2^k·W_k ≥ W_0`` (true for FPN levels, where H_k = ⌈H_{k−1}/2⌉).

    Returns:
        per level ``(N, C, H_0, W_0)`` (σ_HW = s_0): ``crop(up_{2^k}(mask_feats[k])) + mask_feats[0]``,
        where ``up`` is bilinear with ``align_corners=False`` and ``crop`` keeps the top-left
        ``H_0 × W_0`` (detectron2). Level 0 is ``2·mask_feats[0]``.
    """
    finest = mask_feats[0]
    h0, w0 = finest.shape[-2:]
    out = []
    for k, feat in enumerate(mask_feats):
        up = feat
        if k > 0:
            f = 2**k
            hk, wk = feat.shape[-2:]
            if hk * f < h0 or wk * f < w0:
                raise ValueError(
                    f"tensor bipyramid: level {k} of size {hk}×{wk} upsampled by {f} is smaller than the "
                    f"finest level {h0}×{w0}; FPN levels must satisfy H_k = ⌈H_(k−1)/2⌉"
                )
            up = F.interpolate(feat, size=(hk * f, wk * f), mode="bilinear", align_corners=False)
            up = up[:, :, :h0, :w0]
        out.append(up + finest)
    return out


def fuse_to_finest(mask_feats: Sequence[torch.Tensor], mask_fuse: nn.Module) -> list[torch.Tensor]:
    """Fig. 8: :func:`upsample_to_finest` followed by ``mask_fuse`` (shared across levels).

    Args:
        mask_feats: per level the mask trunk output ``(N, C, H_k, W_k)``, σ_HW = s_k.
        mask_fuse: the 3×3 conv + ReLU of :func:`build_mask_fuse`.

    Returns:
        per level ``(N, C, H_0, W_0)`` features at the finest resolution (σ_HW = s_0).
    """
    return [mask_fuse(x) for x in upsample_to_finest(mask_feats)]


def bipyramid_mask_logits(x: torch.Tensor, size: int, level: int, pad_val: float = -6.0) -> torch.Tensor:
    """conv+reshape output of level k → natural mask logits of the tensor bipyramid (Fig. 7b).

    Args:
        x: ``(N, V·U, H_0, W_0)`` output of the 1×1 conv ``mask_pred_%02d`` on the fused level-k
            features; channel ``v·U + u``. Read as the aligned tensor ``(N, V, U, H_0, W_0)`` with
            σ_HW = s_0 and σ_VU = 2^k·s_0.
        size: V = U, the window size at level 0 (in level-0 units).
        level: k (0 for P2); λ = 2^k.
        pad_val: logit for samples that fall outside the feature map.

    Returns:
        natural logits ``(N, 2^k V, 2^k U, ⌈H_0/2^k⌉, ⌈W_0/2^k⌉)`` with σ_VU = s_0 and
        σ_HW = 2^k·s_0 = s_k: ``out[n, :, :, y, x]`` is the mask of the window centred at the level-k
        location (y, x), 2^k·V·s_0 image pixels wide.
    """
    n, c, h, w = x.shape
    if c != size * size:
        raise ValueError(f"bipyramid_mask_logits: expected {size}·{size} = {size * size} channels, got {c}")
    return swap_align2nat(x.reshape(n, size, size, h, w), 2**level, "bilinear", pad_val)
