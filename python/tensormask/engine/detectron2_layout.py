"""The architecture a detectron2 TensorMask checkpoint implies (:func:`infer_config`) and the
accounting of its entries (:data:`DROPPED`): what :mod:`tensormask.engine.convert` converts with.
The rules (what is read from the tensors, what is set to detectron2's values) are listed in that
module's docstring."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..config import MSRA_PIXEL_MEAN, MSRA_PIXEL_STD, BackboneConfig, FPNConfig, HeadConfig, ModelConfig

__all__ = ["CONVERTIBLE_MASK_HEADS", "DROPPED", "ConversionError", "as_tensor", "drop_reason", "infer_config",
           "listing"]

# Mask heads a detectron2 TensorMask checkpoint can have: BIPYRAMID_ON (+ ALIGNED_ON), or neither
# with ALIGNED_ON True / False.
CONVERTIBLE_MASK_HEADS = ("bipyramid", "simple_aligned", "simple_natural")

# Checkpoint entries that are knowingly not converted: (pattern, reason).
DROPPED: tuple[tuple[str, str], ...] = (
    (r"^pixel_(mean|std)$", "input normalisation; checked against the MSRA values, kept in the config"),
    (r"^anchor_generator\.", "anchor buffers (older detectron2); window sizes checked against them"),
    (r"(^|\.)num_batches_tracked$", "BatchNorm step counter; FrozenBN keeps none"),
)
_DROPPED = tuple((re.compile(p), reason) for p, reason in DROPPED)

_BOTTOM_UP = "backbone.bottom_up."
_RES_BLOCK = re.compile(r"^backbone\.bottom_up\.res([2-5])\.(\d+)\.")
_LATERAL = re.compile(r"^backbone\.fpn_lateral(\d+)\.weight$")
_TOP = re.compile(r"^backbone\.top_block\.p(\d+)\.weight$")
_SUBNET = re.compile(r"^head\.(cls|bbox|mask)_subnet\.(\d+)\.weight$")
_MASK_PRED = re.compile(r"^head\.mask_pred_(\d+)\.weight$")
_DEPTH_FROM_RES4 = {6: 50, 23: 101}


class ConversionError(ValueError):
    """The checkpoint cannot be converted (unknown layout, missing/leftover keys, wrong shapes...)."""


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def listing(items: Sequence[str], limit: int = 20) -> str:
    """``a, b, c, ... and N more``: the keys an error message names (at most ``limit``)."""
    shown = ", ".join(items[:limit])
    more = f", ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"{shown}{more}"


def _shape(value: Any) -> tuple[int, ...] | None:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return tuple(int(s) for s in value.shape)
    return None


def as_tensor(value: Any) -> torch.Tensor | None:
    """A CPU tensor owning its memory, or None for anything that is not a numeric array."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()  # own storage: safetensors refuses shared tensors
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return torch.from_numpy(np.array(value, copy=True))
    return None


def drop_reason(key: str) -> str | None:
    """Why the checkpoint entry ``key`` is knowingly not converted (:data:`DROPPED`), else None."""
    for pattern, reason in _DROPPED:
        if pattern.search(key):
            return reason
    return None


def _require(entries: Mapping[str, Any], key: str, what: str) -> tuple[int, ...]:
    shape = _shape(entries.get(key))
    if shape is None:
        present = "is not an array" if key in entries else "is missing"
        raise ConversionError(f"cannot infer {what}: {key} {present} (is this a detectron2 TensorMask checkpoint?)")
    return shape


def _mask_sizes_from_anchors(value: Any, stride: int) -> tuple[int, ...] | None:
    """Window sizes in the order of detectron2's level-0 cell anchors ``(A, 4)``: side // stride."""
    t = as_tensor(value)
    if t is None or t.dim() != 2 or t.shape[1] != 4:
        return None
    sides = (t[:, 2] - t[:, 0]).tolist()
    return tuple(int(round(s)) // stride for s in sides)


# --------------------------------------------------------------------------------------------------
# architecture inference
# --------------------------------------------------------------------------------------------------


def infer_config(entries: Mapping[str, Any], *, mask_head: str | None = None) -> tuple[ModelConfig, list[str]]:
    """Infer our :class:`ModelConfig` from a detectron2 TensorMask state dict.

    Args:
        entries: checkpoint name → array (numpy or torch), detectron2 names.
        mask_head: ``"simple_aligned"`` or ``"simple_natural"`` for a checkpoint without
            ``head.mask_fuse`` (required then); ``None`` or ``"bipyramid"`` for one with it.

    Returns:
        ``(cfg, notes)``; ``notes`` says where each architecture choice came from.

    Raises:
        ConversionError: the layout is not a detectron2 TensorMask (naming the key looked for), the
            ResNet is not R50/R101 with batch-norm statistics, the window sizes or class count are
            inconsistent, or ``mask_head`` is missing / contradicts the weights.
    """
    notes: list[str] = []
    if not any(k.startswith(_BOTTOM_UP) for k in entries) or not any(k.startswith("head.") for k in entries):
        examples = ", ".join(list(entries)[:5]) or "no entries"
        raise ConversionError(
            "not a detectron2 TensorMask checkpoint: expected backbone.bottom_up.* and head.* names, "
            f"found e.g. {examples}"
        )

    # ---- ResNet
    stem = _require(entries, _BOTTOM_UP + "stem.conv1.weight", "the stem width")
    blocks: dict[int, int] = {}
    for key in entries:
        if m := _RES_BLOCK.match(key):
            stage, idx = int(m[1]), int(m[2])
            blocks[stage] = max(blocks.get(stage, 0), idx + 1)
    if _BOTTOM_UP + "res2.0.conv3.weight" not in entries:
        raise ConversionError(
            "backbone.bottom_up.res2.0.conv3.weight is missing: only bottleneck ResNets (R50, R101) are "
            "supported (detectron2's TensorMask models are R50-FPN / R101-FPN)"
        )
    depth = _DEPTH_FROM_RES4.get(blocks.get(4, 0))
    if depth is None:
        raise ConversionError(
            f"cannot infer the ResNet depth: res4 has {blocks.get(4, 0)} blocks "
            f"(expected {', '.join(f'{n} for R{d}' for n, d in _DEPTH_FROM_RES4.items())})"
        )
    notes.append(f"ResNet-{depth}: res4 has {blocks[4]} bottleneck blocks")
    if _BOTTOM_UP + "stem.conv1.norm.running_var" not in entries:
        raise ConversionError(
            "backbone.bottom_up.stem.conv1.norm.running_var is missing: only batch-norm ResNets (FrozenBN/BN/"
            "SyncBN, converted to FrozenBN) are supported, not GN or norm-free backbones"
        )
    notes.append("norm FrozenBN: the ResNet norms carry running statistics")
    for name, expected in (("pixel_mean", MSRA_PIXEL_MEAN), ("pixel_std", MSRA_PIXEL_STD)):
        if name in entries:
            t = as_tensor(entries[name])
            values = None if t is None else tuple(float(x) for x in t.flatten().tolist())
            if values is None or len(values) != 3 or any(abs(a - b) > 1e-3 for a, b in zip(values, expected)):
                raise ConversionError(
                    f"the checkpoint's {name} is {values}, not the MSRA value {expected}: it was trained "
                    "with another input convention (e.g. torchvision-style RGB weights), which this converter "
                    "does not support"
                )
    notes.append("style msra, BGR input, MSRA pixel mean/std: detectron2 TensorMask convention"
                 + (" (pixel_mean/pixel_std of the checkpoint agree)" if "pixel_mean" in entries else ""))
    backbone = BackboneConfig(
        depth=depth, style="msra", norm="FrozenBN", freeze_at=2, stem_channels=stem[0], weights=None,
        pixel_mean=MSRA_PIXEL_MEAN, pixel_std=MSRA_PIXEL_STD, input_format="BGR",
    )

    # ---- FPN
    laterals = sorted(int(m[1]) for k in entries if (m := _LATERAL.match(k)))
    if not laterals or laterals != list(range(laterals[0], 6)):
        raise ConversionError(
            f"cannot infer the FPN levels: backbone.fpn_lateral<k>.weight found for k in {laterals or 'none'}, "
            "expected a contiguous range ending at 5"
        )
    tops = sorted(int(m[1]) for k in entries if (m := _TOP.match(k)))
    if tops and tops != list(range(6, tops[-1] + 1)):
        raise ConversionError(f"cannot infer the FPN levels: backbone.top_block.p<k> found for k in {tops}")
    max_level = tops[-1] if tops else 5
    fpn_channels = _require(entries, "backbone.fpn_lateral5.weight", "the FPN channels")[0]
    # detectron2 pads to the backbone's size_divisibility, the res5 stride 32 (not 2^max_level).
    fpn = FPNConfig(out_channels=fpn_channels, fuse_type="avg", min_level=laterals[0], max_level=max_level,
                    size_divisibility=32)
    notes.append(f"FPN P{laterals[0]}-P{max_level}, {fpn_channels} channels, inputs padded to 32; average fusion "
                 "assumed (Base-TensorMask.yaml, not visible in the weights)")

    # ---- head
    subnet_convs: dict[str, int] = {}
    for key in entries:
        if m := _SUBNET.match(key):
            subnet_convs[m[1]] = max(subnet_convs.get(m[1], 0), int(m[2]) // 2 + 1)
    num_convs = subnet_convs.get("cls", 0)
    channels = {}
    for task in ("cls", "bbox", "mask"):
        if num_convs > 0 and f"head.{task}_subnet.0.weight" in entries:
            channels[task] = _require(entries, f"head.{task}_subnet.0.weight", f"the {task} channels")[0]
    box_head = any(k.startswith("head.bbox_pred.") for k in entries)

    sizes = sorted(int(m[1]) for k in entries if (m := _MASK_PRED.match(k)))
    if not sizes:
        raise ConversionError("no head.mask_pred_XX.weight: a RetinaNet or MASK_ON=False checkpoint cannot be "
                              "converted to TensorMask")
    for v in sizes:
        rows = _require(entries, f"head.mask_pred_{v:02d}.weight", f"window size {v}")[0]
        if rows != v * v:
            raise ConversionError(
                f"head.mask_pred_{v:02d}.weight has {rows} output channels, expected {v}² = {v * v} "
                f"(one per mask pixel of a {v}x{v} window)"
            )
    window_sizes = tuple(sizes)
    anchors_key = "anchor_generator.cell_anchors.0"
    if anchors_key in entries:
        stride0 = 2 ** laterals[0]
        from_anchors = _mask_sizes_from_anchors(entries[anchors_key], stride0)
        if from_anchors is None or sorted(from_anchors) != sizes:
            raise ConversionError(
                f"{anchors_key} gives window sizes {from_anchors} (anchor side // stride {stride0}), but the "
                f"checkpoint has head.mask_pred_XX for {window_sizes}"
            )
        window_sizes = from_anchors
        notes.append(f"window sizes {window_sizes}: head.mask_pred_XX, in the order of {anchors_key}")
    else:
        notes.append(f"window sizes {window_sizes}: head.mask_pred_XX (ascending, as detectron2's anchor sizes)")

    num_windows = len(window_sizes)
    cls_rows = _require(entries, "head.cls_score.weight", "the number of classes")[0]
    if cls_rows % num_windows != 0:
        raise ConversionError(
            f"head.cls_score.weight has {cls_rows} rows, not a multiple of the {num_windows} window sizes "
            f"{window_sizes}"
        )
    num_classes = cls_rows // num_windows
    notes.append(f"K={num_classes} classes: head.cls_score.weight has {cls_rows} = {num_windows}·{num_classes} rows")

    has_fuse = any(k.startswith("head.mask_fuse.") for k in entries)
    if has_fuse:
        if mask_head not in (None, "bipyramid"):
            raise ConversionError(
                f"mask_head={mask_head!r} contradicts the checkpoint: it has head.mask_fuse.*, the fusing conv "
                "of the tensor bipyramid (BIPYRAMID_ON); leave mask_head unset"
            )
        mask_head = "bipyramid"
        notes.append("mask head bipyramid: head.mask_fuse.* present")
    else:
        if mask_head is None:
            raise ConversionError(
                "the checkpoint has no head.mask_fuse.* (trained with BIPYRAMID_ON: False); whether it used "
                "ALIGNED_ON cannot be read from the weights: give mask_head='simple_aligned' (ALIGNED_ON: True) "
                "or 'simple_natural' (ALIGNED_ON: False), on the command line --mask-head"
            )
        if mask_head not in ("simple_aligned", "simple_natural"):
            raise ConversionError(
                f"mask_head={mask_head!r} does not fit a checkpoint without head.mask_fuse: use 'simple_aligned' "
                "(ALIGNED_ON: True) or 'simple_natural' (ALIGNED_ON: False)"
            )
        notes.append(f"mask head {mask_head}: given (no head.mask_fuse.* in the checkpoint)")

    defaults = HeadConfig()
    head = HeadConfig(
        num_classes=num_classes,
        num_convs=num_convs,
        cls_channels=channels.get("cls", defaults.cls_channels),
        bbox_channels=channels.get("bbox", defaults.bbox_channels),
        mask_channels=channels.get("mask", defaults.mask_channels),
        box_head=box_head,
        mask_head=mask_head,
        window_sizes=window_sizes,
    )
    notes.append(
        f"head: {num_convs} convs per subnet, channels cls {head.cls_channels} / bbox {head.bbox_channels} / "
        f"mask {head.mask_channels}; box head {'yes (head.bbox_pred.* present)' if box_head else 'no'}"
    )
    return ModelConfig(backbone=backbone, fpn=fpn, head=head), notes
