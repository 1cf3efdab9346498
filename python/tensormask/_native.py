"""Loading of the native module ``tensormask._C`` (which loads libtensormask and registers the ops).

By default the ``_C`` installed with the package is imported. When the environment variable
``TENSORMASK_NATIVE_DIR`` names a build folder (e.g. ``build-sanitize/`` of ``make sanitize``), the
``_C`` extension found there is loaded instead; its RUNPATH then picks the ``libtensormask.so`` of
that same folder, so an ASan/UBSan build can be tested from Python without reinstalling.
"""

from __future__ import annotations

import glob
import importlib
import importlib.util
import os
import sys
from types import ModuleType

ENV_VAR = "TENSORMASK_NATIVE_DIR"


def load() -> ModuleType:
    """Import ``tensormask._C``, from ``$TENSORMASK_NATIVE_DIR`` when that variable is set."""
    folder = os.environ.get(ENV_VAR)
    if not folder:
        return importlib.import_module("tensormask._C")
    candidates = sorted(glob.glob(os.path.join(folder, "_C.*.so")) + glob.glob(os.path.join(folder, "_C.*.pyd")))
    if not candidates:
        raise ImportError(f"{ENV_VAR}={folder!r}: no _C extension module (_C.*.so) in that folder")
    spec = importlib.util.spec_from_file_location("tensormask._C", candidates[0])
    module = importlib.util.module_from_spec(spec)
    sys.modules["tensormask._C"] = module
    spec.loader.exec_module(module)
    return module
