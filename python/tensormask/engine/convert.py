"""Convert detectron2 TensorMask checkpoints (``projects/TensorMask``) to TensorMask safetensors files.

Command line::

    tensormask convert-detectron2 model_final.pkl tensormask_R_50_FPN_6x.safetensors
    tensormask convert-detectron2 model_final.pth out.safetensors --mask-head simple_aligned

Python::

    report = convert_detectron2("model_final.pkl", "model.safetensors")
    model = load_model("model.safetensors")          # eval mode, strict load, config from the file

Inputs: a model-zoo ``.pkl`` (a pickle ``{"model": {name: numpy array}, "__author__": ...}``, read with
the restricted unpickler of :mod:`tensormask.modeling.weights` — no code in it is ever run) or a
training output ``.pth`` (``{"model": {name: tensor}, "optimizer": ..., ...}``, read with
``torch.load(weights_only=True)``).

Our parameter names equal detectron2's, so the mapping is the identity; the work is in inferring the
architecture from the tensors and in accounting for every entry:

* inferred from the tensors: ResNet depth (number of res4 blocks: 6 → 50, 23 → 101; bottleneck
  blocks only), stem width, FPN levels (``fpn_lateral<k>``, ``top_block.p<k>``) and channels, the
  number of head convs and the cls/bbox/mask channels, the window sizes (names ``head.mask_pred_XX``,
  each with XX² output channels; order: ascending, as detectron2's anchor sizes, or the order of
  ``anchor_generator.cell_anchors.0`` when the checkpoint has it), A = number of window sizes,
  K = rows of ``head.cls_score.weight`` / A, the box head (``head.bbox_pred.*`` present) and the
  tensor bipyramid (``head.mask_fuse.*`` present);
* not in the weights, set to detectron2's TensorMask values: MSRA-style ResNet (BGR 0–255 input,
  pixel mean (103.53, 116.28, 123.675), std 1, stride in the 1×1 conv), FrozenBN, ``freeze_at`` 2,
  FPN average fusion (``FPN.FUSE_TYPE: "avg"`` of Base-TensorMask.yaml), and the loss/assignment/
  inference defaults of :class:`~tensormask.config.ModelConfig`. ``pixel_mean``/``pixel_std`` entries
  of the checkpoint are checked against the MSRA values (a mismatch is an error: the checkpoint was
  trained with another input convention);
* a checkpoint without ``head.mask_fuse`` was trained with ``BIPYRAMID_ON: False``; whether it used
  ``ALIGNED_ON`` (simple_aligned) or not (simple_natural) leaves no trace in the weights, so
  ``mask_head`` must then be given.

Every tensor of ``TensorMask(cfg)`` must come from the checkpoint and every checkpoint entry must be
used or be in :data:`DROPPED` (``pixel_mean``, ``pixel_std``, ``anchor_generator.*``,
``*.num_batches_tracked``); anything else fails the conversion with the keys listed.

Output: a safetensors file of the model's state dict (float32) with metadata ``format="tensormask"``,
``config`` (JSON of :func:`tensormask.config.to_dict`), ``source="detectron2"``, ``source_file``;
written to a temporary file in the destination directory and renamed over the destination.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import secrets
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..config import (
    MSRA_PIXEL_MEAN,
    MSRA_PIXEL_STD,
    BackboneConfig,
    FPNConfig,
    HeadConfig,
    ModelConfig,
    from_dict,
    to_dict,
)

__all__ = [
    "CONVERTIBLE_MASK_HEADS",
    "DROPPED",
    "ConversionError",
    "ConversionReport",
    "infer_config",
    "convert_state_dict",
    "convert_detectron2",
    "read_metadata",
    "load_model",
    "main",
]

FORMAT = "tensormask"

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


def _listing(items: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(items[:limit])
    more = f", ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"{shown}{more}"


def _shape(value: Any) -> tuple[int, ...] | None:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return tuple(int(s) for s in value.shape)
    return None


def _as_tensor(value: Any) -> torch.Tensor | None:
    """A CPU tensor owning its memory, or None for anything that is not a numeric array."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()  # own storage: safetensors refuses shared tensors
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return torch.from_numpy(np.array(value, copy=True))
    return None


def _drop_reason(key: str) -> str | None:
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
    t = _as_tensor(value)
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
            t = _as_tensor(entries[name])
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


# --------------------------------------------------------------------------------------------------
# conversion
# --------------------------------------------------------------------------------------------------


def convert_state_dict(
    entries: Mapping[str, Any], *, mask_head: str | None = None
) -> tuple[ModelConfig, dict[str, torch.Tensor], list[tuple[str, str]], list[str]]:
    """Convert an in-memory detectron2 TensorMask state dict.

    Returns:
        ``(cfg, state, dropped, notes)``: the inferred config; our state dict (float32 CPU tensors,
        exactly the keys of ``TensorMask(cfg).state_dict()``); the dropped checkpoint entries as
        ``(key, reason)``; the inference notes of :func:`infer_config`.

    Raises:
        ConversionError: see :func:`infer_config`; and, listing every offending key: model tensors
            missing in the checkpoint, checkpoint entries neither used nor in :data:`DROPPED`,
            shape mismatches (key, checkpoint shape, model shape), non-numeric or non-float entries.
    """
    from ..modeling.tensormask import TensorMask

    cfg, notes = infer_config(entries, mask_head=mask_head)
    model = TensorMask(cfg)
    reference = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}

    state: dict[str, torch.Tensor] = {}
    missing, mismatched, invalid = [], [], []
    for key, (shape, dtype) in reference.items():
        if key not in entries:
            missing.append(key)
            continue
        tensor = _as_tensor(entries[key])
        if tensor is None or not tensor.is_floating_point():
            kind = type(entries[key]).__name__ if tensor is None else str(tensor.dtype)
            invalid.append(f"{key} ({kind})")
            continue
        if tuple(tensor.shape) != shape:
            mismatched.append(f"{key}: checkpoint {tuple(tensor.shape)} vs model {shape}")
            continue
        state[key] = tensor.to(dtype).contiguous()

    dropped: list[tuple[str, str]] = []
    leftover: list[str] = []
    for key in entries:
        if key in reference:
            continue
        reason = _drop_reason(key)
        if reason is None:
            leftover.append(key)
        else:
            dropped.append((key, reason))

    problems = []
    if missing:
        problems.append(f"{len(missing)} model tensors missing in the checkpoint: {_listing(missing)}")
    if leftover:
        problems.append(f"{len(leftover)} checkpoint entries left over (not used by the model): {_listing(leftover)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {_listing(mismatched)}")
    if invalid:
        problems.append(f"{len(invalid)} entries are not float arrays: {_listing(invalid)}")
    if problems:
        summary = (f"ResNet-{cfg.backbone.depth}, K={cfg.head.num_classes}, window sizes {cfg.head.window_sizes}, "
                   f"mask head {cfg.head.mask_head}")
        raise ConversionError(f"checkpoint does not match the inferred model ({summary}): " + "; ".join(problems))
    model.load_state_dict(state, strict=True)  # the same keys and shapes: cannot fail, but proves it
    return cfg, state, dropped, notes


@dataclass
class ConversionReport:
    """What :func:`convert_detectron2` did.

    Attributes:
        src, dst: the files.
        source_format: "pkl" or "pth"; author: the ``__author__`` of a ``.pkl`` (or None).
        config: the inferred model config (also stored in the output's metadata).
        converted: our keys written to ``dst`` (every tensor of ``TensorMask(config).state_dict()``).
        num_values: total number of values written.
        dropped: checkpoint entries knowingly not converted, ``(key, reason)``.
        notes: how each architecture choice was made.
    """

    src: str
    dst: str
    source_format: str
    author: str | None
    config: ModelConfig
    converted: list[str] = field(default_factory=list)
    num_values: int = 0
    dropped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line describing the converted model."""
        b, f, h = self.config.backbone, self.config.fpn, self.config.head
        return (
            f"R{b.depth}-FPN ({b.style}, {b.norm}, {b.input_format} input), P{f.min_level}-P{f.max_level} "
            f"{f.out_channels}ch {f.fuse_type} fusion; head K={h.num_classes}, {h.num_convs} convs, "
            f"cls/bbox/mask {h.cls_channels}/{h.bbox_channels}/{h.mask_channels} ch, window sizes "
            f"{tuple(h.window_sizes)}, mask head {h.mask_head}, box head {'yes' if h.box_head else 'no'}"
        )

    def __str__(self) -> str:
        author = f", __author__ {self.author!r}" if self.author else ""
        lines = [
            f"converted detectron2 checkpoint {self.src} ({self.source_format}{author})",
            f"  -> {self.dst}",
            f"  tensors: {len(self.converted)} written ({self.num_values / 1e6:.2f}M values), "
            f"{len(self.dropped)} dropped, 0 left over",
        ]
        for key, reason in self.dropped:
            lines.append(f"  dropped {key}: {reason}")
        lines.append(f"  model: {self.summary()}")
        lines.extend(f"  inferred: {n}" for n in self.notes)
        return "\n".join(lines)


def _import_safetensors():
    try:
        import safetensors.torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("safetensors is required to write/read converted models: pip install safetensors") from e
    return safetensors


def _write_atomic(tensors: dict[str, torch.Tensor], dst: str, metadata: dict[str, str]) -> None:
    safetensors = _import_safetensors()
    directory = os.path.dirname(dst) or "."
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"output directory {directory!r} does not exist")
    tmp = os.path.join(directory, f".{os.path.basename(dst)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        safetensors.torch.save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def convert_detectron2(src_path: str | os.PathLike, dst_path: str | os.PathLike, *,
                       mask_head: str | None = None) -> ConversionReport:
    """Convert a detectron2 TensorMask checkpoint to a TensorMask safetensors file.

    Args:
        src_path: detectron2 ``.pkl`` (model zoo) or ``.pth`` (training output) checkpoint.
        dst_path: output file (conventionally ``.safetensors``); replaced atomically if it exists.
        mask_head: required for checkpoints without the tensor bipyramid (see :func:`infer_config`).

    Returns:
        a :class:`ConversionReport`.

    Raises:
        FileNotFoundError: ``src_path`` or the directory of ``dst_path`` does not exist.
        ConversionError (a ValueError): see :func:`convert_state_dict`; also ``src == dst``.
        WeightFileError (a ValueError): unreadable file or unsupported suffix.
        ForbiddenGlobalError (a pickle.UnpicklingError): a ``.pkl`` referencing code (refused unread).
    """
    from ..modeling.weights import read_weight_file

    src = os.fspath(src_path)
    dst = os.fspath(dst_path)
    if os.path.exists(dst) and os.path.exists(src) and os.path.samefile(src, dst):
        raise ConversionError(f"source and destination are the same file {src!r}")
    entries, meta = read_weight_file(src)
    try:
        cfg, state, dropped, notes = convert_state_dict(entries, mask_head=mask_head)
    except ConversionError as e:
        raise ConversionError(f"{src}: {e}") from None
    metadata = {
        "format": FORMAT,
        "config": json.dumps(to_dict(cfg)),
        "source": "detectron2",
        "source_file": os.path.basename(src),
    }
    _write_atomic(state, dst, metadata)
    return ConversionReport(
        src=src, dst=dst, source_format=meta["kind"], author=meta.get("author"), config=cfg,
        converted=list(state), num_values=sum(t.numel() for t in state.values()), dropped=dropped, notes=notes,
    )


# --------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------


def read_metadata(path: str | os.PathLike) -> tuple[dict[str, str], ModelConfig]:
    """The metadata and the model config of a TensorMask safetensors file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a safetensors file, or one without TensorMask metadata, or a config that does
            not fit this version of :class:`ModelConfig` (the unknown key is named).
    """
    safetensors = _import_safetensors()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file {path!r} does not exist")
    try:
        with safetensors.safe_open(path, framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error type for corrupt headers
        raise ValueError(f"{path!r} is not a safetensors file ({type(e).__name__}: {e})") from None
    if metadata.get("format") != FORMAT or "config" not in metadata:
        raise ValueError(
            f"{path!r} is a safetensors file but not a TensorMask model (metadata format="
            f"{metadata.get('format')!r}, config {'present' if 'config' in metadata else 'absent'}); "
            "convert detectron2 checkpoints with `tensormask convert-detectron2`"
        )
    try:
        cfg = from_dict(json.loads(metadata["config"]))
    except (ValueError, KeyError, TypeError, RecursionError) as e:  # JSONDecodeError is a ValueError
        msg = "nested too deeply" if isinstance(e, RecursionError) else e.args[0] if isinstance(e, KeyError) else str(e)
        raise ValueError(f"{path!r}: the stored model config is unusable: {msg}") from None
    return metadata, cfg


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu"):
    """Build the :class:`~tensormask.modeling.tensormask.TensorMask` stored in a safetensors file
    written by :func:`convert_detectron2` (config from its metadata, every tensor loaded strictly).

    Returns the model on ``map_location``, in eval mode. Raises FileNotFoundError / ValueError (see
    :func:`read_metadata`; also a state that does not fit the stored config).
    """
    from ..modeling.tensormask import TensorMask

    safetensors = _import_safetensors()
    _, cfg = read_metadata(path)
    # The weights come from this file; never read a backbone file named in the stored config.
    cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, weights=None))
    model = TensorMask(cfg)
    state = safetensors.torch.load_file(os.fspath(path), device="cpu")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{os.fspath(path)!r}: tensors do not fit the stored config: {e}") from None
    return model.to(torch.device(map_location)).eval()


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``tensormask convert-detectron2 SRC DST [--mask-head HEAD] [--debug]``."""
    parser = argparse.ArgumentParser(
        prog="tensormask convert-detectron2",
        description="Convert a detectron2 TensorMask checkpoint (.pkl model zoo file or .pth training output) "
                    "to a TensorMask safetensors file; the architecture is inferred from the tensors.",
    )
    parser.add_argument("src", help="detectron2 checkpoint (.pkl or .pth)")
    parser.add_argument("dst", help="output file (.safetensors)")
    parser.add_argument("--mask-head", choices=CONVERTIBLE_MASK_HEADS, default=None,
                        help="mask head of a checkpoint without the tensor bipyramid (no head.mask_fuse): "
                             "simple_aligned (ALIGNED_ON: True) or simple_natural (ALIGNED_ON: False)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    from ..cli_utils import one_line_errors

    args = one_line_errors(parser).parse_args(argv)
    try:
        report = convert_detectron2(args.src, args.dst, mask_head=args.mask_head)
    except Exception as e:  # noqa: BLE001 - the CLI reports any failure in one line
        if args.debug:
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        msg = " ".join(msg.split())
        print(f"tensormask convert-detectron2: error: {type(e).__name__}: {msg}", file=sys.stderr)
        return 1
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
