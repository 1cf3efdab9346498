"""``tensormask eval --config C --weights W [--dataset JSON IMAGES]``: COCO mask and box AP.

Runs inference with a progress bar, writes ``coco_results.json`` (segm + bbox) and ``metrics.json``
and prints the standard AP table. Multi-GPU: ``torchrun --nproc_per_node=K -m tensormask.eval ...``.
"""

from __future__ import annotations

import argparse
import os

from .cli_utils import run_command


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tensormask eval", description=__doc__)
    p.add_argument("--config", help="YAML config (default: the one stored in the checkpoint)")
    p.add_argument("--weights", required=True, help="training checkpoint (.pth) or TensorMask .safetensors")
    p.add_argument("--dataset", nargs=2, metavar=("JSON", "IMAGES"), help="COCO annotations and image folder (default: data.val_*)")
    p.add_argument("--output-dir", help="where to write results (default: <output_dir>/eval)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--debug", action="store_true")
    p.add_argument("overrides", nargs="*", help="config overrides such as model.inference.score_thresh=0.1")
    return p


def run(args: argparse.Namespace) -> int:
    from .config import Config, load_config, merge, parse_overrides
    from .engine import distributed as dist_utils
    from .engine.checkpoint import load_inference_model
    from .engine.evaluator import dataset_paths, evaluate, format_table

    cfg = load_config(args.config, base=Config()) if args.config else None
    if cfg is not None:
        cfg = merge(cfg, parse_overrides(args.overrides))
    device = dist_utils.init_from_env(args.device)
    model, _, stored = load_inference_model(args.weights, device, cfg)
    if cfg is None:
        cfg = merge(stored, parse_overrides(args.overrides))
        model.cfg = cfg.model
    json_path, images = dataset_paths(args.dataset, cfg)
    out = args.output_dir or os.path.join(cfg.output_dir, "eval")
    metrics = evaluate(model, json_path, images, out, cfg.data.test_min_size, cfg.data.test_max_size, device,
                       on_error=cfg.data.on_error)
    if dist_utils.is_main_process():
        print(format_table(metrics))
        print(f"results written to {out}")
    dist_utils.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
