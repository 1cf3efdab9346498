"""COCO evaluation path: ground truth fed as predictions scores AP = 100 through the whole
result-writing path, the results JSON loads with pycocotools, and the CLI tools work end to end."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from tensormask.data import CocoDataset
from tensormask.engine.evaluator import coco_evaluate, detections_to_coco, write_json
from tensormask.engine.trainer import train
from tensormask.eval import main as eval_main
from tensormask.predict import main as predict_main

from .conftest import tiny_config


def test_ground_truth_as_predictions_gives_ap_100(shapes_dataset, tmp_path):
    json_path = str(shapes_dataset / "val" / "annotations.json")
    ds = CocoDataset(json_path, str(shapes_dataset / "val" / "images"), on_error="raise")
    results = []
    for i in range(len(ds)):
        s = ds[i]
        det = {"boxes": s.boxes, "scores": torch.ones(len(s.boxes)), "labels": s.labels, "masks": s.masks}
        results += detections_to_coco(det, s.image_id, ds.contiguous_to_category_id)
    assert results
    path = str(tmp_path / "results.json")
    write_json(results, path)
    with open(path) as f:
        loaded = json.load(f)
    COCO(json_path).loadRes(loaded)  # the written file is a valid COCO results file
    metrics = coco_evaluate(json_path, loaded)
    assert metrics["segm"]["AP"] == pytest.approx(100.0)
    assert metrics["bbox"]["AP"] == pytest.approx(100.0)


@pytest.fixture(scope="module")
def trained(shapes_dataset, tmp_path_factory):
    cfg = tiny_config(shapes_dataset, tmp_path_factory.mktemp("run"), max_iter=2)
    return cfg, train(cfg, progress=False)


def test_eval_cli_writes_results_and_metrics(trained, tmp_path, capsys):
    cfg, weights = trained
    out = tmp_path / "eval"
    assert eval_main(["--weights", weights, "--output-dir", str(out), "--device", "cpu",
                      "model.inference.score_thresh=0.0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"segm", "bbox"} and "AP" in metrics["segm"]
    results = json.loads((out / "coco_results.json").read_text())
    assert results and {"segmentation", "bbox", "score", "category_id", "image_id"} <= set(results[0])
    assert "| mask |" in capsys.readouterr().out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_eval_on_cuda_gives_the_cpu_results(trained, tmp_path):
    cfg, weights = trained
    out = {}
    for device in ("cpu", "cuda"):
        assert eval_main(["--weights", weights, "--output-dir", str(tmp_path / device), "--device", device,
                          "model.inference.score_thresh=0.0"]) == 0
        out[device] = json.loads((tmp_path / device / "metrics.json").read_text())
    for task in ("segm", "bbox"):  # float32 on both devices: summation orders differ, AP barely
        assert out["cuda"][task]["AP"] == pytest.approx(out["cpu"][task]["AP"], abs=0.5), task


def test_predict_writes_readable_pictures_and_skips_bad_images(trained, shapes_dataset, tmp_path, capsys):
    _, weights = trained
    images = shapes_dataset / "val" / "images"
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "pred"
    assert predict_main([str(images), str(bad), "--weights", weights, "--out", str(out), "--device", "cpu",
                         "--threshold", "0.0"]) == 0
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == len(os.listdir(images))
    first = np.asarray(Image.open(pngs[0]))
    original = np.asarray(Image.open(images / pngs[0].name))
    assert first.shape == original.shape and first.dtype == np.uint8
    assert json.loads((out / "predictions.json").read_text()) is not None
    assert "skipping" in capsys.readouterr().err


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert predict_main([str(tmp_path / "nope.png"), "--weights", str(tmp_path / "w.pth"), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0]
    assert eval_main(["--weights", str(tmp_path / "missing.pth")]) == 1
    assert "weights file not found" in capsys.readouterr().err


def _eval_worker(rank, world, port, weights, cfg, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from tensormask.engine import distributed
    from tensormask.engine.checkpoint import load_inference_model
    from tensormask.engine.evaluator import evaluate

    device = distributed.init_from_env("cpu")
    try:
        model, _, _ = load_inference_model(weights, device)
        model.cfg.inference.score_thresh, model.cfg.inference.detections_per_image = 0.0, 10
        evaluate(model, cfg.data.val_json, cfg.data.val_images, out, cfg.data.test_min_size, cfg.data.test_max_size,
                 device, progress=False)
    finally:
        distributed.cleanup()


def test_sharded_evaluation_over_two_processes_equals_one(trained, tmp_path):
    import torch.multiprocessing as mp

    from tensormask.engine.checkpoint import load_inference_model
    from tensormask.engine.evaluator import evaluate

    from .test_trainer import _free_port

    cfg, weights = trained
    model, _, _ = load_inference_model(weights, "cpu")
    model.cfg.inference.score_thresh, model.cfg.inference.detections_per_image = 0.0, 10  # untrained: keep some
    single = evaluate(model, cfg.data.val_json, cfg.data.val_images, str(tmp_path / "one"), cfg.data.test_min_size,
                      cfg.data.test_max_size, torch.device("cpu"), progress=False)
    mp.start_processes(_eval_worker, args=(2, _free_port(), weights, cfg, str(tmp_path / "two")), nprocs=2,
                       join=True, start_method="spawn")
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    for iou_type in single:
        assert two[iou_type] == pytest.approx(single[iou_type])

    def key(r):
        return (r["image_id"], r["category_id"], round(r["score"], 5), r["segmentation"]["counts"])

    one_results = json.loads((tmp_path / "one" / "coco_results.json").read_text())
    two_results = json.loads((tmp_path / "two" / "coco_results.json").read_text())
    assert one_results and sorted(map(key, one_results)) == sorted(map(key, two_results))
