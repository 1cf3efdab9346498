"""TensorBoard event files beside ``metrics.jsonl`` — optional: written when the ``tensorboard``
package is installed (``pip install tensorboard``, or the ``tensorboard`` extra), silently off otherwise.

``tensorboard --logdir OUTPUT_DIR`` then shows every scalar of ``metrics.jsonl`` (losses, learning
rate, the periodic evaluation's ``eval/segm_AP`` etc.) against the iteration.
"""

from __future__ import annotations

import math
from typing import Any

NOT_SCALARS = ("iteration", "time")  # metrics.jsonl keys that are not curves


def tensorboard_available() -> bool:
    """Whether ``torch.utils.tensorboard`` can be imported (it needs the ``tensorboard`` package)."""
    try:
        import torch.utils.tensorboard  # noqa: F401
    except Exception:  # ImportError, or a broken/partial install (protobuf versions, ...)
        return False
    return True


class EventLog:
    """A ``SummaryWriter`` on ``log_dir`` (main process only), or nothing when ``enabled`` is false
    or TensorBoard is not installed.

    Args:
        log_dir: the run's output folder (event files ``events.out.tfevents.*`` land there).
        enabled: false on non-main processes.
        purge_step: on resume, the first iteration trained again: TensorBoard hides the events of
            earlier event files at or after it (no duplicated curve after a restart).
    """

    def __init__(self, log_dir: str, enabled: bool = True, purge_step: int | None = None):
        self.writer = None
        if enabled and tensorboard_available():
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=log_dir, purge_step=purge_step or None)

    @property
    def active(self) -> bool:
        return self.writer is not None

    def write(self, record: dict[str, Any]) -> None:
        """Every finite number of a ``metrics.jsonl`` record as a scalar at ``record["iteration"]``."""
        if self.writer is None:
            return
        step = int(record["iteration"])
        for key, value in record.items():
            if key in NOT_SCALARS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
