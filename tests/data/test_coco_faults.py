"""Data faults of the COCO loader, one by one: each is a named, counted skip (``on_error="skip"``) or
a clear error naming the file and the item (``on_error="raise"``)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from tensormask.data import CocoDataset
from tensormask.data.segmentation import polygon_self_intersects, polygons_outside

from .test_coco import H, W, img, png_bytes, write_json

SQUARE = [[5, 4, 15, 4, 15, 12, 5, 12]]


def ann(aid=42, **over) -> dict:
    a = {"id": aid, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [5, 4, 10, 8], "segmentation": SQUARE}
    a.update(over)
    return a


def dataset(tmp_path: Path, images=None, anns=None, categories=None) -> tuple[Path, Path]:
    root = tmp_path / "images"
    root.mkdir(exist_ok=True)
    (root / "good.png").write_bytes(png_bytes())
    (root / "truncated.png").write_bytes(png_bytes()[:60])
    (root / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg" * 3)
    (root / "empty.png").write_bytes(b"")
    images = images if images is not None else [img(1, "good.png")]
    anns = anns if anns is not None else [ann()]
    return write_json(tmp_path / "faults.json", images, anns, categories), root


# (annotation overrides, reason counted in skip mode, text of the error in raise mode)
ANNOTATION_FAULTS = {
    "empty_polygon_list": ({"segmentation": []}, "empty_polygon", "no polygon with at least 3 points"),
    "empty_polygon": ({"segmentation": [[]]}, "empty_polygon", "no polygon with at least 3 points"),
    "two_point_polygon": ({"segmentation": [[1, 1, 9, 9]]}, "empty_polygon", "no polygon"),
    "bbox_zero_width": ({"bbox": [5, 4, 0, 8]}, "degenerate_bbox", "degenerate 'bbox'"),
    "bbox_negative_height": ({"bbox": [5, 4, 10, -2]}, "bad_bbox", "'bbox' must be"),
    "bbox_nan": ({"bbox": [5, 4, float("nan"), 8]}, "bad_bbox", "'bbox' must be"),
    "unknown_category": ({"category_id": 99}, "unknown_category", "category_id 99 is not in 'categories'"),
    "category_id_string": ({"category_id": "1"}, "unknown_category", "category_id '1'"),
    "mask_outside_right": ({"segmentation": [[W + 1, 0, W + 9, 0, W + 9, 9]]}, "mask_outside_image", "outside the"),
    "mask_outside_above": ({"segmentation": [[1, -9, 9, -9, 9, -1]]}, "mask_outside_image", "outside the"),
    "rle_bigger_than_image": ({"segmentation": {"size": [H + 5, W], "counts": [(H + 5) * W]}}, "bad_segmentation",
                              "differs from the image size"),
    "unknown_image_id": ({"image_id": 7}, "unknown_image_id", "image_id 7 is not in 'images'"),
    "no_segmentation": ({"segmentation": None}, "bad_segmentation", "segmentation must be"),
    "iscrowd_2": ({"iscrowd": 2}, "bad_annotation", "'iscrowd' must be 0 or 1"),
}


@pytest.mark.parametrize("fault", ANNOTATION_FAULTS)
def test_annotation_fault_is_counted_or_raised(tmp_path, fault, caplog):
    over, reason, text = ANNOTATION_FAULTS[fault]
    json_path, root = dataset(tmp_path, anns=[ann(1, segmentation=[[20, 2, 30, 2, 30, 9]]), ann(42, **over)])
    with caplog.at_level(logging.WARNING, logger="tensormask.data.coco"):
        ds = CocoDataset(json_path, root, on_error="skip")
    assert dict(ds.skipped) == {reason: 1}
    assert "annotation id 42" in caplog.text and reason in caplog.text
    sample = ds[0]
    assert sample.ann_ids.tolist() == [1]  # the good annotation survives
    with pytest.raises(ValueError, match=text) as e:
        CocoDataset(json_path, root, on_error="raise")
    assert "faults.json" in str(e.value) and "annotation id 42" in str(e.value)


def test_partially_outside_polygon_is_clipped_not_skipped(tmp_path):
    json_path, root = dataset(tmp_path, anns=[ann(segmentation=[[-10, -10, 10, -10, 10, 10, -10, 10]])])
    ds = CocoDataset(json_path, root, on_error="raise")
    m = ds[0].masks[0]
    assert not ds.skipped and m[:10, :10].all() and m.sum() == 100


@pytest.mark.parametrize("name,exc", [("truncated.png", OSError), ("garbage.jpg", OSError), ("empty.png", OSError),
                                      ("missing.png", FileNotFoundError)])
def test_corrupt_or_missing_image(tmp_path, name, exc):
    json_path, root = dataset(tmp_path, images=[img(1, "good.png"), img(2, name)], anns=[ann(), ann(43, image_id=2)])
    ds = CocoDataset(json_path, root, on_error="skip", check_files=False)
    assert len(ds) == 2 and ds[1] is None and ds[0] is not None
    reason = "missing_image" if exc is FileNotFoundError else "corrupt_image"
    assert dict(ds.skipped) == {reason: 1}
    strict = CocoDataset(json_path, root, on_error="raise", check_files=False)
    with pytest.raises(exc, match=name):
        strict[1]


def test_duplicate_image_id(tmp_path, caplog):
    images = [img(1, "good.png"), img(1, "truncated.png")]
    json_path, root = dataset(tmp_path, images=images)
    with caplog.at_level(logging.WARNING, logger="tensormask.data.coco"):
        ds = CocoDataset(json_path, root, on_error="skip")
    assert dict(ds.skipped) == {"duplicate_image_id": 1} and "listed twice" in caplog.text
    assert len(ds) == 1 and ds.image_info(0)["file_name"] == "good.png"  # the first entry is kept
    with pytest.raises(ValueError, match="image id 1 is listed twice"):
        CocoDataset(json_path, root, on_error="raise")


@pytest.mark.parametrize("entry", [{"id": 2, "height": H, "width": W}, {"id": 2, "file_name": 5},
                                   {"file_name": "good.png"}, {"id": 2, "file_name": "good.png", "height": 0, "width": W},
                                   "good.png"])
def test_bad_image_entry(tmp_path, entry):
    """Missing ``file_name`` or ``id``, wrong types, a zero height: ``bad_image_entry``."""
    json_path, root = dataset(tmp_path, images=[img(1, "good.png"), entry])
    ds = CocoDataset(json_path, root, on_error="skip")
    assert dict(ds.skipped) == {"bad_image_entry": 1} and len(ds) == 1
    with pytest.raises(ValueError, match=r"faults\.json: image"):
        CocoDataset(json_path, root, on_error="raise")


@pytest.mark.parametrize("content,match", [
    ("[]", "a COCO file is a JSON object, got list"),
    ('"images"', "got str"),
    ('{"images": {}, "annotations": [], "categories": []}', "'images' must be a list, got dict"),
    ('{"images": [], "annotations": "x", "categories": []}', "'annotations' must be a list"),
    ('{"images": [], "annotations": []}', "missing key 'categories'"),
    ('{"images": [], "annotations": [], "categories": [{"id": 1.5, "name": "a"}]}', r"categories\[0\]"),
    ('{"images": [], "annotations": [], "categories": []}', "'categories' is empty"),
    ("{trunc", "not valid JSON"),
    (b"\xff\xfe\x00garbage", "not valid JSON"),
])
def test_wrong_json_type_is_a_clear_error_in_both_modes(tmp_path, content, match):
    p = tmp_path / "wrong.json"
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    for mode in ("skip", "raise"):
        with pytest.raises(ValueError, match=match) as e:
            CocoDataset(p, tmp_path, on_error=mode)
        assert "wrong.json" in str(e.value)


def test_annotation_of_wrong_json_type(tmp_path):
    json_path, root = dataset(tmp_path, anns=[ann(), "not an object", ann(42)])
    ds = CocoDataset(json_path, root, on_error="skip")
    assert dict(ds.skipped) == {"bad_annotation": 2}  # the string and the duplicate id 42
    with pytest.raises(ValueError, match=r"annotations\[1\] is not an object"):
        CocoDataset(json_path, root, on_error="raise")


def test_self_intersecting_polygon_is_counted_and_kept(tmp_path, caplog):
    bowtie = [[2, 2, 12, 12, 12, 2, 2, 12]]  # edges (2,2)-(12,12) and (12,2)-(2,12) cross
    json_path, root = dataset(tmp_path, anns=[ann(segmentation=bowtie)])
    with caplog.at_level(logging.WARNING, logger="tensormask.data.coco"):
        ds = CocoDataset(json_path, root, on_error="raise")  # not an error: pycocotools rasterises it
        s = ds[0]
        ds[0]
    assert s.masks.shape[0] == 1 and s.masks[0].any()
    assert dict(ds.warned) == {"self_intersecting_polygon": 1} and not ds.skipped
    assert caplog.text.count("intersect themselves") == 1 and "annotation id 42" in caplog.text


def test_polygon_geometry_helpers():
    assert polygon_self_intersects([0, 0, 10, 10, 10, 0, 0, 10])
    assert not polygon_self_intersects([0, 0, 10, 0, 10, 10, 0, 10])
    assert not polygon_self_intersects([0, 0, 10, 0, 5, 8])  # a triangle never does
    star = [np.cos(t) for t in np.linspace(0, 4 * np.pi, 5, endpoint=False)]
    pentagram = [v for t, c in zip(np.linspace(0, 4 * np.pi, 5, endpoint=False), star) for v in (c, np.sin(t))]
    assert polygon_self_intersects(pentagram)
    assert polygons_outside([[50, 0, 60, 0, 60, 5]], 30, 40) and not polygons_outside([[35, 0, 60, 0, 60, 5]], 30, 40)
    assert not polygons_outside([[50, 0, 60, 0, 60, 5], [1, 1, 5, 1, 5, 5]], 30, 40)
