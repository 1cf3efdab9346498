"""`import tensormask` and its ops/modeling layers load without the optional-at-import packages: the
CUDA compile check (tools/cuda_check.sh) loads the CUDA build in a venv that has only torch."""

from __future__ import annotations

import subprocess
import sys

BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'pycocotools', 'matplotlib', 'PIL', 'tqdm', 'safetensors', 'yaml'}:
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import torch, tensormask, tensormask.ops, tensormask.modeling
tensormask.ops.crop_polygons  # the polygon mask targets import pycocotools when they run, not at import
print('ok')
"""


def test_ops_and_modeling_import_without_optional_packages():
    r = subprocess.run([sys.executable, "-c", BLOCK], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
