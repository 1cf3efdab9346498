"""Files written atomically: a temporary file in the destination's folder, then ``os.replace``, so a
crash or kill leaves the old file or the new one, never a truncated one (the temporary file is removed
when writing fails). Used for results, records, reports and figures; checkpoints have their own
writer (``checkpoint.py``: ``torch.save`` + fsync)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any, Callable

__all__ = ["write_json", "write_text", "save_figure"]


def _write(path: str, mode: str, write: Callable[[Any], None]) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    suffix = ".tmp" + os.path.splitext(path)[1]  # figures: the extension picks matplotlib's format
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=suffix, dir=folder)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_json(obj: Any, path: str, indent: int | None = 1) -> None:
    """``obj`` as JSON (``indent`` as ``json.dump``; None: one line), atomically."""
    _write(path, "w", lambda f: json.dump(obj, f, indent=indent))


def write_text(text: str, path: str) -> None:
    """``text`` written atomically."""
    _write(path, "w", lambda f: f.write(text))


def save_figure(fig: Any, path: str, dpi: int = 110) -> None:
    """A matplotlib figure saved atomically (format from ``path``'s extension), then closed."""
    import matplotlib.pyplot as plt

    fmt = os.path.splitext(path)[1].lstrip(".") or None
    try:
        _write(path, "wb", lambda f: fig.savefig(f, dpi=dpi, format=fmt))
    finally:
        plt.close(fig)
