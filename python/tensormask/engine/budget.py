"""Wall-clock budgets: how fast this machine trains a config, and the schedule that fits a budget.

Used by ``tensormask demo --minutes`` (fit the demo to the user's CPU, :class:`TimeLimit`) and by
``tensormask ablate --budget-minutes`` (one common iteration count for every variant of a study).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections import deque
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
    """Fits a run's schedule to a wall-clock limit while it trains, and keeps fitting it.

    The first ``SKIP_ITERS`` iterations are not timed (caches warm up); after ``TIMED_ITERS`` more the
    run's end is set to the last iteration that fits ``seconds`` (counted from construction) at the
    measured speed (data loading included), LR steps scaled from ``solver``. The fit is redone every
    ``REFIT_EVERY`` iterations until the run ends, and whenever the run reaches the end of its current
    schedule with time left, so the schedule follows the machine both ways: it shrinks when iterations
    get slower and grows back (up to ``solver.max_iter``) when they get faster again.

    The speed of a fit is the median seconds per iteration of the ``BLOCK``-iteration blocks among the
    last ``WINDOW`` iterations (:meth:`recent_seconds_per_iter`), not the average since the start: a
    transient stall (another process on the same cores slowing a few iterations many times) is a
    few slow blocks, which the median ignores, and its cost is already in the time left; a lasting
    change of speed is most blocks after ``WINDOW / 2`` iterations. Each refit scales all of
    ``solver``'s LR steps to the new length (:meth:`refit_steps`); one that falls at or before the
    current iteration is passed; one already passed stays passed unless the refit places it beyond
    ``REGROW`` × the current iteration (a schedule that grows back after a stall returns to the higher
    LR until its rescaled step). A run still slower than its last fit ends at the deadline. Measuring inside the run costs nothing and sees the run's own speed, unlike
    a separate timing run.
    """

    SKIP_ITERS = 10  # iterations not timed: allocator and kernel caches warm up
    TIMED_ITERS = 40  # iterations timed before the first fit
    REFIT_EVERY = 50  # iterations between fits
    BLOCK = 10  # iterations per timed block
    WINDOW = 100  # the speed is the median block of the last WINDOW iterations
    MARGIN = 1.02  # assume the remaining iterations are up to 2% slower than the recent median
    REGROW = 1.25  # a passed LR step is taken back when a refit places it beyond REGROW × the iteration
    clock = staticmethod(time.perf_counter)

    def __init__(self, seconds: float, solver: Any, start_iter: int = 0):
        if seconds <= 0:
            raise ValueError(f"the time limit must be > 0 s, got {seconds:g}")
        self.deadline = self.clock() + seconds
        self.full = solver
        self.measure_from = start_iter + self.SKIP_ITERS
        self.measure_to = self.measure_from + self.TIMED_ITERS
        self._times: deque[float] = deque(maxlen=self.WINDOW + 1)  # clock after consecutive iterations
        self.seconds_per_iter: float | None = None

    def recent_seconds_per_iter(self) -> float | None:
        """Median seconds per iteration of the ``BLOCK``-iteration blocks among the last ``WINDOW``
        timed iterations (counted back from the newest); None before a block is complete."""
        t, b = list(self._times), max(1, self.BLOCK)
        blocks = [(t[i] - t[i - b]) / b for i in range(len(t) - 1, b - 1, -b)]
        return statistics.median(blocks) if blocks else None

    def after_iteration(self, done: int, current: Any) -> dict[str, Any] | None:
        """Call after each iteration (``done`` trained so far, ``current`` the schedule in force).
        Returns the ``solver`` overrides of a new schedule when a fit changes it, else ``None``."""
        now = self.clock()
        if done >= self.measure_from:
            self._times.append(now)
        if done == self.measure_to:  # reported by the trainer, even when the deadline ends the run here
            self.seconds_per_iter = self.recent_seconds_per_iter()
        if now >= self.deadline and done < current.max_iter:  # a run that got slower ends at the deadline
            return {"max_iter": done, "steps": [x for x in current.steps if x < done]}
        if done < self.measure_to or done >= self.full.max_iter:
            return None
        if done < current.max_iter and (done - self.measure_to) % self.REFIT_EVERY:
            return None  # neither a refit iteration nor the end of the current schedule
        spi = self.recent_seconds_per_iter()
        if spi is None:
            return None
        self.seconds_per_iter = spi
        iters = done + iterations_within(self.deadline - now, spi * self.MARGIN, self.full.max_iter - done)
        if iters == current.max_iter:
            return None
        return {"max_iter": iters, "steps": self.refit_steps(iters, done, current)}

    def refit_steps(self, iters: int, done: int, current: Any) -> list[int]:
        """``solver.steps`` scaled by ``iters / solver.max_iter`` (inside ``[1, iters − 1]``, one per
        step: steps that meet both count). A step ``current`` has passed (at or before ``done``) stays
        passed unless its new place is more than ``REGROW`` × ``done``: a schedule that grows back
        after a stall takes its LR drops back, one that only moves a little does not flap around them."""
        f = iters / self.full.max_iter
        passed = sum(1 for x in current.steps if x <= done)
        steps = []
        for i, step in enumerate(sorted(self.full.steps)):
            x = min(iters - 1, max(1, round(step * f)))
            if i < passed and x <= self.REGROW * done:
                x = min(x, done)
            steps.append(x)
        return sorted(steps)
