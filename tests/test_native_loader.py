"""``TENSORMASK_NATIVE_DIR`` (used by ``make sanitize``) picks the folder the native module is loaded from."""

from __future__ import annotations

import os
import subprocess
import sys


def _import_with(env_value: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TENSORMASK_NATIVE_DIR=env_value)
    code = "import tensormask, sys; print(tensormask._C.__file__); print(sys.modules['tensormask._C'] is tensormask._C)"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_folder_without_native_module_is_a_clear_import_error(tmp_path):
    proc = _import_with(str(tmp_path))
    assert proc.returncode != 0
    assert f"TENSORMASK_NATIVE_DIR='{tmp_path}': no _C extension module" in proc.stderr


def test_installed_module_is_loaded_from_another_folder(tmp_path):
    import tensormask

    folder = os.path.dirname(tensormask._C.__file__)
    for name in (os.path.basename(tensormask._C.__file__), "libtensormask.so"):  # _C finds the library by $ORIGIN
        os.symlink(os.path.join(folder, name), tmp_path / name)
    proc = _import_with(str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    path, registered = proc.stdout.split()
    assert path.startswith(str(tmp_path)) and registered == "True"
