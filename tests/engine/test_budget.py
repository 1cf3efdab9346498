"""Wall-clock budgets (engine/budget.py), the trainer's time limit and the demo's ``--minutes``."""

from __future__ import annotations

import dataclasses
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
    """One second per call, or ``stalls[k]`` seconds at the k-th call (call 0: the time limit's
    construction, call k: ``after_iteration(k)``)."""

    def __init__(self, stalls: dict[int, float] | None = None):
        self.t, self.calls, self.stalls = 0.0, -1, stalls or {}

    def __call__(self):
        self.calls += 1
        if self.calls > 0:
            self.t += self.stalls.get(self.calls, 1.0)
        return self.t


@pytest.fixture
def fake_time_limit(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(budget.TimeLimit, "clock", clock)
    monkeypatch.setattr(budget.TimeLimit, "SKIP_ITERS", 1)
    monkeypatch.setattr(budget.TimeLimit, "TIMED_ITERS", 2)
    monkeypatch.setattr(budget.TimeLimit, "REFIT_EVERY", 2)
    monkeypatch.setattr(budget.TimeLimit, "BLOCK", 1)
    monkeypatch.setattr(budget.TimeLimit, "MARGIN", 1.0)
    return clock


def test_time_limit_fits_then_refits_from_the_recent_median(fake_time_limit):
    full = SolverConfig(max_iter=20, steps=(16, 18), warmup_iters=0)
    limit = budget.TimeLimit(10.5, full)  # clock 0
    assert [limit.after_iteration(d, full) for d in (1, 2)] == [None, None]  # clock 1 (timing starts), 2
    # clock 3: 1 s/iteration, 7.5 s left → 3 + 7 = 10 iterations, steps 16, 18 × 0.5
    first = limit.after_iteration(3, full)
    assert first == {"max_iter": 10, "steps": [8, 9]} and limit.seconds_per_iter == 1.0
    current = SolverConfig(max_iter=10, steps=(8, 9))
    assert limit.after_iteration(4, current) is None  # not a refit iteration
    fake_time_limit.t += 2.0  # iteration 5 took 3 s (clock 7): the median iteration still takes 1 s,
    # the 2 s lost are not in the time left: 3.5 s → 5 + 3 = 8 iterations, steps × 0.4
    assert limit.after_iteration(5, current) == {"max_iter": 8, "steps": [6, 7]}
    assert limit.seconds_per_iter == 1.0
    current = SolverConfig(max_iter=8, steps=(6, 7))
    assert limit.after_iteration(6, current) is None
    assert limit.after_iteration(7, current) is None  # clock 9: 7 + 1 = 8, unchanged
    assert limit.after_iteration(8, current) is None  # clock 10: the end of the schedule, 0.5 s left
    roomy = budget.TimeLimit(1000.0, full)
    assert [roomy.after_iteration(d, full) for d in (1, 2, 3, 5)] == [None] * 4
    with pytest.raises(ValueError, match="> 0"):
        budget.TimeLimit(0.0, full)


def test_time_limit_ends_a_slowed_run_at_the_deadline(fake_time_limit):
    full = SolverConfig(max_iter=20, steps=(16, 18), warmup_iters=0)
    limit = budget.TimeLimit(10.5, full)  # clock 0
    [limit.after_iteration(d, full) for d in (1, 2)]
    assert limit.after_iteration(3, full) == {"max_iter": 10, "steps": [8, 9]}  # clock 3
    current = SolverConfig(max_iter=10, steps=(8, 9))
    fake_time_limit.t += 4.0  # the machine gets busy after the last refit
    assert limit.after_iteration(8, current) is None  # clock 8: not a refit iteration, before the deadline
    fake_time_limit.t += 2.0
    assert limit.after_iteration(9, current) == {"max_iter": 9, "steps": [8]}  # clock 11 > 10.5: end here
    assert limit.after_iteration(10, SolverConfig(max_iter=10, steps=(8, 9))) is None  # the run's end anyway


@pytest.mark.parametrize("schedule", ["step", "linear"])
def test_time_limit_refits_every_schedule_to_the_end(fake_time_limit, schedule):
    full = SolverConfig(max_iter=20, steps=(16, 18), warmup_iters=0, lr_schedule=schedule)
    limit = budget.TimeLimit(10.5, full)  # clock 0
    [limit.after_iteration(d, full) for d in (1, 2)]
    assert limit.after_iteration(3, full) == {"max_iter": 10, "steps": [8, 9]}  # clock 3: 1 s/iteration
    current = SolverConfig(max_iter=10, steps=(8, 9), lr_schedule=schedule)
    assert [limit.after_iteration(d, current) for d in range(4, 9)] == [None] * 5  # clock 8: on time
    fake_time_limit.t += 1.0  # iteration 9 takes 2 s (clock 10): 0.5 s left → end after this iteration
    # (steps × 0.45: 7, 8 — both passed already, they stay passed)
    assert limit.after_iteration(9, current) == {"max_iter": 9, "steps": [7, 8]}


def test_time_limit_ends_a_cosine_run_at_the_deadline_between_refits(fake_time_limit):
    full = SolverConfig(max_iter=20, steps=(16, 18), warmup_iters=0, lr_schedule="cosine")
    limit = budget.TimeLimit(10.5, full)
    [limit.after_iteration(d, full) for d in (1, 2)]
    assert limit.after_iteration(3, full) == {"max_iter": 10, "steps": [8, 9]}
    current = SolverConfig(max_iter=10, steps=(8, 9), lr_schedule="cosine")
    fake_time_limit.t += 8.0
    assert limit.after_iteration(4, current) == {"max_iter": 4, "steps": []}  # clock 12 > 10.5: end here


def test_refit_steps_keep_passed_steps_unless_the_schedule_grows_back(fake_time_limit):
    full = SolverConfig(max_iter=1000, steps=(800, 900), warmup_iters=0)
    limit = budget.TimeLimit(100.0, full)
    current = SolverConfig(max_iter=500, steps=(400, 450))
    assert limit.refit_steps(400, 300, current) == [320, 360]  # none passed: scaled
    assert limit.refit_steps(520, 420, current) == [416, 468]  # ahead of 420 by < 25%: scaled
    # 400 passed at 420; a little longer schedule puts it at 416 (still passed) or ahead by < 25%: stays
    assert limit.refit_steps(540, 420, current) == [420, 486]
    # grown back (a stall is over): the drop at 400 is taken back, ahead at 800
    assert limit.refit_steps(1000, 420, current) == [800, 900]
    assert limit.refit_steps(100, 420, current) == [80, 90]  # shrunk: both passed
    assert limit.refit_steps(2, 1, current) == [1, 1]  # inside [1, iters - 1]; both count


def run_schedule(limit, full, seconds_per_iteration):
    """Drive ``limit`` as the trainer does: ``seconds_per_iteration(done, clock)`` advances the
    clock; returns (iterations trained, final schedule, end time, iterations at each LR level)."""
    import bisect

    clock = budget.TimeLimit.clock
    current, done, levels = full, 0, [0, 0, 0]
    while done < current.max_iter:
        levels[bisect.bisect_right(list(current.steps), done)] += 1
        clock.t += seconds_per_iteration(done, clock.t)
        done += 1
        refit = limit.after_iteration(done, current)
        if refit is not None:
            current = dataclasses.replace(current, max_iter=refit["max_iter"], steps=tuple(refit["steps"]))
    return done, current, clock.t, levels


class SettableClock:
    t = 0.0

    def __call__(self):
        return self.t


@pytest.mark.parametrize("stall_s,at_least", [(60.0, 4200), (300.0, 2200)])
def test_demo_budget_survives_a_stall(monkeypatch, stall_s, at_least):
    """The demo's schedule (5000 iterations, steps 4050/4700) in 570 s at 0.12 s/iteration, with
    another process slowing iterations 65× for ``stall_s`` seconds early on. The time after the stall
    goes to training: about (570 − stall) / 0.12 iterations (the average since the start gave 4095
    and 97), the schedule ends at the deadline with its low-LR phases."""
    monkeypatch.setattr(budget.TimeLimit, "clock", SettableClock())
    full = SolverConfig(max_iter=5000, steps=(4050, 4700), warmup_iters=50)
    limit = budget.TimeLimit(570.0, full)

    def speed(done, t):
        return 0.12 * 65 if 2.0 <= t < 2.0 + stall_s else 0.12

    done, final, end, levels = run_schedule(limit, full, speed)
    ideal = (570 - stall_s) / 0.12
    assert at_least <= done <= ideal + 10 and final.max_iter == done
    assert 565 <= end <= 570.2  # ends at the deadline, not early
    assert list(final.steps) == [round(4050 * done / 5000), round(4700 * done / 5000)]
    assert levels[1] >= 0.12 * done and levels[2] >= 0.05 * done  # both low-LR phases trained
    # without a stall: the 4750 iterations that fit, minus the 2% margin's worth at most
    monkeypatch.setattr(budget.TimeLimit, "clock", SettableClock())
    done, final, end, _ = run_schedule(budget.TimeLimit(570.0, full), full, lambda done, t: 0.12)
    assert 4700 <= done <= 4750 and 565 <= end <= 570


def test_training_with_a_time_limit_stops_where_it_fits(shapes_dataset, tmp_path, fake_time_limit):
    from tensormask.config import Config, load_config
    from tensormask.engine.trainer import train

    cfg = tiny_config(shapes_dataset, tmp_path / "run", max_iter=20, steps=[16, 18], warmup_iters=0)
    weights = train(cfg, progress=False, time_limit_s=10.5)  # 1 s per iteration on the fake clock
    assert os.path.basename(weights) == "model_0000010.pth"
    saved = load_config(str(tmp_path / "run" / "config.yaml"), base=Config()).solver
    assert saved.max_iter == 10 and tuple(saved.steps) == (8, 9)


def test_training_gets_its_schedule_back_after_a_stall(shapes_dataset, tmp_path, fake_time_limit):
    """Iterations 2 and 3 take 12 s (another process), the others 1 s; 38 s for 12 iterations. The
    first fit (12 s/iteration) leaves 4 iterations, with both LR steps at 3; each end of schedule
    refits it from the median of the recent iterations, 1 s from iteration 6 on: all 12 with steps
    10, 11, done in 34 s. (The average since the start ended this run at iteration 4, 12 s early.)"""
    from tensormask.config import Config, load_config, merge
    from tensormask.engine.trainer import train

    fake_time_limit.stalls = {2: 12.0, 3: 12.0}
    cfg = tiny_config(shapes_dataset, tmp_path / "run", max_iter=12, steps=[10, 11], warmup_iters=0,
                      checkpoint_period=0, log_period=6)
    cfg = merge(cfg, {"data": {"train_min_size": [96, 96], "train_max_size": 128}})  # cheap iterations
    weights = train(cfg, progress=False, time_limit_s=38.0)
    assert os.path.basename(weights) == "model_0000012.pth" and fake_time_limit.t == 34.0
    saved = load_config(str(tmp_path / "run" / "config.yaml"), base=Config()).solver
    assert saved.max_iter == 12 and tuple(saved.steps) == (10, 11)


def test_demo_time_limit():
    assert demo.training_time_limit(0, 100.0) is None
    assert demo.training_time_limit(10, 5.0) == 600 - 5.0 - demo.EVAL_RESERVE_S
    with pytest.raises(ValueError, match="--minutes"):
        demo.training_time_limit(0.1, 5.0)
