"""Reading files users hand us without running anything in them (see ``docs/reliability.md``).

Model files are what people download and share, so no reader may execute code from one:

* :func:`load_torch_file` — every ``torch.load`` of the project: ``weights_only=True`` (tensors, plain
  containers and numbers only), with an optional *exact* allow-list of extra globals. A file whose
  pickle references anything else (``os.system``, a class, ...) raises :class:`ForbiddenGlobalError`
  naming the file and the global, before anything of it runs.
* :func:`loads_json` — ``json.loads`` whose failures (malformed, not UTF-8, nested deeper than Python's
  recursion limit) are one-line ``ValueError`` naming the file.

Leaf module: imports nothing of the package (``modeling`` and ``engine`` both use it).
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Iterable
from typing import Any

__all__ = ["ForbiddenGlobalError", "load_torch_file", "loads_json", "refusal"]


class ForbiddenGlobalError(pickle.UnpicklingError, ValueError):
    """A pickle referenced a global (function or class) outside the allow-list; nothing of it ran.

    Also a ``ValueError``, so the command-line tools report it as one line (exit code 1).
    """


def refusal(path: str | os.PathLike, what: str, reference: str, allowed: str) -> str:
    """The one-line message of a refused file: ``refusing to load F: it references 'X', which W never
    contains (ALLOWED)``."""
    return (f"refusing to load {os.fspath(path)}: it references {reference}, which {what} never contains "
            f"({allowed}; nothing in the file was run)")


_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")
_CLASS_RE = re.compile(r"but got <class '([\w.]+)'>")
_DETAIL_RE = re.compile(r"WeightsUnpickler error:\s*([^\n]+)")
# torch's weights-only unpickler refusing a global, a class or a call (else: a corrupt pickle)
_REFUSALS = ("GLOBAL ", "Can only build", "Can only create new object", "Trying to call reduce", "must be imported")


def _unpickler_detail(message: str) -> str:
    """The weights-only unpickler's own reason, one line, out of torch's multi-line message."""
    m = _GLOBAL_RE.search(message) or _CLASS_RE.search(message)
    if m:
        return f"'{m.group(1)}'"
    m = _DETAIL_RE.search(message)
    if m:
        return m.group(1).strip()
    return next((ln.strip() for ln in message.splitlines() if ln.strip()), message)


def load_torch_file(path: str | os.PathLike, what: str = "a TensorMask checkpoint",
                    map_location: Any = "cpu", allow: Iterable[Any] = ()) -> Any:
    """``torch.load(path, weights_only=True)``, with ``allow`` (objects or ``(object, "module.name")``
    pairs, see ``torch.serialization.safe_globals``) as the only extra globals.

    Args:
        path: a ``torch.save`` file.
        what: what the file should be, for the refusal message ("a TensorMask checkpoint").
        map_location: as ``torch.load``.
        allow: exact allow-list of extra globals (e.g. numpy's array reconstruction for old checkpoints).

    Raises:
        ForbiddenGlobalError: the pickle references a global outside the allow-list (not run).
        pickle.UnpicklingError: a corrupt pickle (one line); any error of ``torch.load`` for files
        that are not torch files (truncated zip, ...).
    """
    import torch

    allow = list(allow)
    try:
        if allow:
            with torch.serialization.safe_globals(allow):
                return torch.load(path, map_location=map_location, weights_only=True)
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # torch's weights-only unpickler stopped
        message = str(e)
        if any(r in message for r in _REFUSALS):
            reference = _unpickler_detail(message)
            if not reference.startswith("'"):
                reference = f"something other than tensors and plain data ({reference})"
            raise ForbiddenGlobalError(refusal(path, what, reference, "weights_only load")) from None
        raise pickle.UnpicklingError(f"not a readable torch.save file ({_unpickler_detail(message)})") from None


def loads_json(text: str | bytes, where: str) -> Any:
    """``json.loads(text)``; failures raise a one-line ``ValueError`` starting with ``where``."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(f"{where}: not usable JSON: nested too deeply") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{where}: not valid JSON: {e}") from None
    except TypeError as e:  # not str/bytes (e.g. None)
        raise ValueError(f"{where}: not valid JSON: {e}") from None
