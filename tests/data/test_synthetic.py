"""Synthetic generator: determinism, mask/box/area consistency, occlusion, scales, loading, CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_util

from tensormask.data import CocoDataset, collate, synthetic
from tensormask.data.synthetic import PRESETS, SHAPES, SyntheticConfig


def tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def decode(seg: dict) -> np.ndarray:
    with warnings.catch_warnings():  # pycocotools' NumPy-2 DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_util.decode({"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool)


@pytest.fixture(scope="module")
def benchmark_set(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bench")
    synthetic.generate(out, 24, seed=3, config="benchmark")
    return out, json.loads((out / "annotations.json").read_text())


def test_same_seed_same_bytes_different_seed_different(tmp_path):
    for name, seed, workers in (("a", 0, 1), ("b", 0, 2), ("c", 1, 1)):
        synthetic.generate(tmp_path / name, 5, seed=seed, config="demo", workers=workers)
    assert tree_hash(tmp_path / "a") == tree_hash(tmp_path / "b")  # also independent of workers
    assert tree_hash(tmp_path / "a") != tree_hash(tmp_path / "c")
    a = (tmp_path / "a" / "images" / "000001.png").read_bytes()
    c = (tmp_path / "c" / "images" / "000001.png").read_bytes()
    assert a != c


def test_json_layout(benchmark_set):
    out, data = benchmark_set
    assert set(data) == {"info", "licenses", "images", "annotations", "categories"}
    assert data["info"]["seed"] == 3 and data["info"]["preset"] == "benchmark"
    assert [c["name"] for c in data["categories"]] == list(SHAPES)
    assert [c["id"] for c in data["categories"]] == list(range(1, len(SHAPES) + 1))
    assert len(data["images"]) == 24
    for im in data["images"]:
        assert (out / "images" / im["file_name"]).is_file()
        assert 320 <= im["height"] <= 448 and 320 <= im["width"] <= 448
    ids = [a["id"] for a in data["annotations"]]
    assert ids == list(range(1, len(ids) + 1))


def test_masks_boxes_areas_consistent_and_disjoint(benchmark_set):
    _, data = benchmark_set
    cfg = PRESETS["benchmark"]
    by_image: dict[int, list[dict]] = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    sizes = {im["id"]: (im["height"], im["width"]) for im in data["images"]}
    for iid, anns in by_image.items():
        cover = np.zeros(sizes[iid], dtype=np.int32)
        for a in anns:
            m = decode(a["segmentation"])
            assert m.shape == sizes[iid]
            ys, xs = np.nonzero(m)
            assert a["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
            assert a["area"] == int(m.sum())
            assert a["area"] >= cfg.min_visible_pixels
            assert a["area"] >= cfg.min_visible_fraction * a["_full_area"]
            assert a["area"] <= a["_full_area"]
            cover += m
        assert cover.max() <= 1, f"visible masks of image {iid} overlap"


def test_occlusion_and_scale_variation(benchmark_set):
    _, data = benchmark_set
    anns = [a for a in data["annotations"] if not a["iscrowd"]]
    occluded = [a for a in anns if a["area"] < a["_full_area"]]
    assert len(occluded) >= 0.2 * len(anns)  # heavy overlap in the benchmark preset
    sides = np.array([max(a["bbox"][2], a["bbox"][3]) for a in anns])
    assert sides.min() <= 24 and sides.max() >= 250  # ~12 px to image-filling
    counts = np.bincount([a["category_id"] for a in anns], minlength=len(SHAPES) + 1)[1:]
    assert (counts > 0).all()  # every class appears


def test_loads_through_coco_dataset(benchmark_set):
    out, data = benchmark_set
    ds = CocoDataset(out / "annotations.json", out / "images", on_error="raise")
    assert len(ds) == 24 and ds.category_names == list(SHAPES)
    total = 0
    for s in collate([ds[i] for i in range(len(ds))]):
        anns = [a for a in data["annotations"] if a["image_id"] == s.image_id]
        assert s.num_instances == sum(not a["iscrowd"] for a in anns)
        assert s.crowd_masks.shape[0] == sum(a["iscrowd"] for a in anns)
        assert s.masks.sum(0).max() <= 1
        total += s.num_instances
    assert not ds.skipped and total > 24 * 3


def test_crowd_regions(tmp_path):
    cfg = dataclasses.replace(PRESETS["demo"], crowd_prob=1.0)
    synthetic.generate(tmp_path, 4, seed=0, config=cfg)
    data = json.loads((tmp_path / "annotations.json").read_text())
    crowds = [a for a in data["annotations"] if a["iscrowd"]]
    assert len(crowds) >= 2
    ds = CocoDataset(tmp_path / "annotations.json", tmp_path / "images", on_error="raise")
    assert sum(ds[i].crowd_masks.shape[0] for i in range(len(ds))) == len(crowds)


def test_render_image_metadata():
    cfg = PRESETS["demo"]
    image, instances = synthetic.render_image(np.random.default_rng(0), cfg)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    lo, hi = cfg.image_size
    assert lo <= image.shape[0] <= hi and lo <= image.shape[1] <= hi
    for inst in instances:
        assert inst["mask"].sum() == inst["area"] and 0 <= inst["label"] < cfg.num_classes


def test_config_validation_and_presets():
    assert (
        PRESETS["demo"].num_classes >= 4
        and PRESETS["benchmark"].objects_per_image[1] > PRESETS["demo"].objects_per_image[1]
    )
    with pytest.raises(ValueError, match="num_classes"):
        SyntheticConfig(num_classes=99)
    with pytest.raises(ValueError, match="overlap"):
        SyntheticConfig(overlap=2.0)
    with pytest.raises(ValueError, match="preset"):
        synthetic.generate("/nonexistent", 1, config="hard")


def test_cli_and_speed(tmp_path, capsys):
    t0 = time.perf_counter()
    assert synthetic.main([str(tmp_path / "o"), "--images", "40", "--seed", "2", "--workers", "1"]) == 0
    elapsed = time.perf_counter() - t0
    assert "wrote 40 images" in capsys.readouterr().out
    data = json.loads((tmp_path / "o" / "annotations.json").read_text())
    assert len(data["images"]) == 40 and len(list((tmp_path / "o" / "images").glob("*.png"))) == 40
    assert elapsed < 20, f"40 demo images took {elapsed:.1f} s"  # ~1 s expected; generous for loaded CI
