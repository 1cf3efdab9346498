"""COCO loader: polygons, RLE (compressed/uncompressed), crowd, empty images, EXIF, and bad data."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_util

from tensormask.data import CocoDataset, Sample, collate, masks_to_boxes, nonempty
from tensormask.data.segmentation import check_segmentation, rle_counts

H, W = 30, 40
BG = (200, 10, 30)


# ------------------------------------------------------------------------------ helpers
def compressed_rle(mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE: run lengths over the column-major flattening, starting with zeros."""
    flat = mask.astype(np.uint8).flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0] == 1:
        runs = [0] + runs
    return {"size": [mask.shape[0], mask.shape[1]], "counts": runs}


def rect_mask(y0, y1, x0, x1, h=H, w=W) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def png_bytes(h=H, w=W, color=BG, mode="RGB") -> bytes:
    b = io.BytesIO()
    Image.new("RGB", (w, h), color).convert(mode).save(b, format="PNG")
    return b.getvalue()


def write_json(path: Path, images, annotations, categories=None) -> Path:
    cats = (
        categories
        if categories is not None
        else [{"id": 7, "name": "c"}, {"id": 1, "name": "a"}, {"id": 3, "name": "b"}]
    )
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": cats}))
    return path


def img(iid, name, h=H, w=W):
    return {"id": iid, "file_name": name, "height": h, "width": w}


RLE_C_MASK = rect_mask(15, 25, 20, 30) & ~rect_mask(18, 22, 23, 27)  # a square ring
RLE_U_MASK = rect_mask(2, 9, 30, 38)
CROWD_MASK = rect_mask(20, 30, 0, 12)


@pytest.fixture()
def dataset_dir(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    root.mkdir()
    (root / "good.png").write_bytes(png_bytes())
    (root / "empty.png").write_bytes(png_bytes(mode="L"))  # grayscale: converted to RGB
    (root / "corrupt.png").write_bytes(png_bytes()[:60])  # truncated PNG
    images = [img(1, "good.png"), img(2, "empty.png"), img(3, "corrupt.png"), img(4, "missing.png")]
    anns = [
        # polygon rectangle: columns 5..14, rows 4..11
        {
            "id": 10,
            "image_id": 1,
            "category_id": 3,
            "iscrowd": 0,
            "bbox": [5, 4, 10, 8],
            "segmentation": [[5, 4, 15, 4, 15, 12, 5, 12]],
        },
        {"id": 11, "image_id": 1, "category_id": 7, "iscrowd": 0, "segmentation": compressed_rle(RLE_C_MASK)},
        {"id": 12, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": uncompressed_rle(RLE_U_MASK)},
        {"id": 13, "image_id": 1, "category_id": 1, "iscrowd": 1, "segmentation": uncompressed_rle(CROWD_MASK)},
        {"id": 14, "image_id": 1, "category_id": 99, "iscrowd": 0, "segmentation": [[0, 0, 5, 0, 5, 5]]},
        {"id": 15, "image_id": 1, "category_id": 3, "iscrowd": 0, "segmentation": [[0, 0, 5, 0, 5]]},  # odd
        {"id": 16, "image_id": 1, "category_id": 3, "iscrowd": 0, "segmentation": "not a mask"},
        {"id": 17, "image_id": 1, "category_id": 3, "iscrowd": 0, "bbox": "oops", "segmentation": [[0, 0, 5, 0, 5, 5]]},
        {"id": 18, "image_id": 1, "category_id": 3, "iscrowd": 0, "segmentation": [[3, 3, 3, 3]]},  # degenerate
        {
            "id": 19,
            "image_id": 1,
            "category_id": 3,
            "iscrowd": 0,
            "segmentation": {"size": [H, W], "counts": [5, 10]},
        },  # counts do not add up to H*W
        {"id": 20, "image_id": 3, "category_id": 3, "iscrowd": 0, "segmentation": [[5, 4, 15, 4, 15, 12, 5, 12]]},
        {"id": 21, "image_id": 4, "category_id": 3, "iscrowd": 0, "segmentation": [[5, 4, 15, 4, 15, 12, 5, 12]]},
    ]
    write_json(tmp_path / "ann.json", images, anns)
    return tmp_path


# ------------------------------------------------------------------------------ good data
def test_categories_are_contiguous_sorted_by_id(dataset_dir):
    ds = CocoDataset(dataset_dir / "ann.json", dataset_dir / "images")
    assert ds.contiguous_to_category_id == [1, 3, 7]
    assert ds.category_id_to_contiguous == {1: 0, 3: 1, 7: 2}
    assert ds.category_names == ["a", "b", "c"]
    assert ds.num_classes == 3


def test_skip_mode_counts_each_problem_by_reason(dataset_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="tensormask.data.coco"):
        ds = CocoDataset(dataset_dir / "ann.json", dataset_dir / "images", on_error="skip")
        assert ds.image_ids == [1, 2, 3]  # the missing image is left out
        assert dict(ds.skipped) == {"missing_image": 1, "unknown_category": 1, "bad_segmentation": 3, "bad_bbox": 1,
                                    "empty_polygon": 1}
        assert ds[2] is None  # corrupt
        ds[0]
        ds[0], ds[2]  # counted once however often read
    assert dict(ds.skipped) == {
        "missing_image": 1,
        "unknown_category": 1,
        "bad_segmentation": 3,
        "bad_bbox": 1,
        "empty_polygon": 1,
        "corrupt_image": 1,
    }
    text = caplog.text
    for needle in (
        "missing.png",
        "corrupt.png",
        "annotation id 14",
        "annotation id 16",
        "annotation id 17",
        "annotation id 18",
    ):
        assert needle in text, needle


def test_polygon_rle_and_crowd_masks(dataset_dir):
    ds = CocoDataset(dataset_dir / "ann.json", dataset_dir / "images")
    s = ds[0]
    assert isinstance(s, Sample)
    assert s.image.dtype == torch.uint8 and s.image.shape == (3, H, W)
    assert s.image[:, 0, 0].tolist() == list(BG)  # RGB order
    assert s.orig_size == (H, W) and s.image_id == 1 and s.file_name == "good.png"
    assert s.ann_ids.tolist() == [10, 11, 12]
    assert s.labels.tolist() == [1, 2, 0] and s.labels.dtype == torch.int64
    assert s.masks.dtype == torch.bool and s.masks.shape == (3, H, W)
    assert torch.equal(s.masks[0], torch.from_numpy(rect_mask(4, 12, 5, 15)))  # pixel-exact polygon
    assert torch.equal(s.masks[1], torch.from_numpy(RLE_C_MASK))
    assert torch.equal(s.masks[2], torch.from_numpy(RLE_U_MASK))
    assert s.boxes.dtype == torch.float32
    # annotation 10's bbox [5, 4, 10, 8] → XYXY; 11 and 12 have no bbox: tight mask boxes, x2/y2 exclusive
    assert s.boxes.tolist() == [[5, 4, 15, 12], [20, 15, 30, 25], [30, 2, 38, 9]]
    assert s.crowd_masks.shape == (1, H, W) and torch.equal(s.crowd_masks[0], torch.from_numpy(CROWD_MASK))
    assert len(s.polygons) == 3 and s.polygons[1] is None and s.polygons[2] is None
    assert [p.tolist() for p in s.polygons[0]] == [[5, 4, 15, 4, 15, 12, 5, 12]]
    assert s.polygons[0][0].dtype == np.float64


def test_gt_box_is_the_annotation_bbox(tmp_path):
    """detectron2 takes the annotation's bbox (XYWH → XYXY, clipped to the image), not the box of the
    rasterised mask; a bbox with no area inside the image drops its instance."""
    (tmp_path / "a.png").write_bytes(png_bytes())
    poly = [[5.3, 4.6, 14.2, 4.6, 14.2, 11.5, 5.3, 11.5]]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 3, "iscrowd": 0, "bbox": [5.3, 4.6, 8.9, 6.9], "segmentation": poly},
        {"id": 2, "image_id": 1, "category_id": 3, "iscrowd": 0, "bbox": [30.5, 20.0, 20.0, 3.25],  # past the edge
         "segmentation": compressed_rle(rect_mask(20, 23, 31, 40))},
        {"id": 3, "image_id": 1, "category_id": 3, "iscrowd": 0, "bbox": [45.0, 2.0, 3.0, 3.0],  # outside
         "segmentation": compressed_rle(rect_mask(2, 5, 37, 40))},
        {"id": 4, "image_id": 1, "category_id": 3, "iscrowd": 0, "segmentation": poly},  # no bbox
    ]
    write_json(tmp_path / "ann.json", [img(1, "a.png")], anns)
    ds = CocoDataset(tmp_path / "ann.json", tmp_path)
    s = ds[0]
    assert s.ann_ids.tolist() == [1, 2, 4] and ds.skipped["bbox_outside_image"] == 1
    mask_box = masks_to_boxes(s.masks[:1])[0].tolist()  # whole pixels of the rasterised polygon
    assert all(v == int(v) for v in mask_box) and mask_box != s.boxes[0].tolist()
    assert s.boxes.tolist() == [
        pytest.approx([5.3, 4.6, 14.2, 11.5]),  # float32 of x, y, x + w, y + h
        [30.5, 20.0, 40.0, 23.25],  # clipped to the 40-wide image
        mask_box,  # without bbox: the mask's box
    ]
    assert torch.equal(s.boxes[0], torch.tensor([5.3, 4.6, 5.3 + 8.9, 4.6 + 6.9], dtype=torch.float32))


def test_empty_image_is_kept_with_no_instances(dataset_dir):
    ds = CocoDataset(dataset_dir / "ann.json", dataset_dir / "images")
    s = ds[1]
    assert s.image.shape == (3, H, W) and s.image[:, 5, 5].tolist() == [s.image[0, 5, 5].item()] * 3
    assert s.masks.shape == (0, H, W) and s.boxes.shape == (0, 4) and s.labels.shape == (0,)
    assert s.crowd_masks.shape == (0, H, W)
    assert len(CocoDataset(dataset_dir / "ann.json", dataset_dir / "images", filter_empty=True)) == 2


def test_cache_decodes_each_file_once_and_returns_the_same_samples(dataset_dir, monkeypatch):
    import tensormask.data.coco as coco

    plain = CocoDataset(dataset_dir / "ann.json", dataset_dir / "images")
    cached = CocoDataset(dataset_dir / "ann.json", dataset_dir / "images", cache=True)
    reads = []
    real_load_image = coco.load_image
    monkeypatch.setattr(coco, "load_image", lambda path: reads.append(Path(path).name) or real_load_image(path))
    for _ in range(3):
        for i in range(len(cached)):
            a, b = plain[i], cached[i]
            assert (a is None) == (b is None), i
            if a is not None:
                for field in ("image", "masks", "boxes", "labels", "crowd_masks", "ann_ids"):
                    assert torch.equal(getattr(a, field), getattr(b, field)), (i, field)
    assert reads.count("good.png") == 4  # 3 plain reads, 1 cached
    assert reads.count("corrupt.png") == 4  # a skipped item is remembered too (and counted once)
    assert cached.skipped["corrupt_image"] == 1


def test_dataloader_collate_drops_skipped(dataset_dir):
    ds = CocoDataset(dataset_dir / "ann.json", dataset_dir / "images")
    batches = list(torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate))
    assert len(batches) == 1 and [s.image_id for s in batches[0]] == [1, 2]


def test_exif_orientation_is_applied(tmp_path):
    # Stored 40 wide x 20 high with a red top-left block; orientation 6 = rotate 90° clockwise to view.
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[..., 2] = 255
    arr[:10, :10] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "im").mkdir()
    Image.fromarray(arr).save(tmp_path / "im" / "rot.jpg", format="JPEG", quality=95, exif=exif.tobytes())
    poly = [[0, 0, 5, 0, 5, 5, 0, 5]]
    write_json(
        tmp_path / "a.json",
        [img(1, "rot.jpg", h=40, w=20)],
        [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": poly}],
    )
    ds = CocoDataset(tmp_path / "a.json", tmp_path / "im", on_error="raise")
    s = ds[0]
    assert s.image.shape == (3, 40, 20) and s.orig_size == (40, 20)
    red, blue = s.image[:, 5, 15].int(), s.image[:, 5, 5].int()  # the block is now top-right
    assert red[0] > 200 and red[2] < 60, red
    assert blue[2] > 200 and blue[0] < 60, blue
    # The JSON giving the stored (unrotated) size is a mismatch.
    write_json(tmp_path / "b.json", [img(1, "rot.jpg", h=20, w=40)], [])
    with pytest.raises(ValueError, match="rot.jpg"):
        CocoDataset(tmp_path / "b.json", tmp_path / "im", on_error="raise")[0]
    ds = CocoDataset(tmp_path / "b.json", tmp_path / "im")
    assert ds[0] is None and ds.skipped["size_mismatch"] == 1


# ------------------------------------------------------------------------------ raise mode
def one_problem(tmp_path: Path, ann: dict, image_name: str = "good.png") -> tuple[Path, Path]:
    root = tmp_path / "images"
    root.mkdir(exist_ok=True)
    (root / "good.png").write_bytes(png_bytes())
    (root / "corrupt.png").write_bytes(png_bytes()[:60])
    base = {"id": 42, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": [[1, 1, 9, 1, 9, 9]]}
    base.update(ann)
    return write_json(tmp_path / "one.json", [img(1, image_name)], [base]), root


@pytest.mark.parametrize(
    "ann, match",
    [
        ({"category_id": 99}, "category_id 99"),
        ({"segmentation": [[1, 2, 3]]}, "odd number"),
        ({"segmentation": "abc"}, "segmentation must be"),
        ({"segmentation": {"size": [H, W], "counts": 5}}, "counts"),
        ({"segmentation": {"size": [H, W + 1], "counts": [H * (W + 1)]}}, "differs from the image size"),
        ({"segmentation": {"size": [H, W], "counts": "0?"}}, "RLE"),
        ({"bbox": [1, 2, 3]}, "bbox"),
        ({"image_id": 5}, "image_id 5"),
    ],
)
def test_raise_mode_names_file_and_annotation(tmp_path, ann, match):
    json_path, root = one_problem(tmp_path, ann)
    with pytest.raises(ValueError, match=match) as e:
        CocoDataset(json_path, root, on_error="raise")
    msg = str(e.value)
    assert "annotation id 42" in msg and "one.json" in msg
    if "image_id" not in ann:
        assert "good.png" in msg
    ds = CocoDataset(json_path, root, on_error="skip")
    assert sum(ds.skipped.values()) == 1


def test_raise_mode_missing_and_corrupt_image(tmp_path):
    json_path, root = one_problem(tmp_path, {}, image_name="nothere.png")
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        CocoDataset(json_path, root, on_error="raise")
    json_path, root = one_problem(tmp_path, {}, image_name="corrupt.png")
    ds = CocoDataset(json_path, root, on_error="raise")
    with pytest.raises(OSError, match="corrupt.png"):
        ds[0]


@pytest.mark.parametrize("missing", ["images", "annotations", "categories"])
def test_json_structure_is_validated(tmp_path, missing):
    data = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}
    del data[missing]
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"bad\.json.*'{missing}'"):
        CocoDataset(p, tmp_path, on_error="skip")


def test_json_errors(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        CocoDataset(p, tmp_path)
    p.write_text(json.dumps({"images": {}, "annotations": [], "categories": []}))
    with pytest.raises(ValueError, match="'images' must be a list"):
        CocoDataset(p, tmp_path)
    p.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": "x"}]}))
    with pytest.raises(ValueError, match=r"categories\[0\]"):
        CocoDataset(p, tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        CocoDataset(tmp_path / "nope.json", tmp_path)
    with pytest.raises(ValueError, match="on_error"):
        CocoDataset(p, tmp_path, on_error="ignore")


# ------------------------------------------------------------------------------ helpers
def test_rle_counts_matches_pycocotools_and_rejects_garbage():
    rng = np.random.default_rng(0)
    m = rng.random((17, 23)) > 0.6
    rle = compressed_rle(m)
    assert rle_counts(rle["counts"]) == uncompressed_rle(m)["counts"]
    assert check_segmentation(rle, 17, 23) is None
    assert check_segmentation(rle, 17, 24) is not None
    for bad in ("0" + chr(0x7F), "P"):  # outside the alphabet / ends inside a number
        with pytest.raises(ValueError):
            rle_counts(bad)


def test_masks_to_boxes():
    m = torch.zeros(3, 6, 8, dtype=torch.bool)
    m[0, 1:3, 2:5] = True
    m[1] = True
    boxes = masks_to_boxes(m)
    assert boxes.tolist() == [[2, 1, 5, 3], [0, 0, 8, 6], [0, 0, 0, 0]]
    assert masks_to_boxes(torch.zeros(0, 6, 8, dtype=torch.bool)).shape == (0, 4)


def test_nonempty_and_collate():
    m = torch.zeros(3, 4, 5, dtype=torch.bool)
    m[1, 2, 3] = True
    assert nonempty(m).tolist() == [False, True, False]
    assert nonempty(torch.zeros(0, 4, 5, dtype=torch.bool)).shape == (0,)
    assert collate([None, None]) == []
