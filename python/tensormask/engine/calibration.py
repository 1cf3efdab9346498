"""Score → precision calibration (TensorMask paper, appendix A.5).

The paper displays detections whose *calibrated* score is ≥ 0.6, where the calibration maps a
detector's raw score to a precision value: "for each model and for each category, we compute its
precision-recall (PR) curve on val2017. As a PR curve is parameterized by score, we can map an
uncalibrated score for the detector-category pair to its corresponding precision value."

What is computed, exactly (:func:`compute_calibration`):

1. **Matching** (COCO rules, as ``pycocotools.cocoeval.COCOeval.evaluateImg`` with one IoU
   threshold, area range "all" and *no* per-image detection cap). Per (image, category): the
   detections are taken in decreasing score order (stable for ties, i.e. results-file order) and the
   ground truth non-crowd first. Each detection is matched to the unmatched non-crowd GT, or to a
   crowd region, with the highest IoU ≥ ``iou_threshold``; a non-crowd match is preferred to a crowd
   one, a non-crowd GT is matched at most once, a crowd region any number of times. IoUs are those
   of ``pycocotools.mask.iou`` on masks (``iou_type="segm"``) or XYWH boxes (``"bbox"``); against a
   crowd region the IoU is intersection / detection area, as in COCO. A detection matched to a
   non-crowd GT is a true positive (TP), an unmatched one a false positive (FP), and one matched to
   a crowd region is *ignored*: neither TP nor FP.
2. **PR curve parameterised by score.** Per category, over all images, the non-ignored detections
   are sorted by decreasing score. For every distinct score ``s`` (an operating point: keep the
   detections with score ≥ ``s``; tied scores enter together) the precision is
   ``P(s) = TP(≥s) / (TP(≥s) + FP(≥s))``.
3. **Monotone envelope.** Raw ``P(s)`` is not monotone in ``s``. As in COCO's interpolated PR curve,
   the calibrated precision at ``s`` is ``max{P(s') : s' ≤ s}`` (the best precision reachable at
   this or any higher recall), which is non-decreasing in ``s``.
4. **Knots.** The (score, calibrated precision) pairs sorted by increasing score; interior knots of
   a run of equal precision are dropped (this does not change the interpolation below).

:func:`calibrate_scores` maps raw scores by piecewise-linear interpolation over a category's knots,
clamped to the first/last knot's precision outside their score range; a category without knots (no
non-ignored detection on the calibration set) maps to 0.

The IoU threshold is not given by the paper; the default here is 0.5 (the PASCAL / AP50 criterion).
The calibration is specific to one set of weights (and to the inference settings used, e.g. the
score threshold: scores below the lowest calibration detection get the lowest knot's precision).
Its default location is beside the weights: ``<weights>.calibration.json``
(:func:`default_calibration_path`).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections import defaultdict
from typing import Any

import numpy as np

from ..safeio import loads_json
from .atomic_write import write_json

FORMAT = "tensormask-calibration"
VERSION = 1
IOU_TYPES = ("segm", "bbox")


def default_calibration_path(weights: str) -> str:
    """Where ``tensormask calibrate`` writes (and ``predict`` looks for) the calibration of ``weights``."""
    return weights + ".calibration.json"


def _load_gt(gt_json: str | dict):
    """A pycocotools ``COCO`` of a path or an already-loaded COCO-format dict (quietly)."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        if isinstance(gt_json, dict):
            coco = COCO()
            coco.dataset = gt_json
            coco.createIndex()
        else:
            if not os.path.isfile(gt_json):
                raise FileNotFoundError(f"annotation file not found: {gt_json}")
            coco = COCO(gt_json)
    return coco


def match_detections(gt_json: str | dict, results: list[dict[str, Any]], iou_type: str = "segm",
                     iou_threshold: float = 0.5) -> tuple[np.ndarray, Any]:
    """COCO-style matching of ``results`` to the ground truth at one IoU threshold (see the module
    docstring, step 1).

    Returns:
        ``(status, coco)``: ``status[i]`` is 1 (TP), 0 (FP) or -1 (ignored: matched to a crowd
        region) for ``results[i]``; ``coco`` is the loaded ground truth.
    """
    from pycocotools import mask as mask_util

    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    coco = _load_gt(gt_json)
    cat_ids = set(coco.getCatIds())
    img_ids = set(coco.getImgIds())

    geometry_key = "segmentation" if iou_type == "segm" else "bbox"
    by_key: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, r in enumerate(results):
        img, cat = r.get("image_id"), r.get("category_id")
        if img not in img_ids:
            raise ValueError(f"result {i}: image_id {img!r} is not in the ground truth")
        if cat not in cat_ids:
            raise ValueError(f"result {i}: category_id {cat!r} is not in the ground truth")
        if geometry_key not in r or "score" not in r:
            raise ValueError(f"result {i} needs 'score' and '{geometry_key}' (for iou_type={iou_type!r})")
        by_key[(img, cat)].append(i)

    def geometry(anns, is_gt):
        if iou_type == "bbox":
            return np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        return [coco.annToRLE(a) for a in anns] if is_gt else [a["segmentation"] for a in anns]

    status = np.zeros(len(results), dtype=np.int8)
    threshold = min(iou_threshold, 1 - 1e-10)
    for (img, cat), det_idx in by_key.items():
        gts = coco.loadAnns(coco.getAnnIds(imgIds=[img], catIds=[cat], iscrowd=None))
        if not gts:
            continue  # every detection is a false positive (status 0)
        crowd = np.array([int(bool(g.get("iscrowd", 0))) for g in gts])
        gts = [gts[j] for j in np.argsort(crowd, kind="mergesort")]  # non-crowd first
        crowd = np.sort(crowd, kind="mergesort")
        scores = np.array([results[i]["score"] for i in det_idx], dtype=np.float64)
        det_idx = [det_idx[j] for j in np.argsort(-scores, kind="mergesort")]
        try:
            ious = np.asarray(mask_util.iou(geometry([results[i] for i in det_idx], False),
                                            geometry(gts, True), list(crowd)))
        except Exception as e:  # size mismatch, malformed RLE
            raise ValueError(f"cannot compute {iou_type} IoUs for image {img}, category {cat}: {e}") from e
        ious = ious.reshape(len(det_idx), len(gts))
        gt_matched = np.zeros(len(gts), dtype=bool)
        for d, ri in enumerate(det_idx):  # COCOeval.evaluateImg's loop
            best, m = threshold, -1
            for g in range(len(gts)):
                if gt_matched[g] and not crowd[g]:
                    continue
                if m > -1 and not crowd[m] and crowd[g]:
                    break
                if ious[d, g] < best:
                    continue
                best, m = ious[d, g], g
            if m == -1:
                continue  # false positive
            gt_matched[m] = True
            status[ri] = -1 if crowd[m] else 1
    return status, coco


def pr_knots(scores: np.ndarray, tp: np.ndarray) -> list[list[float]]:
    """The monotone (score, precision) knots of one category (module docstring, steps 2–4).

    Args:
        scores: scores of the non-ignored detections.
        tp: 1 for a true positive, 0 for a false positive, per detection.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return []
    order = np.argsort(-scores, kind="mergesort")
    s, t = scores[order], np.asarray(tp, dtype=np.float64)[order]
    ctp = np.cumsum(t)
    last = np.r_[s[1:] != s[:-1], True]  # last detection of each distinct score
    s, prec = s[last], ctp[last] / (np.flatnonzero(last) + 1)
    env = np.maximum.accumulate(prec[::-1])  # increasing score order: max over scores ≤ s
    s = s[::-1]
    keep = np.ones(len(s), dtype=bool)
    if len(s) > 2:
        keep[1:-1] = ~((env[1:-1] == env[:-2]) & (env[1:-1] == env[2:]))
    return [[float(a), float(b)] for a, b in zip(s[keep], env[keep])]


def compute_calibration(gt_json: str | dict, results: list[dict[str, Any]], iou_type: str = "segm",
                        iou_threshold: float = 0.5) -> dict[str, Any]:
    """Per-category score → precision calibration of ``results`` (COCO result entries:
    ``image_id``, COCO ``category_id``, ``score``, and ``segmentation`` RLE or XYWH ``bbox``)
    against the COCO-format ground truth ``gt_json`` (a path or a loaded dict).

    ``iou_threshold`` defines a true positive; the paper does not state it, 0.5 is the default here.
    See the module docstring for exactly what is computed.

    Returns:
        ``{"format", "version", "iou_type", "iou_threshold", "categories": [...]}`` with one entry
        per ground-truth category, in contiguous-label order (categories sorted by id, as
        :class:`tensormask.data.CocoDataset` numbers them): ``{"label", "category_id", "name",
        "num_gt" (non-crowd), "num_detections", "num_ignored" (matched to crowd), "recall" (at the
        lowest score; null without GT), "knots": [[score, precision], ...] (increasing score)}``.
    """
    status, coco = match_detections(gt_json, results, iou_type, iou_threshold)
    cat_ids = sorted(coco.getCatIds())
    scores_by_cat: dict[int, list[float]] = defaultdict(list)
    tp_by_cat: dict[int, list[int]] = defaultdict(list)
    dets, ignored = defaultdict(int), defaultdict(int)
    for r, st in zip(results, status):
        cat = r["category_id"]
        dets[cat] += 1
        if st < 0:
            ignored[cat] += 1
            continue
        scores_by_cat[cat].append(float(r["score"]))
        tp_by_cat[cat].append(int(st))
    categories = []
    for label, cat in enumerate(cat_ids):
        num_gt = sum(not a.get("iscrowd", 0) for a in coco.loadAnns(coco.getAnnIds(catIds=[cat])))
        tps = int(sum(tp_by_cat[cat]))
        categories.append({
            "label": label,
            "category_id": int(cat),
            "name": str(coco.cats[cat].get("name", f"class_{label}")),
            "num_gt": num_gt,
            "num_detections": dets[cat],
            "num_ignored": ignored[cat],
            "recall": tps / num_gt if num_gt else None,
            "knots": pr_knots(np.array(scores_by_cat[cat]), np.array(tp_by_cat[cat])),
        })
    return {"format": FORMAT, "version": VERSION, "iou_type": iou_type, "iou_threshold": float(iou_threshold),
            "categories": categories}


def calibrate_scores(scores, labels, calibration: dict[str, Any]) -> np.ndarray:
    """Calibrated precision of each detection: piecewise-linear interpolation of its category's
    (score, precision) knots, clamped outside them; 0 for a label without knots or unknown to the
    calibration.

    Args:
        scores: ``(N,)`` raw scores (array-like or tensor).
        labels: ``(N,)`` contiguous labels (``0..K-1``, the model's output labels).
    Returns:
        ``(N,)`` float64 numpy array, non-decreasing in the score within a category.
    """
    scores = _to_numpy(scores).astype(np.float64).reshape(-1)
    labels = _to_numpy(labels).astype(np.int64).reshape(-1)
    if scores.shape != labels.shape:
        raise ValueError(f"calibrate_scores: {scores.size} scores but {labels.size} labels")
    out = np.zeros(scores.shape, dtype=np.float64)
    knots = {int(c["label"]): c["knots"] for c in calibration["categories"]}
    for label in np.unique(labels):
        k = knots.get(int(label))
        if not k:
            continue
        sel = labels == label
        xs, ys = np.array(k, dtype=np.float64).T
        out[sel] = np.interp(scores[sel], xs, ys)
    return out


def score_at_precision(knots: list[list[float]], precision: float) -> float | None:
    """The lowest raw score whose calibrated precision is ≥ ``precision``, within the knots' score
    range (the first knot's score when every score qualifies); None if it is never reached."""
    if not knots or knots[-1][1] < precision:
        return None
    for k, (s, p) in enumerate(knots):
        if p >= precision:
            if k == 0:
                return float(s)
            (s0, p0) = knots[k - 1]
            return float(s0 + (precision - p0) / (p - p0) * (s - s0))
    return None  # pragma: no cover - unreachable


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, any device
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def validate_calibration(cal: Any) -> None:
    """Raise ``ValueError`` (with the reason) unless ``cal`` is a well-formed calibration."""
    if not isinstance(cal, dict) or cal.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} file (missing or wrong 'format')")
    if cal.get("version") != VERSION:
        raise ValueError(f"unsupported version {cal.get('version')!r} (expected {VERSION})")
    cats = cal.get("categories")
    if not isinstance(cats, list):
        raise ValueError("'categories' must be a list")
    seen = set()
    for i, c in enumerate(cats):
        if not isinstance(c, dict) or not isinstance(c.get("label"), int) or not isinstance(c.get("name"), str):
            raise ValueError(f"categories[{i}] needs an integer 'label' and a string 'name'")
        if c["label"] in seen:
            raise ValueError(f"categories[{i}]: duplicate label {c['label']}")
        seen.add(c["label"])
        knots = c.get("knots")
        if not isinstance(knots, list):
            raise ValueError(f"categories[{i}] ({c['name']}): 'knots' must be a list")
        prev = None
        for k in knots:
            if (not isinstance(k, list) or len(k) != 2
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in k)):
                raise ValueError(f"categories[{i}] ({c['name']}): a knot must be [score, precision], got {k!r}")
            if not 0.0 <= k[1] <= 1.0:
                raise ValueError(f"categories[{i}] ({c['name']}): precision {k[1]} outside [0, 1]")
            if prev is not None and (k[0] <= prev[0] or k[1] < prev[1]):
                raise ValueError(f"categories[{i}] ({c['name']}): knots must have increasing scores and "
                                 "non-decreasing precision")
            prev = k


def save_calibration(cal: dict[str, Any], path: str) -> None:
    """Write ``cal`` as JSON, atomically (temporary file in the same folder + ``os.replace``)."""
    validate_calibration(cal)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    write_json(cal, path, indent=1)


def load_calibration(path: str) -> dict[str, Any]:
    """Read a calibration written by :func:`save_calibration`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not valid JSON or not a well-formed calibration (the message names it).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"calibration file not found: {path}")
    with open(path, "rb") as f:
        cal = loads_json(f.read(), f"malformed calibration file {path}")  # also: not UTF-8, nested too deeply
    try:
        validate_calibration(cal)
    except ValueError as e:
        raise ValueError(f"malformed calibration file {path}: {e}") from e
    return cal
