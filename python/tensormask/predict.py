"""``tensormask predict --weights W IMAGE_OR_FOLDER... --out DIR``: overlays (colour masks, boxes,
class names, scores) as PNG plus a COCO-style ``predictions.json``. Unreadable images are reported and
skipped. Runs :func:`tensormask.load`'s predictor (the Python API). With ``--calibrated-threshold P`` (after ``tensormask calibrate --weights W``) the detections
kept are those whose calibrated precision is ≥ P; ``predictions.json`` then also has ``calibrated_score``."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .cli_utils import run_command

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def list_images(inputs: list[str]) -> list[str]:
    """Image files named directly or found (non-recursively) in the given folders, sorted."""
    files = []
    for item in inputs:
        if os.path.isdir(item):
            files += sorted(os.path.join(item, f) for f in os.listdir(item) if f.lower().endswith(IMAGE_EXTENSIONS))
        elif os.path.exists(item):
            files.append(item)
        else:
            raise FileNotFoundError(f"no such file or folder: {item}")
    return files


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tensormask predict", description=__doc__)
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--weights", required=True, help="training checkpoint (.pth) or TensorMask .safetensors")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--threshold", type=float, default=0.5, help="minimum score to draw and save")
    p.add_argument("--calibrated-threshold", type=float, metavar="P",
                   help="keep detections whose calibrated precision is >= P (in [0, 1]) instead of --threshold")
    p.add_argument("--calibration", help="calibration file (default: <weights>.calibration.json)")
    p.add_argument("--device", default="auto")
    p.add_argument("--min-size", type=int, help="test shorter side (default: the config's)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="network precision: bfloat16 on CUDA and on CPUs with AVX-512 BF16/AMX (else float32, with a "
                        "warning), float16 on CUDA; post-processing is float32")
    p.add_argument("--debug", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    import torch

    from . import api
    from .data import load_image
    from .engine import distributed as dist_utils

    files = list_images(args.inputs)
    if not files:
        raise ValueError("no images found in " + ", ".join(args.inputs))
    calibration = None
    if args.calibrated_threshold is not None:
        from .engine.calibration import calibrate_scores, default_calibration_path, load_calibration

        if not 0.0 <= args.calibrated_threshold <= 1.0:
            raise ValueError(f"--calibrated-threshold must be in [0, 1], got {args.calibrated_threshold}")
        cal_path = args.calibration or default_calibration_path(args.weights)
        if not os.path.isfile(cal_path):
            raise FileNotFoundError(f"calibration file not found: {cal_path}; run `tensormask calibrate --weights "
                                    f"{args.weights}` first")
        calibration = load_calibration(cal_path)
    elif args.calibration:
        raise ValueError("--calibration is used with --calibrated-threshold P")
    device = dist_utils.init_from_env(args.device)
    overrides = [f"data.test_min_size={args.min_size}"] if args.min_size else None
    model = api.load(args.weights, device, dtype=args.dtype, overrides=overrides)
    names = model.category_names
    if calibration is not None and len(calibration["categories"]) != len(names):
        raise ValueError(f"the calibration has {len(calibration['categories'])} categories but the model "
                         f"predicts {len(names)}")
    os.makedirs(args.out, exist_ok=True)
    predictions, skipped = [], 0
    for i, path in enumerate(files):
        try:
            rgb = load_image(path)
        except OSError as e:  # corrupt, or larger than tensormask.data.images.MAX_IMAGE_PIXELS
            if len(files) == 1:  # the only image: its error is the command's (one line, exit 1)
                raise
            print(f"skipping {path}: {e}", file=sys.stderr)
            skipped += 1
            continue
        det = model.predict(rgb)
        calibrated = None
        if calibration is None:
            det = det[det.scores >= args.threshold]
        else:
            calibrated = torch.from_numpy(calibrate_scores(det.scores, det.labels, calibration)).float()
            keep = calibrated >= args.calibrated_threshold
            det, calibrated = det[keep], calibrated[keep]
        shown = det if calibrated is None else det.replace(scores=calibrated)
        stem = os.path.splitext(os.path.basename(path))[0]
        api.draw(rgb, shown).save(os.path.join(args.out, f"{stem}.png"))
        for j, r in enumerate(api.to_coco(det, i)):
            r["file_name"] = os.path.basename(path)
            r["category_name"] = det.category_names[j]
            if calibrated is not None:
                r["calibrated_score"] = float(calibrated[j])
            predictions.append(r)
    if skipped == len(files):
        raise ValueError(f"none of the {len(files)} images could be read (see above)")
    with open(os.path.join(args.out, "predictions.json"), "w") as f:
        json.dump(predictions, f)
    print(f"{len(files) - skipped} images → {args.out} ({len(predictions)} detections, {skipped} skipped)")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
