"""Shared fixtures of the engine tests: a small synthetic dataset and a tiny, fast config."""

from __future__ import annotations

import pytest

from tensormask.config import Config, load_config, merge
from tensormask.data import synthetic
from tensormask.demo import DEMO_CONFIG


@pytest.fixture(scope="session")
def shapes_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    synthetic.generate(str(root / "train"), 6, seed=0, config="demo")
    synthetic.generate(str(root / "val"), 3, seed=1, config="demo")
    return root


def tiny_config(root, out, **solver) -> Config:
    """The demo config shrunk for tests: 128–160 px images, 4 levels, few channels."""
    cfg = load_config(DEMO_CONFIG, base=Config())
    return merge(cfg, {
        "model": {"fpn": {"out_channels": 16, "max_level": 5, "size_divisibility": 32},
                  "head": {"cls_channels": 16, "bbox_channels": 16, "mask_channels": 16, "num_convs": 1}},
        "data": {"train_json": str(root / "train" / "annotations.json"), "train_images": str(root / "train" / "images"),
                 "val_json": str(root / "val" / "annotations.json"), "val_images": str(root / "val" / "images"),
                 "train_min_size": [128, 160], "train_max_size": 192, "test_min_size": 128, "test_max_size": 192,
                 "num_workers": 0},
        "solver": {"optimizer": "sgd", "base_lr": 0.01, "ims_per_batch": 2, "max_iter": 4, "steps": [3], "warmup_iters": 2, "log_period": 1,
                   "checkpoint_period": 2, "amp": "none", **solver},
        "output_dir": str(out),
        "device": "cpu",  # bit-identity holds on the CPU; the CUDA runs say device="cuda" themselves
    })
