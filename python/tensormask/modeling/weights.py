"""Loading pretrained ResNet weights into :class:`tensormask.modeling.backbone.ResNet`.

The only module of :mod:`tensormask.modeling` that reads files. Nothing is ever downloaded.

Accepted files:

* ``.pth`` / ``.pt`` — ``torch.save`` output, read with ``torch.load(weights_only=True)``: a state dict
  (or a dict with a ``"model"`` / ``"state_dict"`` state dict) with

  - torchvision names (``conv1.weight``, ``bn1.*``, ``layer1.0.conv1.weight``, ``layer1.0.bn1.*``,
    ``layer1.0.downsample.{0,1}.*``; ``fc.*`` is ignored) — these are torchvision-style weights, or
  - our / detectron2 names (``stem.conv1.weight``, ``res2.0.conv1.norm.weight``, optionally prefixed
    ``bottom_up.`` or ``backbone.bottom_up.``) — the style of such a file is unknown and trusted.

* ``.pkl`` — a detectron2 / Detectron checkpoint, a pickle of numpy arrays, read with a *restricted*
  unpickler (only numpy array reconstruction and plain containers; anything else raises
  :class:`ForbiddenGlobalError`) and ``encoding="latin1"`` (Python 2 pickles). Layouts:

  - ``{"model": {name: array}, "__author__": ...}`` (detectron2 model zoo and converted files) with
    detectron2 names, bare or prefixed ``backbone.bottom_up.``; ``__author__ == "torchvision"`` (from
    detectron2's ``convert-torchvision-to-d2.py``) means torchvision style, anything else MSRA style;
  - ``{name: array}`` or ``{"blobs": {name: array}}`` with Caffe2 names (``conv1_w``,
    ``res_conv1_bn_s``, ``res2_0_branch2a_w``, ``res2_0_branch2a_bn_{s,b}``, ...): the MSRA ImageNet
    ``R-50.pkl``/``R-101.pkl``. Their norms are plain affine transforms (no running statistics); the
    absent statistics are set to the identity (mean 0, var 1 − eps) so FrozenBN reproduces them
    exactly, and reported as ``filled``.

Style rule (decision): the weights of both styles are shape-compatible, so nothing would fail —
instead a file whose style is known (torchvision names or ``__author__ == "torchvision"``:
torchvision; Caffe2 names or another detectron2 ``.pkl``: msra) must match the backbone's configured
style, else :func:`load_backbone_weights` raises ValueError telling to set ``backbone.style``.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..safeio import ForbiddenGlobalError, load_torch_file, refusal

__all__ = [
    "ForbiddenGlobalError",
    "WeightFileError",
    "LoadReport",
    "RestrictedUnpickler",
    "restricted_pickle_load",
    "read_weight_file",
    "map_key",
    "load_backbone_weights",
]

_STATS = ("running_mean", "running_var")


class WeightFileError(ValueError):
    """A weight file could not be read or does not hold ResNet weights."""


# --------------------------------------------------------------------------------------------------
# Restricted unpickling
# --------------------------------------------------------------------------------------------------


def _numpy_core(submodule: str, name: str) -> Any:
    """``numpy._core.<submodule>.<name>`` (numpy ≥ 2) or ``numpy.core.<submodule>.<name>`` (1.x)."""
    for module in (f"numpy._core.{submodule}", f"numpy.core.{submodule}"):
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise ForbiddenGlobalError(f"numpy has no {submodule}.{name}")


def _builtin(name: str):
    import builtins

    return lambda: getattr(builtins, name)


# (module, name) -> resolver. Everything a pickle of numpy arrays inside plain containers needs.
_ALLOWED_GLOBALS = {
    **{(f"numpy.{core}.multiarray", "_reconstruct"): (lambda: _numpy_core("multiarray", "_reconstruct"))
       for core in ("core", "_core")},
    **{(f"numpy.{core}.multiarray", "scalar"): (lambda: _numpy_core("multiarray", "scalar"))
       for core in ("core", "_core")},
    # protocol-5 pickles of contiguous arrays: _frombuffer(buffer, dtype, shape, order)
    **{(f"numpy.{core}.numeric", "_frombuffer"): (lambda: _numpy_core("numeric", "_frombuffer"))
       for core in ("core", "_core")},
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    **{("builtins", n): _builtin(n) for n in ("dict", "list", "tuple", "set", "frozenset", "bytearray")},
    ("collections", "OrderedDict"): lambda: __import__("collections").OrderedDict,
    # Python 3 writes bytes as _codecs.encode(str, "latin1") in protocol ≤ 2 pickles
    ("_codecs", "encode"): lambda: __import__("codecs").encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays/dtypes/scalars and builtin containers.

    Any other global raises :class:`ForbiddenGlobalError` (a ``pickle.UnpicklingError``) naming it,
    before anything of it is imported or called.
    """

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (__builtin__, copy_reg, ...), as the default find_class would map them
        from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING

        if (module, name) in NAME_MAPPING:
            module, name = NAME_MAPPING[(module, name)]
        elif module in IMPORT_MAPPING:
            module = IMPORT_MAPPING[module]
        resolver = _ALLOWED_GLOBALS.get((module, name))
        if resolver is None:
            error = ForbiddenGlobalError(
                f"refusing to unpickle global '{module}.{name}': weight .pkl files may only contain numpy "
                "arrays in dicts/lists (is this file really a detectron2 checkpoint?)"
            )
            error.reference = f"{module}.{name}"
            raise error
        return resolver()


def restricted_pickle_load(data: bytes | io.IOBase) -> Any:
    """Unpickle ``data`` (bytes or a binary file) with :class:`RestrictedUnpickler`, latin1 strings."""
    file = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    return RestrictedUnpickler(file, encoding="latin1").load()


# --------------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------------


def _to_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return torch.from_numpy(np.array(value))  # a writable, contiguous copy
    return None


def read_weight_file(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a weight file into ``(entries, meta)``.

    ``entries`` maps every name of the file's model dict to its value (tensor, numpy array or other);
    ``meta`` has ``"kind"`` ("pth" or "pkl") and ``"author"`` (a detectron2 ``__author__`` or None).
    Raises :class:`WeightFileError` for unreadable or unrecognised files, :class:`ForbiddenGlobalError`
    for pickles with forbidden content, FileNotFoundError for missing files.
    """
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weight file {path!r} does not exist")
    author = None
    if suffix in (".pth", ".pt"):
        kind = "pth"
        try:
            data = load_torch_file(path, "a weight file")
        except ForbiddenGlobalError:
            raise
        except Exception as e:  # noqa: BLE001 - torch raises many types for corrupt files
            raise WeightFileError(f"could not read {path!r} as a torch.save file ({type(e).__name__}: {e})") from e
        if isinstance(data, Mapping):
            for key in ("model", "state_dict"):
                if isinstance(data.get(key), Mapping):
                    data = data[key]
                    break
    elif suffix in (".pkl", ".pickle"):
        kind = "pkl"
        try:
            with open(path, "rb") as f:
                data = restricted_pickle_load(f)
        except ForbiddenGlobalError as e:
            reference = getattr(e, "reference", None)
            if reference is None:
                raise
            raise ForbiddenGlobalError(refusal(path, "a weight .pkl", f"'{reference}'",
                                               "restricted unpickler: numpy arrays in dicts/lists only")) from None
        except Exception as e:  # noqa: BLE001 - corrupt pickles raise anything from EOFError to KeyError
            raise WeightFileError(f"could not read {path!r} as a pickle ({type(e).__name__}: {e})") from e
        if isinstance(data, Mapping):
            if isinstance(data.get("model"), Mapping):
                author = data.get("__author__")
                author = author if isinstance(author, str) else None
                data = data["model"]
            elif isinstance(data.get("blobs"), Mapping):  # Caffe2 Detectron detection models
                data = data["blobs"]
    else:
        raise WeightFileError(f"unsupported weight file {path!r}: expected a torchvision/torch .pth or a "
                              "detectron2 .pkl")
    if not isinstance(data, Mapping):
        raise WeightFileError(f"{path!r} does not hold a dict of tensors (got {type(data).__name__}); "
                              "this file does not look like a ResNet checkpoint")
    return {str(k): v for k, v in data.items()}, {"kind": kind, "author": author}


# --------------------------------------------------------------------------------------------------
# Name mapping
# --------------------------------------------------------------------------------------------------

_NORM_FIELDS = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_TV_STEM_CONV = re.compile(r"^conv1\.weight$")
_TV_STEM_BN = re.compile(rf"^bn1\.{_NORM_FIELDS}$")
_TV_CONV = re.compile(r"^layer([1-4])\.(\d+)\.conv([1-3])\.weight$")
_TV_BN = re.compile(rf"^layer([1-4])\.(\d+)\.bn([1-3])\.{_NORM_FIELDS}$")
_TV_DOWN_CONV = re.compile(r"^layer([1-4])\.(\d+)\.downsample\.0\.weight$")
_TV_DOWN_BN = re.compile(rf"^layer([1-4])\.(\d+)\.downsample\.1\.{_NORM_FIELDS}$")
_C2_FIELDS = {"w": "weight", "b": "bias", "s": "weight", "rm": "running_mean", "riv": "running_var"}
_C2_BRANCH = {"1": "shortcut", "2a": "conv1", "2b": "conv2", "2c": "conv3"}
_C2_STEM = re.compile(r"^conv1_(w|b)$")
_C2_STEM_NORM = re.compile(r"^res_conv1_(?:bn|gn)_(s|b|rm|riv)$")
_C2_CONV = re.compile(r"^res([2-5])_(\d+)_branch(1|2a|2b|2c)_(w|b)$")
_C2_NORM = re.compile(r"^res([2-5])_(\d+)_branch(1|2a|2b|2c)_(?:bn|gn)_(s|b|rm|riv)$")
_D2 = re.compile(r"^(stem|res[2-5])\.")


def map_key(name: str) -> tuple[str | None, str]:
    """Map a checkpoint name to our ResNet name.

    Returns ``(our_name, scheme)`` with scheme "torchvision", "detectron2" or "caffe2"; or
    ``(None, reason)`` for names that are not ResNet tensors (classifier, FPN, heads, optimizer...).
    Our names are checked against the model separately, so a mapped name may still be "unexpected".
    """
    if name.startswith("module."):  # DataParallel
        name = name[len("module."):]
    # torchvision
    if _TV_STEM_CONV.match(name):
        return "stem.conv1.weight", "torchvision"
    if m := _TV_STEM_BN.match(name):
        return f"stem.conv1.norm.{m[1]}", "torchvision"
    if m := _TV_CONV.match(name):
        return f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.weight", "torchvision"
    if m := _TV_BN.match(name):
        return f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.norm.{m[4]}", "torchvision"
    if m := _TV_DOWN_CONV.match(name):
        return f"res{int(m[1]) + 1}.{m[2]}.shortcut.weight", "torchvision"
    if m := _TV_DOWN_BN.match(name):
        return f"res{int(m[1]) + 1}.{m[2]}.shortcut.norm.{m[3]}", "torchvision"
    if name.startswith("fc.") or name.startswith("fc1000_"):
        return None, "ImageNet classifier"
    # Caffe2 / Detectron (MSRA ImageNet models)
    if m := _C2_STEM.match(name):
        return f"stem.conv1.{_C2_FIELDS[m[1]]}", "caffe2"
    if m := _C2_STEM_NORM.match(name):
        return f"stem.conv1.norm.{_C2_FIELDS[m[1]]}", "caffe2"
    if m := _C2_CONV.match(name):
        return f"res{m[1]}.{m[2]}.{_C2_BRANCH[m[3]]}.{_C2_FIELDS[m[4]]}", "caffe2"
    if m := _C2_NORM.match(name):
        return f"res{m[1]}.{m[2]}.{_C2_BRANCH[m[3]]}.norm.{_C2_FIELDS[m[4]]}", "caffe2"
    if name.endswith("_momentum"):
        return None, "optimizer state"
    # detectron2 / ours
    for prefix in ("backbone.bottom_up.", "bottom_up."):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    else:
        if name.startswith("backbone."):
            return None, "outside backbone.bottom_up (FPN)"
    if _D2.match(name):
        return name, "detectron2"
    return None, "not a ResNet tensor"


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def _short(items: list[str], limit: int = 8) -> str:
    if not items:
        return "none"
    shown = ", ".join(items[:limit])
    return f"{len(items)}: {shown}" + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


@dataclass
class LoadReport:
    """What :func:`load_backbone_weights` did.

    Attributes:
        path: the file.
        scheme: naming scheme of the file ("torchvision", "detectron2" or "caffe2").
        file_style: style implied by the file ("torchvision", "msra") or None if it cannot tell.
        loaded: our names of the tensors copied from the file.
        missing: our tensors the file did not provide (left at their initial values); step counters
            (``num_batches_tracked``) are never reported missing.
        unexpected: file names (``name -> our_name``) that look like ResNet tensors but have no place
            in this model (e.g. a deeper ResNet, or BN statistics for a GN/none model).
        ignored: file names that are not ResNet tensors (classifier, FPN, heads, step counters that
            FrozenBN does not keep) with the reason.
        filled: our BN statistics absent from a Caffe2 file (affine-only norms) set to the identity.
    """

    path: str
    scheme: str
    file_style: str | None
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    filled: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every backbone tensor came from the file and nothing ResNet-like was left over."""
        return not self.missing and not self.unexpected

    def __str__(self) -> str:
        style = self.file_style or "unknown (trusted)"
        return "\n".join([
            f"backbone weights from {self.path} ({self.scheme} names, style {style}): "
            f"{len(self.loaded)} tensors loaded",
            f"  missing (kept their initial values): {_short(self.missing)}",
            f"  unexpected (no such tensor in this backbone): {_short(self.unexpected)}",
            f"  ignored (not backbone tensors): {_short(self.ignored)}",
            f"  filled (absent BN statistics set to identity): {_short(self.filled)}",
        ])


def _file_style(scheme: str, kind: str, author: str | None) -> str | None:
    if scheme == "torchvision" or author == "torchvision":
        return "torchvision"
    if scheme == "caffe2" or kind == "pkl":
        return "msra"
    return None  # our / detectron2 names in a .pth: trained with whatever style; cannot tell


def load_backbone_weights(backbone: nn.Module, path: str | os.PathLike, style: str | None = None, *,
                          strict: bool = False) -> LoadReport:
    """Load a torchvision ``.pth`` or detectron2 ``.pkl`` ResNet checkpoint into ``backbone``.

    Args:
        backbone: a :class:`~tensormask.modeling.backbone.ResNet`, or a module with a ``bottom_up``
            ResNet (e.g. :class:`~tensormask.modeling.fpn.BackboneWithFPN`; only the ResNet is loaded).
        path: the weight file (see the module docstring for the accepted formats).
        style: the backbone's configured style ("msra" / "torchvision"); defaults to ``backbone.style``.
        strict: raise ValueError (with the report) if anything is missing or unexpected.

    Returns:
        a :class:`LoadReport`.

    Raises:
        ValueError: the file's style contradicts ``style``; a tensor's shape differs from the model's
            (naming the key and both shapes); two file tensors map to one of ours; nothing in the file
            is a ResNet tensor; or ``strict`` and the report is not ok. The model is left untouched
            when any of these is raised.
        WeightFileError (a ValueError): the file is corrupt or of an unsupported kind.
        ForbiddenGlobalError (a pickle.UnpicklingError): the ``.pkl`` references forbidden globals.
    """
    model = getattr(backbone, "bottom_up", backbone)
    style = style if style is not None else getattr(model, "style", None)
    path_str = os.fspath(path)
    entries, meta = read_weight_file(path_str)

    targets: dict[str, tuple[str, torch.Tensor]] = {}  # our name -> (file name, value)
    schemes: set[str] = set()
    ignored: list[str] = []
    for name, value in entries.items():
        ours, scheme = map_key(name)
        if ours is None:
            ignored.append(f"{name} ({scheme})")
            continue
        tensor = _to_tensor(value)
        if tensor is None:
            ignored.append(f"{name} (not a numeric array: {type(value).__name__})")
            continue
        if ours in targets:
            raise ValueError(f"{path_str}: both {targets[ours][0]!r} and {name!r} map to {ours!r}")
        schemes.add(scheme)
        targets[ours] = (name, tensor)

    if not targets:
        examples = ", ".join(list(entries)[:5]) or "no entries"
        raise WeightFileError(
            f"{path_str}: none of its {len(entries)} entries is a ResNet tensor (e.g. {examples}); this file "
            "does not look like a ResNet checkpoint (expected torchvision or detectron2 names)"
        )
    if len(schemes) > 1:
        raise WeightFileError(f"{path_str} mixes naming schemes {sorted(schemes)}; refusing to guess")
    scheme = schemes.pop()
    file_style = _file_style(scheme, meta["kind"], meta["author"])
    if file_style is not None and style is not None and file_style != style:
        raise ValueError(
            f"{path_str} holds {file_style}-style ResNet weights but the backbone is configured with "
            f"style={style!r}. Set backbone.style: {file_style} (it decides where the stride-2 of a bottleneck "
            f"sits: 1x1 conv for msra, 3x3 for torchvision) and the matching pixel_mean/pixel_std/input_format "
            f"({'RGB, ImageNet mean/std' if file_style == 'torchvision' else 'BGR 0-255 minus the mean, std 1'})"
        )

    state = model.state_dict()
    report = LoadReport(path=path_str, scheme=scheme, file_style=file_style, ignored=ignored)
    new_state: dict[str, torch.Tensor] = {}
    for ours, (name, tensor) in targets.items():
        if ours not in state:
            if ours.endswith("num_batches_tracked"):
                report.ignored.append(f"{name} (step counter; this norm keeps none)")
            else:
                report.unexpected.append(f"{name} -> {ours}" if name != ours else name)
            continue
        if tuple(tensor.shape) != tuple(state[ours].shape):
            raise ValueError(
                f"{path_str}: shape mismatch for {ours!r} (file key {name!r}): file has {tuple(tensor.shape)}, "
                f"model has {tuple(state[ours].shape)} (wrong depth or norm?)"
            )
        new_state[ours] = tensor

    if scheme == "caffe2":  # affine-only norms: identity statistics
        for ours in state:
            prefix, _, leaf = ours.rpartition(".")
            if leaf in _STATS and ours not in new_state and f"{prefix}.weight" in new_state:
                eps = getattr(model.get_submodule(prefix), "eps", 1e-5)
                value = torch.zeros_like(state[ours]) if leaf == "running_mean" else torch.full_like(state[ours], 1 - eps)
                new_state[ours] = value
                report.filled.append(ours)

    filled = set(report.filled)
    report.loaded = [k for k in new_state if k not in filled]
    report.missing = [k for k in state if k not in new_state and not k.endswith("num_batches_tracked")]
    if strict and not report.ok:
        raise ValueError(f"incomplete backbone weights (strict loading):\n{report}")
    result = model.load_state_dict(new_state, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys  # filtered above
    return report
