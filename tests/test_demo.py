"""``tensormask demo`` end to end, shrunk: a few images, two iterations, no time budget."""

from __future__ import annotations

import json
import os

from tensormask import demo


def test_demo_end_to_end_writes_metrics_pictures_and_calibration(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = demo.main(["--out", str(out), "--train-images", "4", "--val-images", "2", "--pictures", "2",
                    "--minutes", "0", "solver.max_iter=2", "solver.steps=[1]", "solver.warmup_iters=1",
                    "solver.checkpoint_period=0", "data.num_workers=0"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "mask AP = " in text and "box AP = " in text and "prediction pictures:" in text
    assert "calibrated score (precision) ≥ 0.6" in text
    assert sorted(f for f in os.listdir(out / "predictions") if f.endswith(".png")) == ["000001.png", "000002.png"]
    weights = next(p for p in (out / "run").iterdir() if p.name.endswith(".pth"))
    calibration = json.loads((out / "run" / (weights.name + ".calibration.json")).read_text())
    assert len(calibration["categories"]) == 5
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert set(metrics) >= {"segm", "bbox"}


def test_demo_raw_threshold_skips_the_calibration(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = demo.main(["--out", str(out), "--train-images", "2", "--val-images", "1", "--pictures", "1",
                    "--minutes", "0", "--threshold", "0.9", "solver.max_iter=1", "solver.steps=[]",
                    "solver.warmup_iters=0", "data.num_workers=0"])
    assert rc == 0
    assert "raw score ≥ 0.9" in capsys.readouterr().out
    assert not any(p.name.endswith(".calibration.json") for p in (out / "run").iterdir())
