"""``tensormask export --weights W --out model.safetensors [--config-out model.json]``: the inference
model for C++ deployment (``tensormask_infer``, ``cpp/include/tensormask/model.h``).

Writes two files, each atomically (temporary file in the same folder, then renamed):

* ``model.safetensors``: the model's ``state_dict`` (float32; parameter names as the Python model),
  with metadata ``format="tensormask"``, ``config`` (JSON of the *model* config, so
  :func:`tensormask.engine.convert.load_model` reads it back), ``full_config`` (the whole
  :class:`tensormask.config.Config`) and ``dataset`` (category names and ids);
* ``model.json`` (default: next to the weights, same stem): ``{"format": "tensormask", "version": 1,
  "config": to_dict(Config), "category_names": [...], "contiguous_to_category_id": [...]}`` —
  what the C++ side parses (model, inference thresholds and the test-time resize).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from .cli_utils import run_command

EXPORT_FORMAT = "tensormask"
EXPORT_VERSION = 1


def export_description(cfg, meta: dict[str, Any]) -> dict[str, Any]:
    """The JSON document of an exported model: format, version, the full config as plain dicts
    (:func:`tensormask.config.to_dict`) and the category map (contiguous label i → ``category_names[i]``,
    COCO id ``contiguous_to_category_id[i]``)."""
    from .config import to_dict

    k = cfg.model.head.num_classes
    names = list(meta.get("category_names") or [f"class_{i}" for i in range(k)])
    ids = [int(i) for i in (meta.get("contiguous_to_category_id") or range(1, k + 1))]
    if len(names) != k or len(ids) != k:
        raise ValueError(f"the checkpoint's category map has {len(names)} names and {len(ids)} ids, but the model "
                         f"predicts {k} classes")
    return {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "config": to_dict(cfg),
            "category_names": names, "contiguous_to_category_id": ids}


def export_model(weights: str, out: str, config_out: str | None = None) -> tuple[str, str, int]:
    """Export a training checkpoint (``.pth``) or TensorMask safetensors model for C++ inference.

    Args:
        weights: checkpoint or ``.safetensors`` file (see :func:`tensormask.engine.checkpoint.load_inference_model`).
        out: output safetensors path (its folder must exist).
        config_out: output JSON path; default ``out`` with the suffix replaced by ``.json``.

    Returns:
        ``(out, config_out, number of tensors)``.
    """
    import torch

    from .config import to_dict
    from .engine.checkpoint import load_inference_model
    from .engine.convert import _write_atomic
    from .engine.atomic_write import write_json

    out = os.fspath(out)
    if not out.endswith(".safetensors"):
        raise ValueError(f"--out must name a .safetensors file, got {out!r}")
    config_out = config_out or os.path.splitext(out)[0] + ".json"
    for path, flag in ((out, "--out"), (config_out, "--config-out")):
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{flag}: output folder {folder!r} does not exist")
    model, meta, cfg = load_inference_model(weights, "cpu")
    desc = export_description(cfg, meta)
    state = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous().clone()
             for k, v in model.state_dict().items()}
    metadata = {
        "format": EXPORT_FORMAT,
        "config": json.dumps(to_dict(cfg.model)),
        "full_config": json.dumps(desc["config"]),
        "dataset": json.dumps({"category_names": desc["category_names"],
                               "contiguous_to_category_id": desc["contiguous_to_category_id"]}),
        "source_file": os.path.basename(os.fspath(weights)),
    }
    _write_atomic(state, out, metadata)
    write_json(desc, config_out, indent=None)
    return out, config_out, len(state)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tensormask export", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True, help="training checkpoint (.pth) or TensorMask .safetensors")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--config-out", help="output JSON (default: --out with .json instead of .safetensors)")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return p


def run(args: argparse.Namespace) -> int:
    out, config_out, n = export_model(args.weights, args.out, args.config_out)
    print(f"exported {n} tensors → {out} (config: {config_out})")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
