"""ResNet backbones: ResNet-18/34/50/101 and a tiny CPU ResNet, returning res2–res5.

The module tree mirrors detectron2's ``ResNet`` so checkpoints map name for name::

    stem.conv1.weight                       7×7/2 conv (no bias), then norm, ReLU, 3×3/2 max-pool
    stem.conv1.norm.{weight,bias,running_mean,running_var}
    res2.0.conv1.weight, res2.0.conv1.norm.*   first conv of block 0 of stage res2
    res2.0.shortcut.weight, res2.0.shortcut.norm.*   1×1 projection where the shape changes
    ... res5.2.conv3.*                      conv1/conv2/conv3 in bottlenecks, conv1/conv2 in basic blocks

Inputs are normalised images ``(N, 3, H, W)`` (normalisation — BGR 0–255 minus the mean for "msra",
RGB standardised for "torchvision" — is done by the caller from ``BackboneConfig.pixel_mean/std``).
Outputs are ``{"res2": (N, C2, ⌈H/4⌉, ⌈W/4⌉), ..., "res5": (N, C5, ⌈H/32⌉, ⌈W/32⌉)}``; strides are in
image pixels.

Styles (only where a stage's stride-2 sits in a bottleneck; basic blocks are the same in both):

* ``"msra"``: detectron2 / MSRA (Caffe2) weights, stride in the first 1×1 conv (``STRIDE_IN_1X1``);
* ``"torchvision"``: torchvision weights ("ResNet v1.5"), stride in the 3×3 conv.

Norms: ``"FrozenBN"`` (fixed affine + statistics, for pretrained weights), ``"BN"``, ``"GN"``
(``gn_groups`` groups), ``"none"`` (convs get a bias instead).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import (
    MSRA_PIXEL_MEAN,
    MSRA_PIXEL_STD,
    TORCHVISION_PIXEL_MEAN,
    TORCHVISION_PIXEL_STD,
    BackboneConfig,
)

__all__ = [
    "NORMS",
    "STYLES",
    "STAGE_NAMES",
    "FrozenBatchNorm2d",
    "ConvNorm",
    "BasicStem",
    "BasicBlock",
    "BottleneckBlock",
    "ResNet",
    "get_norm",
    "freeze_module",
    "check_pixel_config",
    "build_backbone",
]

NORMS = ("FrozenBN", "BN", "GN", "none")
STYLES = ("msra", "torchvision")
STAGE_NAMES = ("res2", "res3", "res4", "res5")
_STAGE_STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
_BLOCKS_PER_STAGE = {0: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
_BASIC_WIDTHS = (64, 128, 256, 512)  # ResNet-18/34 stage output channels
_BOTTLENECK_WIDTHS = (256, 512, 1024, 2048)  # ResNet-50/101 stage output channels (bottleneck = /4)


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters (detectron2's ``FrozenBatchNorm2d``).

    ``y = (x − running_mean) / sqrt(running_var + eps) · weight + bias`` per channel, in train and
    eval mode alike. All four are buffers (no gradients); the initial values are the identity
    (``running_var = 1 − eps``). Input/output ``(N, C, H, W)``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, training=False, eps=self.eps)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        # A BatchNorm2d state dict carries a step counter this module has no use for.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"

    @classmethod
    def convert_frozen_batchnorm(cls, module: nn.Module) -> nn.Module:
        """Replace every ``nn.BatchNorm2d`` in ``module`` by a FrozenBatchNorm2d with its values.

        Returns the new module if ``module`` itself is a BatchNorm2d, else ``module`` converted in place.
        """
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            frozen = cls(module.num_features, eps=module.eps)
            with torch.no_grad():
                if module.affine:
                    frozen.weight.copy_(module.weight)
                    frozen.bias.copy_(module.bias)
                if module.running_mean is not None:
                    frozen.running_mean.copy_(module.running_mean)
                    frozen.running_var.copy_(module.running_var)
            return frozen
        for name, child in module.named_children():
            new_child = cls.convert_frozen_batchnorm(child)
            if new_child is not child:
                module.add_module(name, new_child)
        return module


def get_norm(norm: str, channels: int, gn_groups: int = 32) -> nn.Module | None:
    """The normalisation layer ``norm`` (one of :data:`NORMS`) for ``channels`` channels; None for "none"."""
    if norm == "FrozenBN":
        return FrozenBatchNorm2d(channels)
    if norm == "BN":
        return nn.BatchNorm2d(channels)
    if norm == "GN":
        if gn_groups <= 0 or channels % gn_groups != 0:
            raise ValueError(
                f"GroupNorm with gn_groups={gn_groups} needs channel counts divisible by it, got {channels} "
                f"channels; set backbone.gn_groups to a divisor of every width"
            )
        return nn.GroupNorm(gn_groups, channels)
    if norm == "none":
        return None
    raise ValueError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}")


class ConvNorm(nn.Conv2d):
    """``nn.Conv2d`` followed by an optional norm child named ``norm`` (no activation).

    The conv has a bias only when there is no norm. Input ``(N, C_in, H, W)``, output
    ``(N, C_out, H', W')`` with the usual conv arithmetic.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                 padding: int = 0, norm: str = "FrozenBN", gn_groups: int = 32) -> None:
        norm_layer = get_norm(norm, out_channels, gn_groups)
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         bias=norm_layer is None)
        self.norm = norm_layer
        # detectron2's c2_msra_fill
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        return x if self.norm is None else self.norm(x)


class BasicStem(nn.Module):
    """7×7/2 conv + norm + ReLU + 3×3/2 max-pool (padding 1): ``(N, 3, H, W) -> (N, C, ⌈H/4⌉, ⌈W/4⌉)``."""

    stride = 4

    def __init__(self, in_channels: int = 3, out_channels: int = 64, norm: str = "FrozenBN",
                 gn_groups: int = 32) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.conv1 = ConvNorm(in_channels, out_channels, 7, stride=2, padding=3, norm=norm, gn_groups=gn_groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class BasicBlock(nn.Module):
    """ResNet-18/34 block: 3×3 (stride) → 3×3, plus identity or a 1×1 projection ``shortcut``.

    ``(N, C_in, H, W) -> (N, C_out, ⌈H/stride⌉, ⌈W/stride⌉)``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1, norm: str = "FrozenBN",
                 gn_groups: int = 32) -> None:
        super().__init__()
        if in_channels != out_channels or stride != 1:
            self.shortcut = ConvNorm(in_channels, out_channels, 1, stride=stride, norm=norm, gn_groups=gn_groups)
        else:
            self.shortcut = None
        self.conv1 = ConvNorm(in_channels, out_channels, 3, stride=stride, padding=1, norm=norm, gn_groups=gn_groups)
        self.conv2 = ConvNorm(out_channels, out_channels, 3, padding=1, norm=norm, gn_groups=gn_groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = self.conv2(out)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out + shortcut)


class BottleneckBlock(nn.Module):
    """ResNet-50/101 block: 1×1 → 3×3 → 1×1 (C_out / 4 inner channels), identity or 1×1 ``shortcut``.

    The stride sits in ``conv1`` (1×1) when ``stride_in_1x1`` (MSRA weights), else in ``conv2`` (3×3,
    torchvision). ``(N, C_in, H, W) -> (N, C_out, ⌈H/stride⌉, ⌈W/stride⌉)``.
    """

    def __init__(self, in_channels: int, out_channels: int, bottleneck_channels: int, *, stride: int = 1,
                 stride_in_1x1: bool = True, norm: str = "FrozenBN", gn_groups: int = 32) -> None:
        super().__init__()
        if in_channels != out_channels or stride != 1:
            self.shortcut = ConvNorm(in_channels, out_channels, 1, stride=stride, norm=norm, gn_groups=gn_groups)
        else:
            self.shortcut = None
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = ConvNorm(in_channels, bottleneck_channels, 1, stride=stride_1x1, norm=norm, gn_groups=gn_groups)
        self.conv2 = ConvNorm(bottleneck_channels, bottleneck_channels, 3, stride=stride_3x3, padding=1, norm=norm,
                              gn_groups=gn_groups)
        self.conv3 = ConvNorm(bottleneck_channels, out_channels, 1, norm=norm, gn_groups=gn_groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out + shortcut)


def freeze_module(module: nn.Module) -> nn.Module:
    """Freeze ``module`` as detectron2 does: ``requires_grad=False`` on every parameter and every
    ``nn.BatchNorm2d`` replaced by a :class:`FrozenBatchNorm2d` (so its statistics stop updating too).
    GroupNorm affine parameters are frozen by the first rule; FrozenBN has nothing to freeze.
    Returns the module (a new one only if ``module`` itself is a BatchNorm2d)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return FrozenBatchNorm2d.convert_frozen_batchnorm(module)


class ResNet(nn.Module):
    """ResNet returning ``{"res2", "res3", "res4", "res5"}`` feature maps.

    Args:
        depth: 18, 34 (basic blocks), 50, 101 (bottlenecks), or 0 for the tiny ResNet: one basic
            block per stage with widths ``tiny_channels`` and a stem of ``tiny_channels[0]`` channels.
        style: "msra" (stride in the bottleneck's 1×1) or "torchvision" (stride in the 3×3).
        norm: one of :data:`NORMS`.
        stem_channels: stem width for depth ≥ 18 (standard: 64; ignored by the tiny ResNet).
        tiny_channels: res2..res5 widths of the tiny ResNet.
        gn_groups: GroupNorm groups when ``norm == "GN"``.
        freeze_at: 0 trains everything, 1 freezes the stem, k ≥ 2 the stem and res2..res{k} (≤ 5).

    Attributes:
        out_channels: ``{"res2": C2, ..., "res5": C5}``.
        strides: ``{"res2": 4, "res3": 8, "res4": 16, "res5": 32}`` (image pixels).
        style, depth, norm: as given.

    ``forward(x)``: ``x (N, 3, H, W)`` normalised image → dict of ``(N, C_k, ⌈H/s_k⌉, ⌈W/s_k⌉)``.
    """

    def __init__(self, depth: int = 50, *, style: str = "msra", norm: str = "FrozenBN", stem_channels: int = 64,
                 tiny_channels: tuple[int, int, int, int] = (16, 32, 64, 128), gn_groups: int = 32,
                 freeze_at: int = 0) -> None:
        super().__init__()
        if depth not in _BLOCKS_PER_STAGE:
            raise ValueError(f"unsupported ResNet depth {depth}; expected one of {sorted(_BLOCKS_PER_STAGE)}")
        if style not in STYLES:
            raise ValueError(f"unknown backbone style {style!r}; expected one of {', '.join(STYLES)}")
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}")
        if not 0 <= freeze_at <= 5:
            raise ValueError(f"freeze_at must be in 0..5 (0: nothing, 1: stem, k: stem + res2..res<k>), got {freeze_at}")
        self.depth, self.style, self.norm = depth, style, norm

        if depth == 0:
            if len(tiny_channels) != 4 or min(tiny_channels) <= 0:
                raise ValueError(f"tiny_channels must be 4 positive widths (res2..res5), got {tiny_channels}")
            widths, stem_channels, bottleneck = tuple(tiny_channels), tiny_channels[0], False
        else:
            bottleneck = depth >= 50
            widths = _BOTTLENECK_WIDTHS if bottleneck else _BASIC_WIDTHS

        self.stem = BasicStem(3, stem_channels, norm, gn_groups)
        in_channels = stem_channels
        for i, (name, num_blocks, width) in enumerate(zip(STAGE_NAMES, _BLOCKS_PER_STAGE[depth], widths)):
            blocks = []
            for b in range(num_blocks):
                stride = 2 if (b == 0 and i > 0) else 1
                if bottleneck:
                    block = BottleneckBlock(in_channels, width, width // 4, stride=stride,
                                            stride_in_1x1=style == "msra", norm=norm, gn_groups=gn_groups)
                else:
                    block = BasicBlock(in_channels, width, stride=stride, norm=norm, gn_groups=gn_groups)
                blocks.append(block)
                in_channels = width
            self.add_module(name, nn.Sequential(*blocks))

        self.out_channels = dict(zip(STAGE_NAMES, widths))
        self.strides = dict(_STAGE_STRIDES)
        self.freeze(freeze_at)

    def freeze(self, freeze_at: int) -> ResNet:
        """Freeze the stem (``freeze_at ≥ 1``) and stages res2..res{freeze_at} (see :func:`freeze_module`)."""
        if freeze_at >= 1:
            freeze_module(self.stem)
        for k, name in enumerate(STAGE_NAMES, start=2):
            if freeze_at >= k:
                freeze_module(getattr(self, name))
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"ResNet expects images of shape (N, 3, H, W), got {tuple(x.shape)}")
        x = self.stem(x)
        out = {}
        for name in STAGE_NAMES:
            x = getattr(self, name)(x)
            out[name] = x
        return out


def check_pixel_config(cfg: BackboneConfig) -> list[str]:
    """Inconsistencies between ``cfg.style`` and the input convention (pixel mean/std, channel order)
    that pretrained weights of that style were trained with; empty if consistent."""
    expected = {
        "msra": (MSRA_PIXEL_MEAN, MSRA_PIXEL_STD, "BGR"),
        "torchvision": (TORCHVISION_PIXEL_MEAN, TORCHVISION_PIXEL_STD, "RGB"),
    }[cfg.style]
    mean, std, fmt = expected
    problems = []
    if any(abs(a - b) > 1e-3 for a, b in zip(cfg.pixel_mean, mean)) or len(cfg.pixel_mean) != 3:
        problems.append(f"backbone.pixel_mean is {tuple(cfg.pixel_mean)}, {cfg.style} weights expect {mean}")
    if any(abs(a - b) > 1e-3 for a, b in zip(cfg.pixel_std, std)) or len(cfg.pixel_std) != 3:
        problems.append(f"backbone.pixel_std is {tuple(cfg.pixel_std)}, {cfg.style} weights expect {std}")
    if cfg.input_format != fmt:
        problems.append(f"backbone.input_format is {cfg.input_format!r}, {cfg.style} weights expect {fmt!r}")
    return problems


def build_backbone(cfg: BackboneConfig) -> ResNet:
    """The ResNet of ``cfg``; with ``cfg.weights``, the weights are loaded (strictly: every backbone
    tensor must come from the file and every ResNet tensor of the file must fit, see
    :func:`tensormask.modeling.weights.load_backbone_weights`).

    Raises ValueError when pretrained weights are requested but the pixel mean/std/format do not
    match ``cfg.style`` (the weights would silently see wrongly normalised images).
    """
    model = ResNet(cfg.depth, style=cfg.style, norm=cfg.norm, stem_channels=cfg.stem_channels,
                   tiny_channels=tuple(cfg.tiny_channels), gn_groups=cfg.gn_groups, freeze_at=cfg.freeze_at)
    if cfg.weights:
        problems = check_pixel_config(cfg)
        if problems:
            raise ValueError(
                f"backbone.weights={cfg.weights!r} are {cfg.style}-style weights, but the input settings do "
                "not match: " + "; ".join(problems)
            )
        from .weights import load_backbone_weights  # file I/O lives in its own module

        load_backbone_weights(model, cfg.weights, cfg.style, strict=True)
    return model
