"""Wall-clock budgets (engine/budget.py), the trainer's time limit and the demo's ``--minutes``."""

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


def test_time_training_keeps_the_weights(shapes_dataset, tmp_path):
    cfg = tiny_config(shapes_dataset, tmp_path / "unused")
    t, weights = budget.time_training(cfg, str(tmp_path / "run"), timed_iters=1)
    assert t > 0 and os.path.isfile(weights)
    with pytest.raises(ValueError, match="timed_iters"):
        budget.time_training(cfg, str(tmp_path / "run0"), timed_iters=0)


def test_shorten_schedule_scales_steps_after_what_is_done():
    solver = SolverConfig(max_iter=2600, steps=(2106, 2444), warmup_iters=50)
    assert budget.shorten_schedule(solver, 1300, 50) == {"max_iter": 1300, "steps": [1053, 1222]}
    # no step before the iterations already trained; none at all when nothing is left
    assert budget.shorten_schedule(solver, 60, 50) == {"max_iter": 60, "steps": [50, 56]}
    assert budget.shorten_schedule(solver, 50, 50) == {"max_iter": 50, "steps": []}


class FakeClock:
    """One second per call."""

    def __init__(self):
        self.t = -1.0

    def __call__(self):
        self.t += 1.0
        return self.t


@pytest.fixture
def fake_time_limit(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(budget.TimeLimit, "clock", clock)
    monkeypatch.setattr(budget.TimeLimit, "SKIP_ITERS", 1)
    monkeypatch.setattr(budget.TimeLimit, "TIMED_ITERS", 2)
    monkeypatch.setattr(budget.TimeLimit, "REFIT_EVERY", 2)
    monkeypatch.setattr(budget.TimeLimit, "MARGIN", 1.0)
    return clock


def test_time_limit_fits_then_refits_until_the_first_step(fake_time_limit):
    full = SolverConfig(max_iter=20, steps=(16, 18), warmup_iters=0)
    limit = budget.TimeLimit(10.5, full)  # clock 0
    assert [limit.after_iteration(d, full) for d in (1, 2)] == [None, None]  # clock 1 (timing starts), 2
    # clock 3: 1 s/iteration, 7.5 s left → 3 + 7 = 10 iterations, steps 16, 18 × 0.5
    first = limit.after_iteration(3, full)
    assert first == {"max_iter": 10, "steps": [8, 9]} and limit.seconds_per_iter == 1.0
    current = SolverConfig(max_iter=10, steps=(8, 9))
    assert limit.after_iteration(4, current) is None  # not a refit iteration
    fake_time_limit.t += 2.0  # iteration 5 took 3 s (clock 7): 1.5 s on average, 3.5 s left → 5 + 2 = 7
    assert limit.after_iteration(5, current) == {"max_iter": 7, "steps": [6]}
    current = SolverConfig(max_iter=7, steps=(6,))
    assert limit.after_iteration(6, current) is None  # the first step is reached: the schedule stays
    assert limit.after_iteration(7, current) is None
    roomy = budget.TimeLimit(1000.0, full)
    assert [roomy.after_iteration(d, full) for d in (1, 2, 3, 5)] == [None] * 4
    with pytest.raises(ValueError, match="> 0"):
        budget.TimeLimit(0.0, full)


def test_time_limit_ends_a_slowed_run_at_the_deadline_after_the_first_step(fake_time_limit):
    full = SolverConfig(max_iter=20, steps=(16, 18), warmup_iters=0)
    limit = budget.TimeLimit(10.5, full)  # clock 0
    [limit.after_iteration(d, full) for d in (1, 2)]
    assert limit.after_iteration(3, full) == {"max_iter": 10, "steps": [8, 9]}  # clock 3
    current = SolverConfig(max_iter=10, steps=(8, 9))
    fake_time_limit.t += 4.0  # the machine gets busy after the last refit
    assert limit.after_iteration(8, current) is None  # clock 8: the first step, before the deadline
    fake_time_limit.t += 2.0
    assert limit.after_iteration(9, current) == {"max_iter": 9, "steps": [8]}  # clock 11 > 10.5: end here
    assert limit.after_iteration(10, SolverConfig(max_iter=10, steps=(8, 9))) is None  # the run's end anyway


@pytest.mark.parametrize("schedule", ["step", "linear"])
def test_time_limit_refits_a_decaying_schedule_to_the_end(fake_time_limit, schedule):
    full = SolverConfig(max_iter=20, steps=(16, 18), warmup_iters=0, lr_schedule=schedule)
    limit = budget.TimeLimit(10.5, full)  # clock 0
    [limit.after_iteration(d, full) for d in (1, 2)]
    assert limit.after_iteration(3, full) == {"max_iter": 10, "steps": [8, 9]}  # clock 3: 1 s/iteration
    current = SolverConfig(max_iter=10, steps=(8, 9), lr_schedule=schedule)
    assert [limit.after_iteration(d, current) for d in range(4, 9)] == [None] * 5  # clock 8: on time
    fake_time_limit.t += 1.0  # iteration 9 takes 2 s (clock 10): 1.125 s/iteration on average, 0.5 s left
    refit = limit.after_iteration(9, current)
    if schedule == "step":  # past its first LR step (8) the schedule stays: the deadline ends it
        assert refit is None
    else:  # still refitted: end after this iteration
        assert refit == {"max_iter": 9, "steps": []}


def test_time_limit_ends_a_cosine_run_at_the_deadline_between_refits(fake_time_limit):
    full = SolverConfig(max_iter=20, steps=(16, 18), warmup_iters=0, lr_schedule="cosine")
    limit = budget.TimeLimit(10.5, full)
    [limit.after_iteration(d, full) for d in (1, 2)]
    assert limit.after_iteration(3, full) == {"max_iter": 10, "steps": [8, 9]}
    current = SolverConfig(max_iter=10, steps=(8, 9), lr_schedule="cosine")
    fake_time_limit.t += 8.0
    assert limit.after_iteration(4, current) == {"max_iter": 4, "steps": []}  # clock 12 > 10.5: end here


def test_training_with_a_time_limit_stops_where_it_fits(shapes_dataset, tmp_path, fake_time_limit):
    from tensormask.config import Config, load_config
    from tensormask.engine.trainer import train

    cfg = tiny_config(shapes_dataset, tmp_path / "run", max_iter=20, steps=[16, 18], warmup_iters=0)
    weights = train(cfg, progress=False, time_limit_s=10.5)  # 1 s per iteration on the fake clock
    assert os.path.basename(weights) == "model_0000010.pth"
    saved = load_config(str(tmp_path / "run" / "config.yaml"), base=Config()).solver
    assert saved.max_iter == 10 and tuple(saved.steps) == (8, 9)


def test_demo_time_limit():
    assert demo.training_time_limit(0, 100.0) is None
    assert demo.training_time_limit(10, 5.0) == 600 - 5.0 - demo.EVAL_RESERVE_S
    with pytest.raises(ValueError, match="--minutes"):
        demo.training_time_limit(0.1, 5.0)
