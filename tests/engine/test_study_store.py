"""The study's committed records (``tensormask ablate --record``): a study continues from them on a
fresh clone, several processes share one study through claims, the AP curve and its last-fifth gain."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tensormask.engine import ablation, study_store
from tensormask.engine.ablation import compose, read_overlay, resolve_variants


def _fake_run(trained):
    def run(variant, cfg, study_dir, log=print):
        trained.append((variant.name, cfg.seed))
        rec = {"variant": variant.name, "seed": cfg.seed, "iters": cfg.solver.max_iter, "train_seconds": 1.0,
               "infer_seconds_per_image": 0.1, "mask": {k: 10.0 + cfg.seed for k in ablation.METRICS},
               "box": {k: 1.0 for k in ablation.METRICS},
               "curve": [{"iteration": i, "mask_AP": float(i), "box_AP": 0.0} for i in (4, 8, 10)]}
        os.makedirs(cfg.output_dir, exist_ok=True)
        ablation.write_json(rec, os.path.join(cfg.output_dir, ablation.RUN_FILE))
        return rec
    return run


def test_record_folder_lets_a_fresh_clone_continue(shapes_dataset, tmp_path, monkeypatch):
    trained: list = []
    monkeypatch.setattr(ablation, "run_one", _fake_run(trained))
    variants = resolve_variants(["table1"])
    train_json, val_json = ablation.resolve_dataset(str(shapes_dataset), None)
    record = str(tmp_path / "record")
    ablation.run_study(variants, train_json, val_json, str(tmp_path / "a"), seeds=2, iters=10, record_dir=record)
    assert sorted(trained) == [("simple_aligned", 0), ("simple_aligned", 1), ("simple_natural", 0),
                               ("simple_natural", 1)]
    for v in ("simple_natural", "simple_aligned"):
        for seed in (0, 1):
            rec = json.load(open(study_store.record_path(record, v, seed)))
            assert rec["seed"] == seed and rec["curve"][-1]["iteration"] == 10
    assert os.path.isfile(os.path.join(record, "results.md")) and os.path.isfile(os.path.join(record, "curves.png"))
    conv = open(os.path.join(record, "convergence.md")).read()
    assert "| simple_natural | 1 | 10 | 8.0 | 10.0 | +2.0 |" in conv  # curve 4, 8, 10: AP at 8 (80%) and at 10

    # a fresh clone: no study folder, only the records; one record removed → only that run trains again
    os.unlink(study_store.record_path(record, "simple_aligned", 1))
    trained.clear()
    summary = ablation.run_study(variants, train_json, val_json, str(tmp_path / "b"), seeds=2, iters=10,
                                 record_dir=record)
    assert trained == [("simple_aligned", 1)]
    assert summary["meta"]["finished_runs"] == 4
    assert summary["variants"]["simple_natural"]["stats"]["mask_AP"][0] == pytest.approx(10.5)
    with pytest.raises(ValueError, match="was run with 10 iterations"):
        ablation.run_study(variants, train_json, val_json, str(tmp_path / "c"), seeds=2, iters=20, record_dir=record)


def test_runs_claimed_by_a_live_process_are_left_to_it(shapes_dataset, tmp_path, monkeypatch):
    trained: list = []
    monkeypatch.setattr(ablation, "run_one", _fake_run(trained))
    variants = resolve_variants(["table1"])
    train_json, val_json = ablation.resolve_dataset(str(shapes_dataset), None)
    out = tmp_path / "study"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        busy = out / "simple_natural" / "seed0"
        busy.mkdir(parents=True)
        (busy / study_store.CLAIM_FILE).write_text(json.dumps({"host": os.uname().nodename, "pid": other.pid}))
        ablation.run_study(variants, train_json, val_json, str(out), seeds=1, iters=3)
        assert trained == [("simple_aligned", 0)]
    finally:
        other.kill()
        other.wait()
    trained.clear()  # the holder is gone: its claim is stale and taken over
    ablation.run_study(variants, train_json, val_json, str(out), seeds=1, iters=3)
    assert trained == [("simple_natural", 0)]
    assert not (busy / study_store.CLAIM_FILE).exists()  # released after the run


def test_claim_is_exclusive_and_reentrant(tmp_path):
    run = str(tmp_path / "r")
    assert study_store.claim(run) and study_store.claim(run)  # this process: again fine
    study_store.release(run)
    assert not os.path.exists(os.path.join(run, study_store.CLAIM_FILE))


def test_compose_scales_the_evaluation_period(shapes_dataset):
    data = ablation.dataset_overrides(*ablation.resolve_dataset(str(shapes_dataset), None))
    overlay = read_overlay(os.path.join(ablation.ABLATION_DIR, "cpu-demo.yaml"))
    v = resolve_variants(["bipyramid_15"])[0]
    cfg = compose(v, overlay, data, 4000, 0, "/tmp/x")  # the overlay: 500 of 5000 → 400 of 4000
    assert cfg.solver.eval_period == 400 and cfg.solver.max_iter == 4000
    assert list(cfg.solver.steps) == [2600, 3000]  # 65% and 75%: the last fifth runs at the final LR


def test_curve_and_last_fifth_gain(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    lines = [{"iteration": 5, "loss": 1.0}, {"iteration": 10, "eval/segm_AP": 20.0, "eval/bbox_AP": 25.0},
             {"iteration": 40, "eval/segm_AP": 41.0, "eval/bbox_AP": 45.0},
             {"iteration": 50, "eval/segm_AP": 40.5, "eval/bbox_AP": 44.0}]
    metrics.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    curve = study_store.read_curve(str(metrics))
    assert [p["iteration"] for p in curve] == [10, 40, 50] and curve[0]["box_AP"] == 25.0
    rec = {"variant": "v", "seed": 0, "iters": 50, "curve": curve}
    assert study_store.last_fifth_gain(rec) == pytest.approx(40.5 - 41.0)  # end − AP at 80% (iteration 40)
    assert study_store.last_fifth_gain({**rec, "iters": 60}) is None  # the curve does not reach the end
    assert study_store.plot_curves([rec], str(tmp_path / "c.png")) and (tmp_path / "c.png").stat().st_size > 0


def test_a_broken_record_is_named(tmp_path):
    bad = tmp_path / "seed0.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="seed0.json: not a readable run record"):
        study_store.read_record(str(bad))
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a run record"):
        study_store.read_record(str(bad))


def test_code_version_names_the_commit():
    v = study_store.code_version()
    assert v is None or (len(v.split("+")[0]) >= 7 and all(c in "0123456789abcdef" for c in v.split("+")[0]))
