"""``tensormask calibrate --weights W [--dataset JSON IMAGES]``: score → precision calibration
(paper, appendix A.5).

Runs the model on a validation set (default: the checkpoint's ``data.val_json`` / ``data.val_images``),
computes each category's precision-recall curve at one IoU threshold (default 0.5), and writes the
monotone score → precision mapping to ``<weights>.calibration.json`` (or ``--out``). Then
``tensormask predict --weights W --calibrated-threshold 0.6 ...`` keeps the detections whose
calibrated precision is ≥ 0.6. Multi-GPU: ``torchrun --nproc_per_node=K -m tensormask.calibrate ...``.
"""

from __future__ import annotations

import argparse
import os

from .cli_utils import run_command

TABLE_PRECISION = 0.6


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tensormask calibrate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="training checkpoint (.pth) or TensorMask .safetensors")
    p.add_argument("--dataset", nargs=2, metavar=("JSON", "IMAGES"), help="COCO annotations and image folder (default: data.val_*)")
    p.add_argument("--iou-type", choices=("segm", "bbox"), default="segm", help="match masks or boxes (default: segm)")
    p.add_argument("--iou-threshold", type=float, default=0.5, help="IoU of a true positive (default: 0.5)")
    p.add_argument("--out", help="calibration file (default: <weights>.calibration.json)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--debug", action="store_true")
    p.add_argument("overrides", nargs="*", help="config overrides such as model.inference.score_thresh=0.01")
    return p


def format_calibration_table(cal: dict, precision: float = TABLE_PRECISION) -> str:
    """One line per category: name, #GT, #detections, the raw score reaching ``precision``."""
    from .engine.calibration import score_at_precision

    width = max([len("category")] + [len(c["name"]) for c in cal["categories"]])
    lines = [f"{'category':<{width}}  {'#GT':>6}  {'#det':>7}  score@P={precision:g}"]
    for c in cal["categories"]:
        s = score_at_precision(c["knots"], precision)
        lines.append(f"{c['name']:<{width}}  {c['num_gt']:>6}  {c['num_detections']:>7}  "
                     + ("not reached" if s is None else f"{s:.3f}"))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from . import api
    from .engine import distributed as dist_utils
    from .engine.calibration import compute_calibration, default_calibration_path, save_calibration
    from .engine.evaluator import dataset_paths, eval_dataset, gather_results, run_inference

    if not 0.0 <= args.iou_threshold <= 1.0:
        raise ValueError(f"--iou-threshold must be in [0, 1], got {args.iou_threshold}")
    device = dist_utils.init_from_env(args.device)
    predictor = api.load(args.weights, device, overrides=args.overrides)  # as `tensormask predict` runs it
    model, cfg = predictor.model, predictor.cfg
    json_path, images = dataset_paths(args.dataset, cfg)
    dataset = eval_dataset(json_path, images, cfg.data.test_min_size, cfg.data.test_max_size, cfg.data.on_error)
    if dataset.num_classes != cfg.model.head.num_classes:
        raise ValueError(f"{json_path} has {dataset.num_classes} categories but the model predicts "
                         f"{cfg.model.head.num_classes}")
    results = gather_results(run_inference(model, dataset, device))
    if dist_utils.is_main_process():
        cal = compute_calibration(json_path, results, args.iou_type, args.iou_threshold)
        cal.update(weights=os.path.abspath(args.weights), dataset=os.path.abspath(json_path),
                   num_images=len(dataset), score_thresh=cfg.model.inference.score_thresh)
        out = args.out or default_calibration_path(args.weights)
        save_calibration(cal, out)
        print(format_calibration_table(cal))
        print(f"calibration ({args.iou_type}, IoU ≥ {args.iou_threshold:g}) written to {out}")
    dist_utils.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
