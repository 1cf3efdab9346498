"""Wall-clock budgets: how fast this machine trains a config, and the schedule that fits a budget.

Used by ``tensormask demo --minutes`` (fit the demo to the user's CPU) and by ``tensormask ablate
--budget-minutes`` (one common iteration count for every variant of a study).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

from ..config import Config, merge


def scale_schedule(solver: Any, iters: int) -> dict[str, Any]:
    """``solver`` overrides for ``iters`` iterations: LR steps and warm-up scaled by ``iters / solver.max_iter``.

    Args:
        solver: a :class:`tensormask.config.SolverConfig` (its ``max_iter``, ``steps``, ``warmup_iters``).
        iters: the new number of iterations (≥ 1).

    Returns:
        ``{"max_iter", "steps", "warmup_iters"}``; steps stay inside ``[1, iters − 1]`` (duplicates merged).
    """
    f = iters / solver.max_iter
    steps = sorted({min(iters - 1, max(1, round(s * f))) for s in solver.steps}) if iters > 1 else []
    return {"max_iter": iters, "steps": steps, "warmup_iters": max(0, min(iters - 1, round(solver.warmup_iters * f)))}


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


def seconds_per_iteration(cfg: Config, scratch: str, timed_iters: int = 2) -> float:
    """:func:`time_training` in ``scratch``, deleted afterwards: seconds per training iteration of ``cfg``."""
    try:
        return time_training(cfg, scratch, timed_iters)[0]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def iterations_within(seconds: float, per_iter: float, max_iter: int) -> int:
    """How many of ``max_iter`` iterations of ``per_iter`` seconds fit in ``seconds`` (0 when none)."""
    if per_iter <= 0:
        return max_iter
    return max(0, min(max_iter, int(seconds // per_iter)))
