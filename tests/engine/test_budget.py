"""Wall-clock budgets (engine/budget.py) and the demo's ``--minutes`` (demo.fit_to_budget)."""

from __future__ import annotations

import os

import pytest

from tensormask import demo
from tensormask.config import SolverConfig
from tensormask.engine import budget

from .conftest import tiny_config


def test_scale_schedule_scales_steps_and_warmup():
    solver = SolverConfig(max_iter=2000, steps=(1620, 1880), warmup_iters=50)
    assert budget.scale_schedule(solver, 1000) == {"max_iter": 1000, "steps": [810, 940], "warmup_iters": 25}
    # steps stay inside [1, iters-1] and merge when they collide
    assert budget.scale_schedule(solver, 3) == {"max_iter": 3, "steps": [2], "warmup_iters": 0}
    assert budget.scale_schedule(solver, 1) == {"max_iter": 1, "steps": [], "warmup_iters": 0}


@pytest.mark.parametrize("seconds,per_iter,expected", [(100.0, 1.0, 50), (30.0, 1.0, 30), (29.9, 1.0, 29),
                                                        (-5.0, 1.0, 0), (10.0, 0.0, 50)])
def test_iterations_within(seconds, per_iter, expected):
    assert budget.iterations_within(seconds, per_iter, 50) == expected


def test_seconds_per_iteration_trains_in_scratch_and_removes_it(shapes_dataset, tmp_path):
    cfg = tiny_config(shapes_dataset, tmp_path / "unused")
    scratch = tmp_path / "scratch"
    t = budget.seconds_per_iteration(cfg, str(scratch), timed_iters=2)
    assert 0 < t < 60
    assert not scratch.exists()


def test_time_training_keeps_the_weights(shapes_dataset, tmp_path):
    cfg = tiny_config(shapes_dataset, tmp_path / "unused")
    t, weights = budget.time_training(cfg, str(tmp_path / "run"), timed_iters=1)
    assert t > 0 and os.path.isfile(weights)
    with pytest.raises(ValueError, match="timed_iters"):
        budget.time_training(cfg, str(tmp_path / "run0"), timed_iters=0)


def test_demo_budget_shortens_the_schedule_only_when_needed(shapes_dataset, tmp_path, monkeypatch):
    cfg = tiny_config(shapes_dataset, tmp_path / "unused", max_iter=1000, steps=[810, 940], warmup_iters=50)
    monkeypatch.setattr(budget, "seconds_per_iteration", lambda c, scratch, n: 0.5)
    roomy = demo.fit_to_budget(cfg, 10_000.0, str(tmp_path / "t1"))
    assert roomy.solver.max_iter == 1000 and roomy.solver.steps == (810, 940)
    tight = demo.fit_to_budget(cfg, demo.EVAL_RESERVE_S + 105.5, str(tmp_path / "t2"))
    assert tight.solver.max_iter == 204  # 105.5 s / (0.5 s × BUDGET_MARGIN 1.03) = 204.9
    assert tight.solver.steps == (165, 192) and tight.solver.warmup_iters == 10
    with pytest.raises(ValueError, match="--minutes"):
        demo.fit_to_budget(cfg, 1.0, str(tmp_path / "t3"))
