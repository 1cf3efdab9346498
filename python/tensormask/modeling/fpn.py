"""RetinaNet-style FPN on a ResNet (paper §4.1; detectron2's ``build_retinanet_resnet_fpn_backbone``).

For levels k = min_level..5 (stride 2^k image pixels)::

    lateral_k = fpn_lateral{k}(res{k})                         1×1 conv, bias, no norm
    M_5 = lateral_5;  M_k = fuse(lateral_k, up2(M_{k+1}))       up2: nearest-neighbour ×2
    P_k = fpn_output{k}(M_k)                                    3×3 conv, bias, no norm

``fuse`` is the average ``(lateral + top_down) / 2`` for ``fuse_type == "avg"`` (the paper) and the sum
otherwise (original FPN). Above res5 (RetinaNet)::

    P6 = top_block.p6(res5)         3×3/2 conv on C5 (not P5)
    P7 = top_block.p7(ReLU(P6))     3×3/2 conv

(levels above 7 continue the P7 rule). Every level has ``out_channels`` channels. The input
``(N, 3, H, W)`` has H, W divisible by ``size_divisibility``, a multiple of res5's stride 32 (detectron2
pads to 32: the FPN's ``size_divisibility`` is its coarsest ResNet stride); levels k ≤ 5 then have shape
``(N, C, H / 2^k, W / 2^k)`` exactly and the stride-2 convs above res5 round up:
``H_6 = ⌈H_5 / 2⌉``, ``H_7 = ⌈H_6 / 2⌉`` (= ⌈H / 2^k⌉; e.g. 800×1344 → P6 13×21, P7 7×11).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import BackboneConfig, FPNConfig
from .backbone import build_backbone

__all__ = ["FUSE_TYPES", "c2_xavier_fill", "LastLevelP6P7", "BackboneWithFPN", "build_backbone_fpn"]

FUSE_TYPES = ("avg", "sum")
RES5_STRIDE = 32  # the coarsest ResNet stride: inputs must divide by it (the top-down path doubles sizes)


def c2_xavier_fill(module: nn.Conv2d) -> None:
    """detectron2's ``c2_xavier_fill``: ``kaiming_uniform_(a=1)`` weights, zero bias."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


class LastLevelP6P7(nn.Module):
    """Extra levels 6..max_level from C5: ``p6`` = 3×3/2 conv on res5, ``p{k+1}`` = 3×3/2 conv on ReLU(P_k).

    ``forward(c5 (N, C_in, h, w)) -> [P6 (N, C, ⌈h/2⌉, ⌈w/2⌉), P7 ...]``.
    """

    def __init__(self, in_channels: int, out_channels: int, max_level: int = 7) -> None:
        super().__init__()
        self.levels = list(range(6, max_level + 1))
        for k in self.levels:
            conv = nn.Conv2d(in_channels if k == 6 else out_channels, out_channels, 3, stride=2, padding=1)
            c2_xavier_fill(conv)
            self.add_module(f"p{k}", conv)

    def forward(self, c5: torch.Tensor) -> list[torch.Tensor]:
        outs = [self.p6(c5)]
        for k in self.levels[1:]:
            outs.append(getattr(self, f"p{k}")(F.relu(outs[-1])))
        return outs


class BackboneWithFPN(nn.Module):
    """ResNet (``bottom_up``) + FPN producing P{min_level}..P{max_level} (default P2–P7).

    Args:
        bottom_up: module returning ``{"res2": ..., "res5": ...}`` with attributes ``out_channels``
            and ``strides`` (dicts keyed like its outputs; ``strides["res<k>"]`` must be 2^k).
        out_channels: channels C of every pyramid level.
        fuse_type: "avg" (paper §4.1) or "sum".
        min_level: finest level, 2..5 (its lateral reads ``res<min_level>``).
        max_level: coarsest level, ≥ 5 (levels above 5 come from :class:`LastLevelP6P7`).
        size_divisibility: inputs must have H and W divisible by this; a multiple of 32 (the res5
            stride; detectron2's value). Levels above 5 then have ⌈H / 2^k⌉ rows.

    Attributes:
        out_features: ``["p2", ..., "p7"]``; ``levels``: ``[2, ..., 7]``.
        strides: ``[4, 8, ..., 128]`` image pixels per level; ``out_channels``: C;
        size_divisibility: as given.

    ``forward(x (N, 3, H, W)) -> {"p<k>": (N, C, ⌈H / 2^k⌉, ⌈W / 2^k⌉)}`` ordered fine to coarse; raises
    ValueError when H or W is not divisible by ``size_divisibility`` (pad the batch first).

    Parameter names: ``bottom_up.*`` (the ResNet), ``fpn_lateral<k>.*``, ``fpn_output<k>.*``,
    ``top_block.p6.*``, ``top_block.p7.*`` — detectron2's ``backbone.*`` names without ``backbone.``.
    """

    def __init__(self, bottom_up: nn.Module, *, out_channels: int = 256, fuse_type: str = "avg",
                 min_level: int = 2, max_level: int = 7, size_divisibility: int = RES5_STRIDE) -> None:
        super().__init__()
        if fuse_type not in FUSE_TYPES:
            raise ValueError(f"unknown fpn.fuse_type {fuse_type!r}; expected one of {', '.join(FUSE_TYPES)}")
        if not 2 <= min_level <= 5:
            raise ValueError(f"fpn.min_level must be in 2..5 (a ResNet stage), got {min_level}")
        if max_level < 5:
            raise ValueError(f"fpn.max_level must be >= 5, got {max_level}")
        if out_channels <= 0:
            raise ValueError(f"fpn.out_channels must be positive, got {out_channels}")
        if size_divisibility <= 0 or size_divisibility % RES5_STRIDE != 0:
            raise ValueError(
                f"fpn.size_divisibility={size_divisibility} must be a positive multiple of the res5 stride "
                f"{RES5_STRIDE} (detectron2 pads to 32; levels above P5 round up)"
            )
        self.in_features = [f"res{k}" for k in range(min_level, 6)]
        for k, name in zip(range(min_level, 6), self.in_features):
            stride = bottom_up.strides.get(name)
            if stride != 2 ** k:
                raise ValueError(f"bottom_up must provide {name} at stride {2 ** k}, has stride {stride}")

        self.bottom_up = bottom_up
        for k, name in zip(range(min_level, 6), self.in_features):
            lateral = nn.Conv2d(bottom_up.out_channels[name], out_channels, 1)
            output = nn.Conv2d(out_channels, out_channels, 3, padding=1)
            c2_xavier_fill(lateral)
            c2_xavier_fill(output)
            self.add_module(f"fpn_lateral{k}", lateral)
            self.add_module(f"fpn_output{k}", output)
        if max_level > 5:
            self.top_block = LastLevelP6P7(bottom_up.out_channels["res5"], out_channels, max_level)
        else:
            self.top_block = None

        self.fuse_type = fuse_type
        self.levels = list(range(min_level, max_level + 1))
        self.out_features = [f"p{k}" for k in self.levels]
        self.strides = [2 ** k for k in self.levels]
        self.out_channels = out_channels
        self.size_divisibility = size_divisibility

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h, w = x.shape[-2:]
        if h % self.size_divisibility or w % self.size_divisibility:
            raise ValueError(
                f"input of size {h}x{w} is not divisible by size_divisibility={self.size_divisibility}; "
                "pad the images (bottom/right) to a multiple of it first"
            )
        feats = self.bottom_up(x)
        coarse_to_fine = list(range(5, self.levels[0] - 1, -1))
        prev = self.fpn_lateral5(feats["res5"])
        results = [self.fpn_output5(prev)]
        for k in coarse_to_fine[1:]:
            lateral = getattr(self, f"fpn_lateral{k}")(feats[f"res{k}"])
            top_down = F.interpolate(prev, scale_factor=2.0, mode="nearest")
            prev = lateral + top_down
            if self.fuse_type == "avg":
                prev = prev / 2
            results.insert(0, getattr(self, f"fpn_output{k}")(prev))
        if self.top_block is not None:
            results.extend(self.top_block(feats["res5"]))
        return dict(zip(self.out_features, results))


def build_backbone_fpn(backbone_cfg: BackboneConfig, fpn_cfg: FPNConfig) -> BackboneWithFPN:
    """ResNet of ``backbone_cfg`` (weights loaded if given) with the FPN of ``fpn_cfg``."""
    return BackboneWithFPN(
        build_backbone(backbone_cfg),
        out_channels=fpn_cfg.out_channels,
        fuse_type=fpn_cfg.fuse_type,
        min_level=fpn_cfg.min_level,
        max_level=fpn_cfg.max_level,
        size_divisibility=fpn_cfg.size_divisibility,
    )
