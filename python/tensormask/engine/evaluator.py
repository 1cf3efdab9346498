"""COCO evaluation: inference over a dataset, results JSON (segm + bbox), pycocotools COCOeval.

Under ``torchrun`` every process takes a shard of the images; the main process gathers the results,
writes them and evaluates.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from ..data import CocoDataset, Sample
from ..ops import masks_to_rle
from . import distributed as dist_utils
from .atomic_write import write_json
from .inference import detect, test_transform

METRIC_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl"]


def detections_to_coco(det: dict[str, torch.Tensor], image_id: int, contiguous_to_category_id) -> list[dict[str, Any]]:
    """COCO result entries (``bbox`` XYWH and ``segmentation`` RLE) of one image's detections."""
    boxes = det["boxes"].detach().cpu().numpy().astype(np.float64)
    scores = det["scores"].detach().cpu().numpy().astype(np.float64)
    labels = det["labels"].detach().cpu().numpy()
    rles = masks_to_rle(det["masks"].cpu()) if len(boxes) else []
    out = []
    for box, score, label, rle in zip(boxes, scores, labels, rles):
        x1, y1, x2, y2 = box.tolist()
        out.append({
            "image_id": int(image_id),
            "category_id": int(contiguous_to_category_id[int(label)]),
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "score": float(score),
            "segmentation": rle,
        })
    return out


def infer_sample(model, sample: Sample, device: torch.device,
                 amp_dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Detections of one (resized) sample at its ORIGINAL image size (:func:`.inference.detect`, the
    call :func:`tensormask.load`'s predictor makes)."""
    return detect(model, [sample.image.to(device)], [tuple(sample.orig_size)], amp_dtype)[0]


def run_inference(model, dataset: CocoDataset, device: torch.device, progress: bool = True,
                  amp_dtype: torch.dtype | None = None) -> list[dict[str, Any]]:
    """COCO results of this process's shard of ``dataset`` (all images when not distributed);
    ``amp_dtype`` runs the network under autocast (:func:`.inference.autocast_dtype`)."""
    from tqdm import tqdm

    model.eval()
    rank, world = dist_utils.rank(), dist_utils.world_size()
    indices = range(rank, len(dataset), world)
    results: list[dict[str, Any]] = []
    for i in tqdm(indices, desc="eval", disable=not (progress and rank == 0), dynamic_ncols=True):
        sample = dataset[i]
        if sample is None:  # unreadable image: counted in dataset.skipped
            continue
        det = infer_sample(model, sample, device, amp_dtype)
        results.extend(detections_to_coco(det, sample.image_id, dataset.contiguous_to_category_id))
    return results


def gather_results(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not dist_utils.is_distributed():
        return results
    parts: list[Any] = [None] * dist_utils.world_size()
    torch.distributed.all_gather_object(parts, results)
    return [r for part in parts for r in part]


def coco_evaluate(gt_json: str, results: list[dict[str, Any]], iou_types=("segm", "bbox")) -> dict[str, dict[str, float]]:
    """COCOeval of ``results`` against ``gt_json``; returns ``{iou_type: {AP, AP50, ...}}`` (0–100)
    and prints pycocotools' standard table."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO(gt_json)
    metrics: dict[str, dict[str, float]] = {}
    for iou_type in iou_types:
        if not results:
            metrics[iou_type] = {k: 0.0 for k in METRIC_NAMES}
            continue
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        print(f"--- {iou_type} ---")
        ev.summarize()
        metrics[iou_type] = {k: float(v) * 100 for k, v in zip(METRIC_NAMES, ev.stats[:6])}
    return metrics




def eval_dataset(json_path: str, image_root: str, min_size: int, max_size: int, on_error: str = "skip") -> CocoDataset:
    """A COCO-format dataset with the single-scale test transform (§4.3: shorter side ``min_size``)."""
    return CocoDataset(json_path, image_root, transform=test_transform(min_size, max_size), on_error=on_error)


def dataset_paths(dataset_arg, cfg) -> tuple[str, str]:
    """``(json, images)`` from a ``--dataset JSON IMAGES`` argument, else the config's validation set."""
    json_path, images = dataset_arg or (cfg.data.val_json, cfg.data.val_images)
    if not json_path:
        raise ValueError("no dataset: give --dataset JSON IMAGES or set data.val_json in the config")
    return json_path, images


def evaluate(model, json_path: str, image_root: str, output_dir: str, min_size: int, max_size: int,
             device: torch.device, progress: bool = True, on_error: str = "skip",
             amp_dtype: torch.dtype | None = None) -> dict[str, dict[str, float]]:
    """Run ``model`` on a COCO-format dataset and evaluate mask and box AP (``amp_dtype``: the
    network under autocast, e.g. ``torch.bfloat16``; post-processing stays float32).

    Writes ``coco_results.json`` (segm + bbox entries) and ``metrics.json`` to ``output_dir``.
    Returns ``{"segm": {...}, "bbox": {...}}`` with AP values in percent (main process; other
    processes return ``{}``).
    """
    dataset = eval_dataset(json_path, image_root, min_size, max_size, on_error)
    results = gather_results(run_inference(model, dataset, device, progress, amp_dtype))
    if not dist_utils.is_main_process():
        return {}
    os.makedirs(output_dir, exist_ok=True)
    write_json(results, os.path.join(output_dir, "coco_results.json"), indent=None)
    metrics = coco_evaluate(json_path, results)
    write_json(metrics, os.path.join(output_dir, "metrics.json"), indent=None)
    return metrics


def format_table(metrics: dict[str, dict[str, float]]) -> str:
    """A markdown table of the AP metrics."""
    lines = ["| | " + " | ".join(METRIC_NAMES) + " |", "|---" * (len(METRIC_NAMES) + 1) + "|"]
    for iou_type, values in metrics.items():
        name = {"segm": "mask", "bbox": "box"}.get(iou_type, iou_type)
        lines.append(f"| {name} | " + " | ".join(f"{values[k]:.1f}" for k in METRIC_NAMES) + " |")
    return "\n".join(lines)
