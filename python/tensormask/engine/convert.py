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
architecture from the tensors and in accounting for every entry (both in
:mod:`tensormask.engine.detectron2_layout`):

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
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..config import ModelConfig, from_dict, to_dict
from .detectron2_layout import (
    CONVERTIBLE_MASK_HEADS,
    DROPPED,
    ConversionError,
    as_tensor,
    drop_reason,
    infer_config,
    listing,
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
        tensor = as_tensor(entries[key])
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
        reason = drop_reason(key)
        if reason is None:
            leftover.append(key)
        else:
            dropped.append((key, reason))

    problems = []
    if missing:
        problems.append(f"{len(missing)} model tensors missing in the checkpoint: {listing(missing)}")
    if leftover:
        problems.append(f"{len(leftover)} checkpoint entries left over (not used by the model): {listing(leftover)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {listing(mismatched)}")
    if invalid:
        problems.append(f"{len(invalid)} entries are not float arrays: {listing(invalid)}")
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
