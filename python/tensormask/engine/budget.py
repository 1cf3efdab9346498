"""Wall-clock budgets: how fast this machine trains a config, and the schedule that fits a budget.

Used by ``tensormask demo --minutes`` (fit the demo to the user's CPU, :class:`TimeLimit`) and by
``tensormask ablate --budget-minutes`` (one common iteration count for every variant of a study).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ..config import Config, merge


def _scaled_steps(solver: Any, iters: int, lowest: int) -> list[int]:
    """``solver.steps`` scaled by ``iters / solver.max_iter``, kept inside ``[lowest, iters − 1]``
    (duplicates merged); none when ``iters ≤ lowest``."""
    f = iters / solver.max_iter
    return sorted({min(iters - 1, max(lowest, round(s * f))) for s in solver.steps}) if iters > lowest else []


def scale_schedule(solver: Any, iters: int) -> dict[str, Any]:
    """``solver`` overrides for ``iters`` iterations: LR steps and warm-up scaled by ``iters / solver.max_iter``.

    Args:
        solver: a :class:`tensormask.config.SolverConfig` (its ``max_iter``, ``steps``, ``warmup_iters``).
        iters: the new number of iterations (≥ 1).

    Returns:
        ``{"max_iter", "steps", "warmup_iters"}``; steps stay inside ``[1, iters − 1]`` (duplicates merged).
    """
    warmup = round(solver.warmup_iters * (iters / solver.max_iter))
    return {"max_iter": iters, "steps": _scaled_steps(solver, iters, 1), "warmup_iters": max(0, min(iters - 1, warmup))}


def time_training(cfg: Config, out: str, timed_iters: int = 2) -> tuple[float, str]:
    """Train ``1 + timed_iters`` iterations of ``cfg`` (its data, batch size, workers, device) into ``out``.

    Returns:
        (seconds per training iteration after the first, a warm-up; data loading included,
        the path of the final checkpoint in ``out``).
    """
    from .trainer import train

    if timed_iters < 1:
        raise ValueError(f"timed_iters must be ≥ 1, got {timed_iters}")
    run = merge(cfg, {"solver": {**scale_schedule(cfg.solver, 1 + timed_iters), "log_period": 1,
                                 "checkpoint_period": 0, "eval_period": 0, "keep_last": 1},
                      "output_dir": out})
    weights = train(run, resume=False, progress=False)
    with open(os.path.join(out, "metrics.jsonl")) as f:
        times = [json.loads(line)["time"] for line in f if line.strip()]
    return (times[-1] - times[0]) / max(1, len(times) - 1), weights


def iterations_within(seconds: float, per_iter: float, max_iter: int) -> int:
    """How many of ``max_iter`` iterations of ``per_iter`` seconds fit in ``seconds`` (0 when none)."""
    if per_iter <= 0:
        return max_iter
    return max(0, min(max_iter, int(seconds // per_iter)))


def shorten_schedule(solver: Any, iters: int, done: int) -> dict[str, Any]:
    """``solver`` overrides that end a run at ``iters`` iterations, ``done`` of them already trained:
    LR steps scaled by ``iters / solver.max_iter`` (none before ``done``), warm-up unchanged."""
    return {"max_iter": iters, "steps": _scaled_steps(solver, iters, done)}


class TimeLimit:
    """Fits a run's schedule to a wall-clock limit while it trains.

    The first ``SKIP_ITERS`` iterations are not timed (caches warm up); after ``TIMED_ITERS`` more the
    run's end is set to the last iteration that fits ``seconds`` (counted from construction) at the
    measured seconds per iteration (data loading included), LR steps scaled from ``solver``. The fit is
    redone every ``REFIT_EVERY`` iterations with the average so far until the first LR step (a
    ``step`` schedule) or the end (``linear``, ``cosine``: :meth:`refit_until`), so a run whose
    iterations get slower (or faster) still ends in time with a well-formed schedule; a run that slows
    down after the last fit (a shared machine) ends at the deadline. Measuring
    inside the run costs nothing and sees the run's own speed, unlike a separate timing run.
    """

    SKIP_ITERS = 10  # iterations not timed: allocator and kernel caches warm up
    TIMED_ITERS = 40  # iterations timed before the first fit
    REFIT_EVERY = 50  # iterations between fits, until the first LR step
    MARGIN = 1.02  # assume the remaining iterations are up to 2% slower than the average so far
    clock = staticmethod(time.perf_counter)

    def __init__(self, seconds: float, solver: Any, start_iter: int = 0):
        if seconds <= 0:
            raise ValueError(f"the time limit must be > 0 s, got {seconds:g}")
        self.deadline = self.clock() + seconds
        self.full = solver
        self.measure_from = start_iter + self.SKIP_ITERS
        self.measure_to = self.measure_from + self.TIMED_ITERS
        self._t_from: float | None = None
        self.seconds_per_iter: float | None = None

    @staticmethod
    def refit_until(current: Any) -> int:
        """The iteration after which the schedule is no longer refitted: the first LR step of a
        ``step`` schedule (its low-LR phase stays as scaled), the end of a ``linear`` or ``cosine``
        one (they decay from the start, so every refit only changes the slope)."""
        if current.lr_schedule == "step":
            return min(current.steps, default=current.max_iter)
        return current.max_iter

    def after_iteration(self, done: int, current: Any) -> dict[str, Any] | None:
        """Call after each iteration (``done`` trained so far, ``current`` the schedule in force).
        Returns the ``solver`` overrides of a new schedule when a fit changes it, else ``None``."""
        now = self.clock()
        if done == self.measure_from:
            self._t_from = now
        if now >= self.deadline and done < current.max_iter:  # a run that got slower ends at the deadline
            return {"max_iter": done, "steps": [x for x in current.steps if x < done]}
        if done >= self.refit_until(current):  # the schedule stays
            return None
        if self._t_from is None or done < self.measure_to or (done - self.measure_to) % self.REFIT_EVERY:
            return None
        self.seconds_per_iter = (now - self._t_from) / (done - self.measure_from)
        iters = done + iterations_within(self.deadline - now, self.seconds_per_iter * self.MARGIN,
                                         self.full.max_iter - done)
        if iters == current.max_iter:
            return None
        return shorten_schedule(self.full, iters, done) if iters < self.full.max_iter else \
            {"max_iter": self.full.max_iter, "steps": list(self.full.steps)}
