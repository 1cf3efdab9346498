"""Shared fixtures of the deployment tests: a tiny model with non-trivial detections saved as a
training checkpoint, its export, a test image, and the `tensormask_infer` binary."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest
import torch

from tensormask.config import Config, load_config, merge, to_dict
from tensormask.demo import DEMO_CONFIG

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CATEGORIES = {"category_names": ["square", "disc", "triangle"], "contiguous_to_category_id": [3, 5, 9]}


def infer_binary() -> str | None:
    """``$TENSORMASK_INFER``, else the binary of the pip build (``build/cp*/tensormask_infer``)."""
    env = os.environ.get("TENSORMASK_INFER")
    if env:
        return env if os.access(env, os.X_OK) else None
    found = sorted(glob.glob(os.path.join(REPO, "build", "cp*", "tensormask_infer")))
    return found[-1] if found else None


def tiny_config(**head) -> Config:
    """The demo config shrunk: 3 classes, narrow heads, test images resized to 128–192 px."""
    cfg = load_config(DEMO_CONFIG, base=Config())
    return merge(cfg, {
        "model": {"fpn": {"out_channels": 16},
                  "head": {"num_classes": 3, "num_convs": 1, "cls_channels": 16, "bbox_channels": 16,
                           "mask_channels": 16, **head},
                  "inference": {"score_thresh": 0.25}},
        "data": {"test_min_size": 128, "test_max_size": 192},
    })


def make_model(cfg: Config, seed: int = 0):
    """The TensorMask of ``cfg`` with random weights chosen so that detections are non-trivial: varied
    class scores (a few windows above 0.25) and decisive mask logits."""
    from tensormask.modeling.tensormask import TensorMask

    torch.manual_seed(seed)
    model = TensorMask(cfg.model).eval()
    head = model.head
    with torch.no_grad():
        # standard deviations ∝ 1/sqrt(fan-in), tuned on the 16-channel heads of tiny_config
        torch.nn.init.normal_(head.cls_score.weight, std=0.96 / head.cls_score.weight[0].numel() ** 0.5)
        head.cls_score.bias.fill_(-2.5)
        if head.bbox_pred is not None:
            torch.nn.init.normal_(head.bbox_pred.weight, std=0.6 / head.bbox_pred.weight[0].numel() ** 0.5)
        for v in head.window_sizes:
            conv = getattr(head, head.mask_pred_name(v))
            torch.nn.init.normal_(conv.weight, std=2.4 / conv.weight[0].numel() ** 0.5)
            torch.nn.init.normal_(conv.bias, std=1.0)
    return model


def categories(num_classes: int) -> dict:
    """The category map of the test checkpoints: :data:`CATEGORIES` for 3 classes, else generic."""
    if num_classes == 3:
        return CATEGORIES
    return {"category_names": [f"c{i}" for i in range(num_classes)],
            "contiguous_to_category_id": list(range(1, num_classes + 1))}


def save_checkpoint(model, cfg: Config, path: str) -> str:
    meta = categories(cfg.model.head.num_classes)
    torch.save({"model": model.state_dict(), "config": to_dict(cfg), "dataset": meta, "iteration": 0}, path)
    return path


def write_image(path: str, h: int = 100, w: int = 140, seed: int = 3) -> str:
    """A PNG of a few flat shapes on noise (needs a resize to the test size)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    img[10:50, 15:60] = (200, 40, 40)
    yy, xx = np.mgrid[:h, :w]
    img[(yy - 65) ** 2 + (xx - 95) ** 2 < 22 ** 2] = (40, 200, 60)
    img[60:90, 10:40] = (30, 60, 220)
    Image.fromarray(img).save(path)
    return path


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """(checkpoint, model.safetensors, model.json, cfg) of the tiny bipyramid model."""
    from tensormask.export import export_model

    root = tmp_path_factory.mktemp("export")
    cfg = tiny_config()
    ckpt = save_checkpoint(make_model(cfg), cfg, str(root / "model_0000000.pth"))
    out, cfg_json, _ = export_model(ckpt, str(root / "model.safetensors"))
    return ckpt, out, cfg_json, cfg


@torch.no_grad()
def tame_features(model, size: tuple[int, int] = (128, 192)) -> None:
    """Rescale the last conv of every FPN level so the level has unit std on a random image: random
    deep backbones (ResNet-18/50 on 0–255 inputs) otherwise saturate every class score at 1.0, and
    tied scores make the detection order arbitrary."""
    backbone = model.backbone
    image = torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    batch, _ = model.preprocess([image])
    convs = [getattr(backbone, f"fpn_output{k}") for k in backbone.levels if k <= 5]
    if backbone.top_block is not None:
        convs += [getattr(backbone.top_block, f"p{k}") for k in backbone.top_block.levels]
    for i, conv in enumerate(convs):
        std = float(list(backbone(batch).values())[i].std())
        conv.weight /= std
        conv.bias /= std
