"""``make demo`` / ``tensormask demo``: generate the embedded synthetic shapes dataset, train a tiny
TensorMask on the CPU, evaluate COCO mask and box AP, and write prediction pictures and the loss
curve. Prints the AP and where everything is.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from .cli_utils import run_command

DEMO_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "demo-tiny-cpu.yaml")
DEMO_MINUTES = 10.0  # the demo's promise: dataset + training + evaluation + pictures in 10 minutes on 2 cores
EVAL_RESERVE_S = 15.0  # kept free in a budget for evaluation + pictures (≈ 5–15 s on 2 cores)
DISPLAY_PRECISION = 0.6  # paper §A.5: figures show detections with calibrated score ≥ 0.6


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tensormask demo", description=__doc__)
    p.add_argument("--out", default="demo_out", help="output folder (dataset, run, pictures)")
    p.add_argument("--train-images", type=int, default=400)
    p.add_argument("--val-images", type=int, default=60)
    p.add_argument("--pictures", type=int, default=8, help="number of prediction pictures")
    p.add_argument("--precision", type=float, default=DISPLAY_PRECISION,
                   help="draw the detections whose calibrated score (precision, paper §A.5; calibrated on the "
                        f"validation images) is at least this (default {DISPLAY_PRECISION:g}, as the paper's figures)")
    p.add_argument("--threshold", type=float, help="draw by raw score ≥ THRESHOLD instead of --precision")
    p.add_argument("--minutes", type=float, default=DEMO_MINUTES,
                   help="wall-clock budget of the whole demo (data, training, evaluation, pictures; default "
                        f"{DEMO_MINUTES:g}): on a CPU too slow to train all solver.max_iter iterations in it, the "
                        "schedule is shortened (LR steps scaled) after timing the first iterations; 0 = no budget, "
                        "always the full schedule")
    p.add_argument("--debug", action="store_true")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. solver.max_iter=200")
    return p


def training_time_limit(minutes: float, elapsed: float) -> float | None:
    """Seconds left for training in a ``minutes`` budget after ``elapsed`` seconds, keeping
    ``EVAL_RESERVE_S`` for evaluation and pictures; ``None`` when ``minutes`` is 0 (no budget)."""
    if minutes == 0:
        return None
    left = minutes * 60 - elapsed - EVAL_RESERVE_S
    if left <= 0:
        raise ValueError(f"--minutes {minutes:g} leaves no time to train ({elapsed:.0f} s spent before training): "
                         "give a larger --minutes, or 0 for no budget")
    return left


def run(args: argparse.Namespace) -> int:
    import torch

    from . import api
    from .config import Config, load_config, merge, parse_overrides
    from .data import synthetic
    from .engine.calibration import compute_calibration, default_calibration_path, save_calibration
    from .engine.evaluator import format_table
    from .engine.trainer import train
    from .predict import main as predict_main

    if not 0.0 <= args.precision <= 1.0:
        raise ValueError(f"--precision must be in [0, 1], got {args.precision:g}")
    if args.minutes < 0:
        raise ValueError(f"--minutes must be ≥ 0 (0 = no budget), got {args.minutes:g}")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    overrides = parse_overrides(args.overrides)
    merge(load_config(DEMO_CONFIG, base=Config()), overrides)  # bad overrides fail before the data is made
    out = os.path.abspath(args.out)
    t0 = time.perf_counter()
    data = os.path.join(out, "data")
    for split, n, seed in (("train", args.train_images, 0), ("val", args.val_images, 1)):
        ann = os.path.join(data, split, "annotations.json")
        if not os.path.exists(ann):
            print(f"[1/4] generating {n} synthetic {split} images (preset 'demo') → {os.path.dirname(ann)}")
            synthetic.generate(os.path.join(data, split), n, seed=seed, config="demo", workers=2)
    t_data = time.perf_counter() - t0

    cfg = load_config(DEMO_CONFIG, base=Config())
    cfg = merge(cfg, {
        "data": {
            "train_json": os.path.join(data, "train", "annotations.json"),
            "train_images": os.path.join(data, "train", "images"),
            "val_json": os.path.join(data, "val", "annotations.json"),
            "val_images": os.path.join(data, "val", "images"),
        },
        "output_dir": os.path.join(out, "run"),
    })
    cfg = merge(cfg, overrides)
    limit = training_time_limit(args.minutes, time.perf_counter() - t0)
    budget = f" (or what fits {limit:.0f} s on this CPU)" if limit is not None else ""
    print(f"[2/4] training the tiny TensorMask (tensor bipyramid) for {cfg.solver.max_iter} iterations{budget}")
    t1 = time.perf_counter()
    weights = train(cfg, resume=False, time_limit_s=limit)
    t_train = time.perf_counter() - t1
    trained = load_config(os.path.join(cfg.output_dir, "config.yaml"), base=Config()).solver.max_iter  # as run

    print("[3/4] evaluating on the validation images (pycocotools COCOeval)")
    t2 = time.perf_counter()
    model = api.load(weights, "cpu")  # the Python API, as `tensormask eval` and `tensormask predict`
    metrics = model.evaluate(cfg.data.val_json, cfg.data.val_images, os.path.join(out, "eval"))
    t_eval = time.perf_counter() - t2

    print(f"[4/4] drawing predictions of {args.pictures} validation images")
    pictures = os.path.join(out, "predictions")
    images = sorted(os.listdir(cfg.data.val_images))[: args.pictures]
    if args.threshold is not None:
        keep = ["--threshold", str(args.threshold)]
    else:  # §A.5: map scores to precision with the PR curves of the evaluation just run
        with open(os.path.join(out, "eval", "coco_results.json")) as f:
            calibration = compute_calibration(cfg.data.val_json, json.load(f))
        save_calibration(calibration, default_calibration_path(weights))
        keep = ["--calibrated-threshold", str(args.precision)]
    predict_main([*(os.path.join(cfg.data.val_images, f) for f in images), "--weights", weights,
                  "--out", pictures, "--device", "cpu", *keep])
    total = time.perf_counter() - t0
    print()
    print(format_table(metrics))
    print()
    print(f"mask AP = {metrics['segm']['AP']:.1f}   box AP = {metrics['bbox']['AP']:.1f}   "
          f"(COCO AP@[.5:.95], {args.val_images} validation images)")
    print(f"time: data {t_data:.0f}s, training {t_train:.0f}s, evaluation {t_eval:.0f}s, total {total:.0f}s")
    if trained < cfg.solver.max_iter:
        print(f"trained {trained} of the schedule's {cfg.solver.max_iter} iterations to fit --minutes {args.minutes:g}: "
              "the full schedule scores higher (--minutes 0 trains it all)")
    shown = (f"raw score ≥ {args.threshold:g}" if args.threshold is not None
             else f"calibrated score (precision) ≥ {args.precision:g}, §A.5")
    print(f"prediction pictures: {pictures}/  ({shown})")
    print(f"loss curve:          {os.path.join(cfg.output_dir, 'loss_curve.png')}")
    print(f"weights:             {weights}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
