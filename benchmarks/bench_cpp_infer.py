"""C++ inference (``tensormask_infer``, LibTorch) against Python inference of the same exported model.

Model: the CPU demo config (``configs/demo-tiny-cpu.yaml``: tiny ResNet GN, FPN P2–P5, tensor
bipyramid) with seeded random weights biased to give a few dozen detections (the weights of
``tests/deploy``); one 256×320 synthetic PNG (resized to the demo's test size, 192×240, as evaluation does). Both time the
same per-image work — test resize + preprocess + network + post-processing (pasting masks at the
image size) — on the CPU with the same number of threads: Python with ``median_seconds`` in-process,
C++ with ``tensormask_infer --repeat R`` (median of R runs inside the binary; process start and model
loading excluded). Reports the median ms/image and the ratio Python / C++.

Usage: python benchmarks/bench_cpp_infer.py [--runs 20] [--threads 1] [--binary PATH]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from timing import median_seconds

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.deploy
from tests.deploy.conftest import infer_binary, make_model, save_checkpoint, write_image  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--binary", default=None, help="tensormask_infer (default: the pip build's)")
    args = p.parse_args()
    binary = args.binary or infer_binary()
    if binary is None:
        print("tensormask_infer was not built; nothing to compare", file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)

    from tensormask.config import Config, load_config, merge
    from tensormask.data import load_image
    from tensormask.data.transforms import resize_image, resized_shape
    from tensormask.demo import DEMO_CONFIG
    from tensormask.export import export_model

    cfg = merge(load_config(DEMO_CONFIG, base=Config()), {"model": {"inference": {"score_thresh": 0.25}}})
    model = make_model(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_checkpoint(model, cfg, f"{tmp}/model.pth")
        weights, cfg_json, _ = export_model(ckpt, f"{tmp}/model.safetensors")
        image_path = write_image(f"{tmp}/scene.png", h=256, w=320)

        rgb = load_image(image_path)
        h, w = rgb.shape[:2]
        image = torch.from_numpy(np.array(rgb)).permute(2, 0, 1).contiguous()

        def python_infer():
            nh, nw, _ = resized_shape(h, w, cfg.data.test_min_size, cfg.data.test_max_size)
            resized = resize_image(image, nh, nw)
            with torch.no_grad():
                return model([resized], output_sizes=[(h, w)])[0]

        num_dets = len(python_infer()["scores"])
        py_ms = 1e3 * median_seconds(python_infer, args.runs, "cpu", warmup=2)
        proc = subprocess.run([binary, "--model", weights, "--config", cfg_json, image_path, "--threshold", "0",
                               "--threads", str(args.threads), "--repeat", str(args.runs)],
                              capture_output=True, text=True, check=True)
        m = re.search(r"median ([0-9.]+) ms", proc.stderr)
        if m is None:
            print(f"unexpected output of {binary}: {proc.stderr}", file=sys.stderr)
            return 1
        cpp_ms = float(m.group(1))
    print(f"demo-tiny-cpu, {h}x{w} image, {num_dets} detections, {args.threads} thread(s), median of {args.runs} runs")
    print(f"  python (torch {torch.__version__}): {py_ms:8.1f} ms/image")
    print(f"  C++ tensormask_infer:         {cpp_ms:8.1f} ms/image")
    print(f"  ratio python / C++:           {py_ms / cpp_ms:8.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
