"""``tensormask predict --weights W IMAGE_OR_FOLDER... --out DIR``: overlays (colour masks, boxes,
class names, scores) as PNG plus a COCO-style ``predictions.json``. Unreadable images are reported and
skipped."""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

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
    p.add_argument("--device", default="auto")
    p.add_argument("--min-size", type=int, help="test shorter side (default: the config's)")
    p.add_argument("--debug", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    import torch

    from .data import load_image
    from .data.transforms import resized_shape
    from .engine import distributed as dist_utils
    from .engine.evaluator import detections_to_coco
    from .viz import draw_detections

    files = list_images(args.inputs)
    if not files:
        raise ValueError("no images found in " + ", ".join(args.inputs))
    device = dist_utils.init_from_env(args.device)
    from .engine.checkpoint import load_inference_model

    model, meta, cfg = load_inference_model(args.weights, device)
    names = meta["category_names"]
    os.makedirs(args.out, exist_ok=True)
    min_size, max_size = args.min_size or cfg.data.test_min_size, cfg.data.test_max_size
    predictions, skipped = [], 0
    for i, path in enumerate(files):
        try:
            rgb = load_image(path)
        except OSError as e:
            print(f"skipping {path}: {e}", file=sys.stderr)
            skipped += 1
            continue
        h, w = rgb.shape[:2]
        nh, nw, _ = resized_shape(h, w, min_size, max_size)
        image = torch.from_numpy(np.array(rgb)).permute(2, 0, 1).contiguous()
        resized = torch.nn.functional.interpolate(image[None].float(), size=(nh, nw), mode="bilinear",
                                                  align_corners=False, antialias=True)[0].round().clamp(0, 255).to(torch.uint8)
        with torch.no_grad():
            det = model([resized.to(device)], output_sizes=[(h, w)])[0]
        keep = det["scores"] >= args.threshold
        det = {k: v[keep] for k, v in det.items()}
        overlay = draw_detections(rgb, det["boxes"].cpu().numpy(), det["scores"].cpu().numpy(),
                                  det["labels"].cpu().numpy(), det["masks"].cpu().numpy(), names)
        stem = os.path.splitext(os.path.basename(path))[0]
        overlay.save(os.path.join(args.out, f"{stem}.png"))
        for r in detections_to_coco(det, i, list(range(len(names)))):
            r["file_name"] = os.path.basename(path)
            r["category_name"] = names[r.pop("category_id")]
            predictions.append(r)
    with open(os.path.join(args.out, "predictions.json"), "w") as f:
        json.dump(predictions, f)
    print(f"{len(files) - skipped} images → {args.out} ({len(predictions)} detections, {skipped} skipped)")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
