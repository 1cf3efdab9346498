"""Training checkpoints: written atomically, the last k kept, resumable bit-identically.

A checkpoint is a ``torch.save`` dict with the model, optimizer, LR scheduler and AMP scaler states,
the RNG states (Python, NumPy, torch CPU and CUDA), the iteration, the full config and the dataset's
category names and id map, so ``predict --weights W`` needs nothing else.

Safe by default: everything in a checkpoint is tensors, numbers, strings and plain containers (the
NumPy RNG state is stored as a dict with an int64 tensor, not as NumPy's tuple with an array), so it
is read with ``torch.load(weights_only=True)``, which refuses a pickle that references any function
or class (:class:`~tensormask.safeio.ForbiddenGlobalError`, nothing of it run). Checkpoints of earlier
versions hold the NumPy state as an array; they load with exactly the NumPy globals that rebuild a
uint32 array (:data:`LEGACY_GLOBALS`) allowed, and are written in the new form on the next save.
"""

from __future__ import annotations

import glob
import os
import random
import re
import tempfile
from typing import Any

import numpy as np
import torch

from ..safeio import ForbiddenGlobalError, load_torch_file

CHECKPOINT_PATTERN = "model_{:07d}.pth"
_ITER_RE = re.compile(r"model_(\d{7})\.pth$")


def atomic_save(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash or kill at any moment leaves either the old file or the new one, never a truncated one.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pth", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _numpy_legacy_globals() -> list[Any]:
    """What ``np.random.get_state()`` (a uint32 array) pickled as: array reconstruction (under NumPy 2
    and NumPy 1 names), ndarray, dtype and the uint32 dtype's class — nothing else."""
    core = getattr(np, "_core", None) or np.core
    reconstruct = core.multiarray._reconstruct
    return [(reconstruct, "numpy._core.multiarray._reconstruct"), (reconstruct, "numpy.core.multiarray._reconstruct"),
            np.ndarray, np.dtype, type(np.dtype(np.uint32))]


LEGACY_GLOBALS = _numpy_legacy_globals()  # the exact allow-list of checkpoints written by earlier versions


def rng_state() -> dict[str, Any]:
    """The states of every random generator training uses, as tensors and plain data (loadable with
    ``weights_only=True``): NumPy's ``("MT19937", uint32[624], pos, has_gauss, cached_gaussian)``
    becomes ``{"bit_generator", "key" (int64 tensor (624,)), "pos", "has_gauss", "cached_gaussian"}``."""
    kind, key, pos, has_gauss, cached = np.random.get_state()
    numpy_state = {"bit_generator": str(kind), "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
                   "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` saved (or the NumPy tuple of older checkpoints); the torch states
    are CPU byte tensors again even when the checkpoint was loaded with ``map_location`` a GPU."""
    random.setstate(state["python"])
    np_state = state["numpy"]
    if isinstance(np_state, dict):
        key = np_state["key"].cpu().numpy().astype(np.uint32)
        np_state = (np_state["bit_generator"], key, np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"])
    np.random.set_state(np_state)
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def list_checkpoints(folder: str) -> list[tuple[int, str]]:
    """(iteration, path) of the checkpoints in ``folder``, oldest first."""
    found = []
    for path in glob.glob(os.path.join(folder, "model_*.pth")):
        m = _ITER_RE.search(os.path.basename(path))
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found)


def save_checkpoint(folder: str, iteration: int, state: dict[str, Any], keep_last: int = 3) -> str:
    """Write ``model_<iteration>.pth`` atomically, point ``last_checkpoint`` at it, keep the last k."""
    path = os.path.join(folder, CHECKPOINT_PATTERN.format(iteration))
    atomic_save(state, path)
    pointer = os.path.join(folder, "last_checkpoint")
    tmp = pointer + ".tmp"
    with open(tmp, "w") as f:
        f.write(os.path.basename(path) + "\n")
    os.replace(tmp, pointer)
    if keep_last > 0:
        for _, old in list_checkpoints(folder)[:-keep_last]:
            os.unlink(old)
    return path


def latest_checkpoint(folder: str) -> str | None:
    """The newest loadable checkpoint in ``folder`` (``last_checkpoint`` first, else the highest
    iteration), or None."""
    pointer = os.path.join(folder, "last_checkpoint")
    if os.path.exists(pointer):
        with open(pointer) as f:
            path = os.path.join(folder, f.read().strip())
        if os.path.exists(path):
            return path
    found = list_checkpoints(folder)
    return found[-1][1] if found else None


def load_checkpoint(path: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a training checkpoint written by :func:`save_checkpoint` (``weights_only=True``), with a
    clear error otherwise.

    Raises:
        FileNotFoundError: no such file.
        ForbiddenGlobalError (a ValueError): the pickle references code or a class (refused, not run).
        ValueError: not a torch file, or not a TensorMask checkpoint.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = load_torch_file(path, "a TensorMask checkpoint", map_location, allow=LEGACY_GLOBALS)
    except ForbiddenGlobalError:  # the message names the file and what was refused
        raise
    except Exception as e:  # noqa: BLE001 - truncated or not a torch file
        raise ValueError(f"cannot read checkpoint {path}: {e}") from e
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path} is not a TensorMask training checkpoint (no 'model' entry)")
    return state


def load_inference_model(path: str, device: str | torch.device = "cpu", config=None):
    """A :class:`~tensormask.modeling.tensormask.TensorMask` in eval mode from a training checkpoint
    (``.pth``: weights, config and dataset metadata) or a TensorMask safetensors file (converted or
    exported: config in its metadata).

    The weights all come from the file: a ``backbone.weights`` named in its config is not read.

    Returns:
        ``(model, meta, cfg)``: ``meta = {"category_names": [...], "contiguous_to_category_id": [...]}``
        (generic names when the file has none) and the full :class:`tensormask.config.Config`
        (``config`` if given, else the file's).

    Raises:
        FileNotFoundError: no such file.
        ForbiddenGlobalError (a ValueError): a pickle referencing code (refused, not run).
        ValueError: an unreadable file, or a config, category list or weights that do not fit (one
            line naming the file).
    """
    import dataclasses

    from ..config import Config
    from ..modeling.tensormask import TensorMask

    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.endswith(".safetensors"):
        from .convert import load_model

        model = load_model(path, map_location=device)
        cfg = config if config is not None else Config(model=model.cfg)
        k = model.cfg.head.num_classes
        meta, full = _exported_metadata(path, k)  # `tensormask export` files carry these
        if config is None and full is not None:
            cfg = _stored_config(full, path, "metadata 'full_config'")
        return model.to(device).eval(), meta, cfg
    state = load_checkpoint(path, map_location="cpu")
    cfg = config if config is not None else _stored_config(state.get("config", {}), path, "'config'")
    model_cfg = dataclasses.replace(cfg.model, backbone=dataclasses.replace(cfg.model.backbone, weights=None))
    model = TensorMask(model_cfg)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, AttributeError) as e:
        raise ValueError(f"{path} does not match the model config: {e}") from e
    k = cfg.model.head.num_classes
    meta = _category_map(state["dataset"], k, path, "'dataset'") if state.get("dataset") else _generic_meta(k)
    return model.to(device).eval(), meta, cfg


def _generic_meta(k: int) -> dict[str, Any]:
    return {"category_names": [f"class_{i}" for i in range(k)], "contiguous_to_category_id": list(range(1, k + 1))}


def _stored_config(stored: Any, path: str, where: str):
    """The :class:`~tensormask.config.Config` of a file's stored config dict; a one-line ValueError
    naming the file when it does not fit this version's config."""
    from ..config import Config, from_dict

    try:
        return from_dict(stored, Config())
    except (KeyError, TypeError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise ValueError(f"{path}: the stored config ({where}) is unusable: {msg}") from None


def _category_map(meta: Any, k: int, path: str, where: str) -> dict[str, Any]:
    """``meta`` checked: ``{"category_names": k strings, "contiguous_to_category_id": k integers}``."""
    names = meta.get("category_names") if isinstance(meta, dict) else None
    ids = meta.get("contiguous_to_category_id") if isinstance(meta, dict) else None
    if not (isinstance(names, list) and len(names) == k and all(isinstance(n, str) for n in names)):
        raise ValueError(f"{path}: {where} must hold 'category_names', a list of {k} strings (the model "
                         f"predicts {k} classes)")
    if not (isinstance(ids, list) and len(ids) == k and all(type(i) is int for i in ids)):
        raise ValueError(f"{path}: {where} must hold 'contiguous_to_category_id', a list of {k} integers")
    return {"category_names": list(names), "contiguous_to_category_id": list(ids)}


def _exported_metadata(path: str, k: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Category map and full config stored by ``tensormask export`` in a safetensors file's metadata
    (generic names and None when absent); malformed JSON or types raise a one-line ValueError."""
    from ..safeio import loads_json
    from .convert import read_metadata

    metadata, _ = read_metadata(path)
    meta = _generic_meta(k)
    if "dataset" in metadata:
        meta = _category_map(loads_json(metadata["dataset"], f"{path}: metadata 'dataset'"), k, path,
                             "metadata 'dataset'")
    full = None
    if "full_config" in metadata:
        full = loads_json(metadata["full_config"], f"{path}: metadata 'full_config'")
        if not isinstance(full, dict) or not isinstance(full.get("model", {}), dict) \
                or not isinstance(full.get("model", {}).get("backbone", {}), dict):
            raise ValueError(f"{path}: metadata 'full_config' must be a JSON object of config sections")
        full.get("model", {}).get("backbone", {})["weights"] = None  # the weights are this file
    return meta, full
