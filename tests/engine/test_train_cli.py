"""`tensormask train`: the --minutes budget, TensorBoard event files beside metrics.jsonl (when the
package is installed), and one "final checkpoint" line from the main process only under torchrun."""

from __future__ import annotations

import glob
import json
import os

import pytest

from tensormask.config import save_config
from tensormask.engine import event_log
from tensormask.engine.trainer import train
from tensormask.train import main as train_main

from .conftest import tiny_config


def event_files(folder) -> list[str]:
    return glob.glob(os.path.join(str(folder), "events.out.tfevents.*"))


@pytest.mark.skipif(not event_log.tensorboard_available(), reason="tensorboard is not installed")
def test_tensorboard_event_files_hold_the_metrics(shapes_dataset, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_config(shapes_dataset, tmp_path / "run", max_iter=3, checkpoint_period=0)
    train(cfg, progress=False)
    assert len(event_files(cfg.output_dir)) == 1
    acc = EventAccumulator(cfg.output_dir)
    acc.Reload()
    with open(os.path.join(cfg.output_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    for key in ("loss", "loss_cls", "loss_box", "loss_mask", "lr"):
        events = acc.Scalars(key)
        assert [e.step for e in events] == [r["iteration"] for r in records], key
        assert [e.value for e in events] == pytest.approx([r[key] for r in records], rel=1e-6), key
    assert "time" not in acc.Tags()["scalars"] and "iteration" not in acc.Tags()["scalars"]


def test_no_event_files_without_tensorboard(shapes_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(event_log, "tensorboard_available", lambda: False)
    cfg = tiny_config(shapes_dataset, tmp_path / "run", max_iter=1, checkpoint_period=0)
    train(cfg, progress=False)
    assert event_files(cfg.output_dir) == [] and os.path.exists(os.path.join(cfg.output_dir, "metrics.jsonl"))


def test_event_log_skips_non_scalars(tmp_path, monkeypatch):
    written = []

    class FakeWriter:
        def add_scalar(self, key, value, step):
            written.append((key, value, step))

        def close(self):
            pass

    log = event_log.EventLog(str(tmp_path), enabled=False)
    log.writer = FakeWriter()
    log.write({"iteration": 7, "time": 1.5, "loss": 0.5, "eval/segm_AP": 12.0, "flag": True, "name": "x",
               "bad": float("nan")})
    assert written == [("loss", 0.5, 7), ("eval/segm_AP", 12.0, 7)]


def write_config(cfg, tmp_path) -> str:
    path = str(tmp_path / "config.yaml")
    save_config(cfg, path)
    return path


def test_minutes_is_the_training_time_limit(shapes_dataset, tmp_path, monkeypatch, capsys):
    import tensormask.engine.trainer as trainer

    cfg = tiny_config(shapes_dataset, tmp_path / "run", max_iter=2, checkpoint_period=0)
    seen = {}
    real_train = trainer.train

    def spy(cfg, resume=False, progress=True, time_limit_s=None):
        seen["limit"] = time_limit_s
        return real_train(cfg, resume=resume, progress=progress, time_limit_s=time_limit_s)

    monkeypatch.setattr(trainer, "train", spy)
    assert train_main(["--config", write_config(cfg, tmp_path), "--minutes", "1.5", "--no-progress"]) == 0
    assert seen["limit"] == pytest.approx(90.0)
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith("model_0000002.pth")
    assert train_main(["--config", write_config(cfg, tmp_path), "--no-progress", "--resume"]) == 0
    assert seen["limit"] is None  # 0 (the default) = no budget


def test_only_the_main_process_prints_the_final_checkpoint(shapes_dataset, tmp_path, monkeypatch, capsys):
    """torchrun rank 1: cleanup() destroys the process group, after which every process reports rank
    0; the rank must be asked before. Modelled with a fake group that cleanup() destroys."""
    import tensormask.engine.trainer as trainer
    from tensormask.engine import distributed

    group = {"rank": None}  # None: no process group

    def fake_train(cfg, resume=False, progress=True, time_limit_s=None):
        group["rank"] = 1  # init_from_env joined a group as rank 1; non-main ranks return ""
        return ""

    def fake_cleanup():
        group["rank"] = None

    monkeypatch.setattr(trainer, "train", fake_train)
    monkeypatch.setattr(distributed, "cleanup", fake_cleanup)
    monkeypatch.setattr(distributed, "is_main_process", lambda: (group["rank"] or 0) == 0)
    cfg = tiny_config(shapes_dataset, tmp_path / "run")
    assert train_main(["--config", write_config(cfg, tmp_path), "--no-progress"]) == 0
    assert "final checkpoint" not in capsys.readouterr().out
