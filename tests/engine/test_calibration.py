"""Score → precision calibration (paper A.5): exact knots on hand-built cases, crowd handling, agreement
with pycocotools' matching, monotonicity, save/load, and the calibrate → predict CLI path."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools import mask as mask_util

from tensormask.calibrate import main as calibrate_main
from tensormask.config import merge
from tensormask.engine.calibration import (
    calibrate_scores,
    compute_calibration,
    default_calibration_path,
    load_calibration,
    match_detections,
    save_calibration,
    score_at_precision,
)
from tensormask.engine.trainer import train
from tensormask.predict import main as predict_main

from .conftest import tiny_config

H, W = 20, 40


def rect(y0, y1, x0, x1, h=H, w=W):
    """A boolean mask with rows y0..y1-1 and columns x0..x1-1 set."""
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def rle(m):
    r = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
    r["counts"] = r["counts"].decode()
    return r


def xywh(m):
    ys, xs = np.nonzero(m)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def gt_dict(images, cats=((1, "thing"),)):
    """``images``: {image_id: [(mask, category_id, iscrowd), ...]}."""
    anns, aid = [], 0
    for img, objs in images.items():
        for m, cat, crowd in objs:
            aid += 1
            anns.append({"id": aid, "image_id": img, "category_id": cat, "iscrowd": int(crowd),
                         "segmentation": rle(m), "area": float(m.sum()), "bbox": xywh(m)})
    return {"images": [{"id": i, "width": W, "height": H, "file_name": f"{i}.png"} for i in images],
            "annotations": anns, "categories": [{"id": c, "name": n} for c, n in cats]}


def det(img, m, score, cat=1):
    return {"image_id": img, "category_id": cat, "score": score, "segmentation": rle(m), "bbox": xywh(m)}


# Two images, two 10x10 GT squares each. Detections (score: outcome at IoU 0.5):
#   0.9 A exactly: TP | 0.8 A again: FP (A taken) | 0.7 C exactly: TP
#   0.6 left half of D (IoU 0.5, counts as ≥ 0.5): TP | 0.5 4 columns of B (IoU 0.4): FP | 0.4 B exactly: TP
A, B = rect(0, 10, 0, 10), rect(10, 20, 10, 20)
C, D = rect(0, 10, 20, 30), rect(10, 20, 30, 40)
SIMPLE_GT = {1: [(A, 1, 0), (B, 1, 0)], 2: [(C, 1, 0), (D, 1, 0)]}
SIMPLE_DETS = [det(1, A, 0.9), det(1, A, 0.8), det(2, C, 0.7), det(2, rect(10, 20, 30, 35), 0.6),
               det(1, rect(10, 20, 10, 14), 0.5), det(1, B, 0.4)]
# precision at each score, high → low: 1/1, 1/2, 2/3, 3/4, 3/5, 4/6; envelope (max over lower scores):
# 1, 3/4, 3/4, 3/4, 2/3, 2/3; knots by increasing score, (0.7, 3/4) dropped inside a flat run.
SIMPLE_KNOTS = [[0.4, 2 / 3], [0.5, 2 / 3], [0.6, 0.75], [0.8, 0.75], [0.9, 1.0]]


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_exact_knots_and_interpolation(iou_type, tmp_path):
    gt = gt_dict(SIMPLE_GT)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    dets = SIMPLE_DETS[::-1]  # input order does not matter
    status, _ = match_detections(str(path), dets, iou_type)
    assert status.tolist() == [1, 0, 1, 1, 0, 1][::-1]
    cal = compute_calibration(str(path), dets, iou_type=iou_type)
    assert cal["iou_type"] == iou_type and cal["iou_threshold"] == 0.5
    (c,) = cal["categories"]
    assert (c["label"], c["category_id"], c["name"]) == (0, 1, "thing")
    assert (c["num_gt"], c["num_detections"], c["num_ignored"], c["recall"]) == (4, 6, 0, 1.0)
    assert np.allclose(c["knots"], SIMPLE_KNOTS) and len(c["knots"]) == len(SIMPLE_KNOTS)
    scores = [1.0, 0.95, 0.9, 0.85, 0.7, 0.55, 0.45, 0.4, 0.1]
    expected = [1.0, 1.0, 1.0, 0.875, 0.75, 2 / 3 + 0.5 * (0.75 - 2 / 3), 2 / 3, 2 / 3, 2 / 3]
    assert np.allclose(calibrate_scores(scores, [0] * len(scores), cal), expected)
    # unknown label and the stricter threshold
    assert calibrate_scores([0.9], [3], cal).tolist() == [0.0]
    strict = compute_calibration(gt, dets, iou_type=iou_type, iou_threshold=0.51)["categories"][0]
    assert strict["recall"] == 0.75  # the half-overlapping 0.6 detection is now a false positive


def test_tied_scores_enter_together():
    dets = [det(1, A, 0.9), det(1, rect(0, 3, 30, 40), 0.5), det(1, B, 0.5)]  # FP and TP at the same score
    (c,) = compute_calibration(gt_dict(SIMPLE_GT), dets)["categories"]
    assert np.allclose(c["knots"], [[0.5, 2 / 3], [0.9, 1.0]])


def test_crowd_regions_are_ignored():
    crowd = rect(0, 20, 0, 20)  # covers the GT square A
    gt = gt_dict({1: [(A, 1, 0), (crowd, 1, 1)]})
    dets = [det(1, A, 0.9),                    # TP (the non-crowd GT is preferred)
            det(1, A, 0.8),                    # duplicate inside the crowd region: ignored, not FP
            det(1, rect(10, 20, 10, 20), 0.7),  # inside the crowd region only: ignored
            det(1, rect(0, 10, 30, 40), 0.6)]  # outside everything: FP
    status, _ = match_detections(gt, dets)
    assert status.tolist() == [1, -1, -1, 0]
    (c,) = compute_calibration(gt, dets)["categories"]
    assert (c["num_gt"], c["num_detections"], c["num_ignored"]) == (1, 4, 2)
    assert np.allclose(c["knots"], [[0.6, 0.5], [0.9, 1.0]])


def random_case(rng, n_images=4, n_cats=2):
    images, dets = {}, []
    for img in range(1, n_images + 1):
        objs = []
        for _ in range(rng.integers(0, 5)):
            y, x = rng.integers(0, H - 4), rng.integers(0, W - 4)
            m = rect(y, min(H, y + rng.integers(4, 12)), x, min(W, x + rng.integers(4, 12)))
            objs.append((m, int(rng.integers(1, n_cats + 1)), int(rng.random() < 0.2)))
            for _ in range(rng.integers(0, 4)):  # jittered detections near it
                dy, dx = rng.integers(-1, 2, size=2)
                dets.append(det(img, np.roll(m, (dy, dx), axis=(0, 1)), float(rng.random()),
                                objs[-1][1] if rng.random() < 0.8 else int(rng.integers(1, n_cats + 1))))
        for _ in range(rng.integers(0, 3)):  # background detections
            y, x = rng.integers(0, H - 4), rng.integers(0, W - 4)
            dets.append(det(img, rect(y, y + 4, x, x + 4), float(rng.random()), int(rng.integers(1, n_cats + 1))))
        images[img] = objs
    return gt_dict(images, cats=[(c, f"c{c}") for c in range(1, n_cats + 1)]), dets


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_matching_agrees_with_cocoeval(iou_type):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    for _ in range(5):
        gt, dets = random_case(rng)
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO()
            coco.dataset = gt
            coco.createIndex()
            ev = COCOeval(coco, coco.loadRes(dets), iou_type)
            ev.params.iouThrs = np.array([0.5])
            ev.params.areaRng, ev.params.areaRngLbl, ev.params.maxDets = [[0, 1e10]], ["all"], [10_000]
            ev.evaluate()
        expected = np.zeros(len(dets), dtype=int)
        for e in ev.evalImgs:
            if e is None:
                continue
            for did, m, ig in zip(e["dtIds"], e["dtMatches"][0], e["dtIgnore"][0]):
                expected[did - 1] = -1 if ig else int(m > 0)  # loadRes numbers the results 1..N
        status, _ = match_detections(gt, dets, iou_type)
        assert status.tolist() == expected.tolist()


def test_calibration_is_monotone():
    rng = np.random.default_rng(1)
    gt, dets = random_case(rng, n_images=8)
    cal = compute_calibration(gt, dets)
    grid = np.linspace(-0.1, 1.1, 241)
    for c in cal["categories"]:
        k = np.array(c["knots"])
        assert len(k) > 1 and np.all(np.diff(k[:, 0]) > 0) and np.all(np.diff(k[:, 1]) >= 0)
        assert np.all((k[:, 1] >= 0) & (k[:, 1] <= 1))
        p = calibrate_scores(grid, np.full(grid.shape, c["label"]), cal)
        assert np.all(np.diff(p) >= -1e-12)
        s = score_at_precision(c["knots"], 0.5 * (k[0, 1] + k[-1, 1]))
        assert s is not None and calibrate_scores([s], [c["label"]], cal)[0] == pytest.approx(0.5 * (k[0, 1] + k[-1, 1]))
    assert score_at_precision([[0.2, 0.3], [0.5, 0.4]], 0.6) is None


def test_save_load_round_trip_and_malformed_files(tmp_path):
    cal = compute_calibration(gt_dict(SIMPLE_GT), SIMPLE_DETS)
    path = str(tmp_path / "w.pth.calibration.json")
    assert default_calibration_path(str(tmp_path / "w.pth")) == path
    save_calibration(cal, path)
    assert load_calibration(path) == cal
    assert [p.name for p in tmp_path.iterdir()] == ["w.pth.calibration.json"]  # no temporary left behind
    bad = tmp_path / "bad.json"
    for text in ["{not json", json.dumps({"format": "other"}),
                 json.dumps({**cal, "categories": [{**cal["categories"][0], "knots": [[0.5, 0.9], [0.4, 0.95]]}]})]:
        bad.write_text(text)
        with pytest.raises(ValueError, match="malformed calibration file .*bad.json"):
            load_calibration(str(bad))
    with pytest.raises(FileNotFoundError, match="calibration file not found"):
        load_calibration(str(tmp_path / "missing.json"))


@pytest.fixture(scope="module")
def trained(shapes_dataset, tmp_path_factory):
    # stored in the checkpoint: predict keeps the barely trained model's low scores, 10 per image
    cfg = merge(tiny_config(shapes_dataset, tmp_path_factory.mktemp("run"), max_iter=2),
                {"model": {"inference": {"score_thresh": 0.0, "detections_per_image": 10}}})
    return cfg, train(cfg, progress=False)


def test_calibrate_then_predict_cli(trained, shapes_dataset, tmp_path, capsys):
    _, weights = trained
    images = shapes_dataset / "val" / "images"
    out = tmp_path / "pred"
    args = [str(images), "--weights", weights, "--out", str(out), "--device", "cpu", "--calibrated-threshold", "0.0"]
    assert predict_main(args) == 1  # not calibrated yet
    assert "run `tensormask calibrate --weights" in capsys.readouterr().err
    assert calibrate_main(["--weights", weights, "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "score@P=0.6" in printed and default_calibration_path(weights) in printed
    cal = load_calibration(default_calibration_path(weights))
    assert [c["name"] for c in cal["categories"]] == ["disk", "ring", "star", "triangle", "crescent"]
    assert sum(c["num_detections"] for c in cal["categories"]) > 0
    assert predict_main(args) == 0
    preds = json.loads((out / "predictions.json").read_text())
    assert preds and all(0.0 <= p["calibrated_score"] <= 1.0 and "score" in p for p in preds)
    # an explicit calibration file; a threshold above every calibrated score keeps nothing
    moved = str(tmp_path / "cal.json")
    save_calibration(cal, moved)
    first = str(sorted(images.iterdir())[0])
    assert predict_main([first] + args[1:-1] + ["0.99", "--calibration", moved]) == 0
    top = max(p["calibrated_score"] for p in preds)
    kept = json.loads((out / "predictions.json").read_text())
    assert all(p["calibrated_score"] >= 0.99 for p in kept) and (kept or top < 0.99)
