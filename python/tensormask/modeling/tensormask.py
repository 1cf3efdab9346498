"""The TensorMask model (paper §4): ResNet-FPN backbone, class/box/mask heads (any of Fig. 6 or the
tensor bipyramid), dense label assignment and losses for training, and post-processing for inference.

Parameter names follow detectron2's ``projects/TensorMask`` (``backbone.bottom_up.*``,
``backbone.fpn_*``, ``backbone.top_block.*``, ``head.*``), so its checkpoints convert 1:1
(:mod:`tensormask.engine.convert`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.profiler import record_function

from ..config import ModelConfig
from .box_coder import Box2BoxTransform
from .fpn import build_backbone_fpn
from .heads import HeadOutputs, TensorMaskHead
from .losses import tensormask_losses
from .targets import InstanceTargets, build_targets


class TensorMask(nn.Module):
    """Dense sliding-window instance segmentation.

    ``forward(images, targets)`` returns the loss dict in training mode; ``forward(images)`` in eval
    mode returns one detection dict per image (see :mod:`tensormask.modeling.postprocess`).

    Args:
        cfg: the full model config (backbone, FPN, heads, assignment, losses, inference).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = build_backbone_fpn(cfg.backbone, cfg.fpn)
        self.strides = list(self.backbone.strides)
        self.head = TensorMaskHead(cfg.head, self.backbone.out_channels, len(self.strides))
        self.box_coder = Box2BoxTransform(cfg.loss.bbox_reg_weights)
        self.register_buffer("pixel_mean", torch.tensor(cfg.backbone.pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.backbone.pixel_std).view(3, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess(self, images: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Normalise and batch images.

        Args:
            images: N uint8 (or float 0–255) RGB tensors ``(3, H_i, W_i)``.

        Returns:
            ``(N, 3, H, W)`` float batch in the backbone's channel order and normalisation, zero-padded
            at the bottom/right to a multiple of ``fpn.size_divisibility``; and the N sizes (H_i, W_i).
        """
        if len(images) == 0:
            raise ValueError("TensorMask: got an empty list of images")
        sizes = []
        for i, im in enumerate(images):
            if im.dim() != 3 or im.shape[0] != 3:
                raise ValueError(f"TensorMask: image {i} must be (3, H, W) RGB, got shape {tuple(im.shape)}")
            sizes.append((int(im.shape[1]), int(im.shape[2])))
        div = self.backbone.size_divisibility
        height = -(-max(h for h, _ in sizes) // div) * div
        width = -(-max(w for _, w in sizes) // div) * div
        batch = self.pixel_mean.new_zeros((len(images), 3, height, width))
        for i, im in enumerate(images):
            x = im.to(self.device, torch.float32)
            if self.cfg.backbone.input_format == "BGR":
                x = x.flip(0)
            batch[i, :, : x.shape[1], : x.shape[2]] = (x - self.pixel_mean) / self.pixel_std
        return batch, sizes

    def run_heads(self, batch: torch.Tensor, dense_masks: bool = True) -> HeadOutputs:
        """Backbone + FPN + heads on a preprocessed batch ``(N, 3, H, W)``; with ``dense_masks=False``
        the mask logits are left to sparse decoding (inference). Profiler ranges ``tensormask.backbone``
        (backbone + FPN) and ``tensormask.heads``."""
        with record_function("tensormask.backbone"):
            features = list(self.backbone(batch).values())
        with record_function("tensormask.heads"):
            return self.head(features, dense_masks=dense_masks)

    def forward(
        self,
        images: Sequence[torch.Tensor],
        targets: Sequence[InstanceTargets] | None = None,
        output_sizes: Sequence[tuple[int, int]] | None = None,
    ):
        """Training: ``forward(images, targets)`` → ``{"loss_cls", "loss_box", "loss_mask"}``.
        Inference (eval mode): ``forward(images, output_sizes=None)`` → per image ``{"boxes",
        "scores", "labels", "masks"}`` at ``output_sizes`` (default: the input sizes); with
        ``cfg.inference.channels_last`` the network runs on an NHWC batch."""
        batch, sizes = self.preprocess(images)
        if self.training:
            if targets is None:
                raise ValueError("TensorMask: training mode needs targets (call model.eval() for inference)")
            return self.losses(self.run_heads(batch, dense_masks=False), targets)
        if self.cfg.inference.channels_last:  # the convolutions then run NHWC, mask features included
            batch = batch.contiguous(memory_format=torch.channels_last)
        from .postprocess import postprocess  # inference only

        return postprocess(self, self.run_heads(batch, dense_masks=False), sizes, output_sizes)

    def losses(self, outputs: HeadOutputs, targets: Sequence[InstanceTargets]) -> dict[str, torch.Tensor]:
        """Label assignment (§4.2) on the head's window grid, then the weighted losses. With sparse
        head outputs (``mask_logits`` None) the mask logits are computed at the positive windows only."""
        level_sizes = [tuple(x.shape[-2:]) for x in outputs.cls_logits]
        window_targets = build_targets(
            [t.to(self.device) for t in targets],
            level_sizes,
            self.strides,
            self.head.window_sizes,
            self.head.window_geometry(self.strides),
            self.head.num_classes,
            self.cfg.assign,
            self.box_coder if self.cfg.head.box_head else None,
        )
        if outputs.mask_logits is not None:
            return tensormask_losses(outputs, window_targets, self.cfg.loss)
        feats = outputs.mask_features

        def window_mask_logits(k: int, a: int, windows: torch.Tensor) -> torch.Tensor:
            return self.head.window_mask_logits(feats, k, a, windows)

        return tensormask_losses(outputs, window_targets, self.cfg.loss, window_mask_logits=window_mask_logits)

