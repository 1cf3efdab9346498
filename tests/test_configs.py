"""Every shipped YAML config loads and builds its model's heads."""

from __future__ import annotations

import glob
import os

import pytest

from tensormask.config import Config, load_config
from tensormask.modeling.heads import TensorMaskHead

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "python", "tensormask", "configs")
CONFIGS = sorted(glob.glob(os.path.join(CONFIG_DIR, "**", "*.yaml"), recursive=True))


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.relpath(p, CONFIG_DIR) for p in CONFIGS])
def test_config_loads_and_builds_head(path):
    cfg = load_config(path, base=Config())
    head = TensorMaskHead(cfg.model.head, in_channels=cfg.model.fpn.out_channels, num_levels=cfg.model.fpn.max_level - 1)
    assert head.num_classes == cfg.model.head.num_classes


def test_ablation_variants_differ_as_named():
    folder = os.path.join(CONFIG_DIR, "ablations")
    heads = {os.path.basename(p)[:-5]: load_config(p, base=Config()).model for p in glob.glob(os.path.join(folder, "*.yaml"))}
    assert heads["upscale_unaligned_l5"].head.interpolation == "nearest"
    assert heads["upscale_aligned_l5"].head.upscale_lambda == 5
    assert heads["simple_natural"].head.window_sizes == (15,)
    assert heads["bipyramid_15_11"].head.window_sizes == (11, 15)
    assert not heads["no_box_head"].head.box_head and heads["no_box_head"].inference.nms_on == "mask_box"
