"""The Python API (`tensormask.load` → Predictor, Detections, to_coco, draw): every input form gives
the same detections, at the image's original size; channels_last and bf16 agree with float32 NCHW;
`tensormask predict` and `tensormask eval` write what the API returns; the README's example runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import tensormask

from .deploy.conftest import CATEGORIES, make_model, save_checkpoint, tiny_config, write_image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny bipyramid checkpoint with non-trivial detections (3 classes, score_thresh 0.25) and two
    PNGs of different sizes (both resized to the test size 128–192 px)."""
    root = tmp_path_factory.mktemp("api")
    cfg = tiny_config()
    ckpt = save_checkpoint(make_model(cfg), cfg, str(root / "model_0000000.pth"))
    a = write_image(str(root / "a.png"))  # 100×140
    b = write_image(str(root / "b.png"), h=150, w=110, seed=4)
    return {"ckpt": ckpt, "a": a, "b": b, "root": root}


@pytest.fixture(scope="module")
def predictor(files):
    return tensormask.load(files["ckpt"], device="cpu")


def rgb(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def assert_equal(d1, d2) -> None:
    assert len(d1) == len(d2) and d1.image_size == d2.image_size
    for f in ("boxes", "scores", "labels", "category_ids", "masks"):
        assert torch.equal(getattr(d1, f), getattr(d2, f)), f
    assert d1.category_names == d2.category_names


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def assert_close(d1, d2, box_atol=1e-3, score_atol=1e-5, min_iou=0.99) -> None:
    assert len(d1) == len(d2) > 3
    assert torch.equal(d1.labels, d2.labels)
    torch.testing.assert_close(d1.scores, d2.scores, atol=score_atol, rtol=0)
    torch.testing.assert_close(d1.boxes, d2.boxes, atol=box_atol, rtol=0)
    for i in range(len(d1)):
        assert mask_iou(d1.masks[i], d2.masks[i]) >= min_iou, i


def test_import_is_cheap_and_api_lazy():
    code = "import sys, tensormask; assert 'tensormask.api' not in sys.modules; tensormask.load; assert 'tensormask.api' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_every_input_form_gives_the_same_detections(files, predictor):
    path = files["a"]
    ref = predictor.predict(path)
    assert isinstance(ref, tensormask.Detections) and len(ref) > 3
    arr = rgb(path)
    for image in (path, Image.open(path), arr, torch.from_numpy(arr.copy()).permute(2, 0, 1), arr[None]):
        got = predictor(image)
        got = got[0] if isinstance(got, list) else got
        assert_equal(got, ref)
    listed = predictor([path, files["b"]])
    assert isinstance(listed, list) and len(listed) == 2
    assert_equal(listed[0], ref)
    assert_equal(listed[1], predictor(files["b"]))


def test_detections_are_at_the_original_size(files, predictor):
    d = predictor(files["b"])  # 150×110 → resized to 175×128 inside
    assert d.image_size == (150, 110) and d.masks.shape == (len(d), 150, 110) and d.masks.dtype == torch.bool
    assert d.boxes.dtype == torch.float32 and d.scores.dtype == torch.float32 and d.labels.dtype == torch.int64
    assert bool((d.boxes[:, 0::2] >= 0).all() and (d.boxes[:, 0::2] <= 110).all() and (d.boxes[:, 1::2] <= 150).all())
    assert bool((d.scores[:-1] >= d.scores[1:]).all())
    ids, names = CATEGORIES["contiguous_to_category_id"], CATEGORIES["category_names"]
    assert d.category_ids.tolist() == [ids[k] for k in d.labels.tolist()]
    assert d.category_names == [names[k] for k in d.labels.tolist()]
    # independent of the API: the network on the resized image, its boxes scaled back by hand
    image = torch.from_numpy(rgb(files["b"]).copy()).permute(2, 0, 1)
    from tensormask.engine.inference import resize_for_test

    small = resize_for_test(image, predictor.transform)
    h, w = small.shape[1:]
    with torch.no_grad():
        raw = predictor.model([small])[0]
    scale = torch.tensor([110 / w, 150 / h, 110 / w, 150 / h])
    assert torch.equal(raw["labels"], d.labels)
    torch.testing.assert_close(raw["boxes"] * scale, d.boxes, atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(raw["scores"], d.scores, atol=1e-6, rtol=0)


def test_mixed_size_batches(files, predictor):
    one = [predictor(files["a"]), predictor(files["b"])]
    two = predictor([files["a"], files["b"]], batch_size=2)  # padded to one size: GN statistics move a little
    for a, b in zip(one, two):
        assert b.image_size == a.image_size and b.masks.shape[1:] == a.masks.shape[1:]
        assert len(b) > 0 and b.labels[0] == a.labels[0]


def test_under_inference_mode_and_results_are_ordinary_tensors(files, predictor):
    ref = predictor(files["a"])
    with torch.inference_mode():
        got = predictor(files["a"])
    assert_equal(got, ref)
    ref.boxes[:, 0] += 1  # not an inference tensor: in-place updates work outside inference mode


def test_channels_last_gives_the_same_detections(files):
    nhwc = tensormask.load(files["ckpt"], device="cpu")
    nchw = tensormask.load(files["ckpt"], device="cpu", channels_last=False)
    assert nhwc.model.cfg.inference.channels_last and not nchw.model.cfg.inference.channels_last
    for image in (files["a"], files["b"]):
        assert_close(nhwc(image), nchw(image))


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="no native bf16 on this CPU")
def test_bfloat16_inference(files, predictor):
    bf16 = tensormask.load(files["ckpt"], device="cpu", dtype="bfloat16")
    assert bf16.amp_dtype == torch.bfloat16
    a, b = predictor(files["a"]), bf16(files["a"])
    assert b.scores.dtype == torch.float32 and b.boxes.dtype == torch.float32 and b.masks.shape[1:] == (100, 140)
    assert len(b) > 3 and b.labels[0] == a.labels[0]
    assert abs(float(b.scores[0] - a.scores[0])) < 0.02  # bf16 keeps ~3 significant digits


def test_rle_masks_and_to_coco(files, predictor):
    d = predictor(files["a"])
    r = predictor(files["a"], mask_format="rle")
    assert isinstance(r.masks, list) and r.masks[0]["size"] == [100, 140] and isinstance(r.masks[0]["counts"], str)
    assert torch.equal(r.bitmasks(), d.masks)
    coco = tensormask.to_coco(d, image_id=7)
    assert coco == tensormask.to_coco(r, image_id=7)
    assert len(coco) == len(d) and coco[0]["image_id"] == 7
    x1, y1, x2, y2 = d.boxes[0].tolist()
    assert coco[0]["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1])
    assert coco[0]["category_id"] == int(d.category_ids[0]) and coco[0]["score"] == pytest.approx(float(d.scores[0]))
    json.dumps(coco)  # JSON-ready


def test_indexing_and_draw(files, predictor):
    d = predictor(files["a"])
    top = d[d.scores >= d.scores[2]]
    assert len(top) == 3 and torch.equal(top.boxes, d.boxes[:3]) and top.category_names == d.category_names[:3]
    assert len(d[1:4]) == 3 and len(d[0]) == 1 and len(d[torch.tensor([0, 2])]) == 2
    picture = tensormask.draw(files["a"], d, score_threshold=0.3)
    assert picture.size == (140, 100) and picture.mode == "RGB"
    assert not np.array_equal(np.asarray(picture), rgb(files["a"]))
    with pytest.raises(ValueError, match="detections are of a 100x140 image"):
        tensormask.draw(files["b"], d)


def test_bad_inputs_are_clear_errors(files, predictor, tmp_path):
    with pytest.raises(TypeError, match="uint8"):
        predictor(rgb(files["a"]).astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        predictor(np.zeros((10, 10, 4), np.uint8))
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        predictor(torch.zeros((10, 10, 3), dtype=torch.uint8))
    with pytest.raises(TypeError, match="image 1: expected a file path"):
        predictor([files["a"], 3.5])
    with pytest.raises(FileNotFoundError, match="nope.png"):
        predictor(str(tmp_path / "nope.png"))
    with pytest.raises(ValueError, match="mask_format"):
        predictor(files["a"], mask_format="polygon")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        tensormask.load(str(tmp_path), device="cpu")
    with pytest.raises(ValueError, match="architecture"):
        tensormask.load(files["ckpt"], device="cpu", overrides=["model.head.num_convs=2"])
    with pytest.raises(ValueError, match="inference dtype"):
        tensormask.load(files["ckpt"], device="cpu", dtype="int8")


def test_load_options_folder_and_safetensors(files, predictor):
    folder = tensormask.load(os.path.dirname(files["ckpt"]), device="cpu")  # a run folder: its newest checkpoint
    assert_equal(folder(files["a"]), predictor(files["a"]))
    strict = tensormask.load(files["ckpt"], device="cpu", score_threshold=0.4, overrides=["model.inference.nms_thresh=0.5"])
    d = predictor(files["a"])
    assert_equal(strict(files["a"]), d[d.scores >= 0.4])  # a higher threshold before NMS = filtering after
    from tensormask.export import export_model

    st, _, _ = export_model(files["ckpt"], str(files["root"] / "model.safetensors"))
    assert_close(tensormask.load(st, device="cpu")(files["a"]), d, box_atol=1e-5, score_atol=1e-6, min_iou=1.0)


def test_predict_cli_writes_the_api_detections(files, predictor, tmp_path):
    from tensormask.predict import main as predict_main

    out = tmp_path / "out"
    assert predict_main([files["a"], files["b"], "--weights", files["ckpt"], "--out", str(out), "--device", "cpu",
                         "--threshold", "0.3"]) == 0
    written = json.loads((out / "predictions.json").read_text())
    expected = []
    for i, path in enumerate((files["a"], files["b"])):
        d = predictor(path)
        d = d[d.scores >= 0.3]
        for r, name in zip(tensormask.to_coco(d, i), d.category_names):
            expected.append({**r, "file_name": os.path.basename(path), "category_name": name})
    assert written == expected
    assert Image.open(out / "a.png").size == (140, 100)


def test_eval_cli_evaluates_the_api_detections(tmp_path):
    """`tensormask eval`'s coco_results.json holds what the predictor returns for each image."""
    from tensormask.data import CocoDataset, synthetic
    from tensormask.eval import main as eval_main

    data = tmp_path / "val"
    synthetic.generate(str(data), 2, seed=1, config="demo")
    cfg = tiny_config()
    ckpt = save_checkpoint(make_model(cfg), cfg, str(tmp_path / "model_0000000.pth"))
    out = tmp_path / "eval"
    assert eval_main(["--weights", ckpt, "--dataset", str(data / "annotations.json"), str(data / "images"),
                      "--output-dir", str(out), "--device", "cpu"]) == 0
    results = json.loads((out / "coco_results.json").read_text())
    predictor = tensormask.load(ckpt, device="cpu")
    images = json.loads((data / "annotations.json").read_text())["images"]
    # eval reports the dataset's category ids (its contiguous map), the predictor the checkpoint's
    to_dataset_id = CocoDataset(str(data / "annotations.json"), str(data / "images")).contiguous_to_category_id
    expected = []
    for im in images:
        d = predictor(str(data / "images" / im["file_name"]))
        d = d.replace(category_ids=torch.tensor([int(to_dataset_id[k]) for k in d.labels.tolist()], dtype=torch.int64))
        expected += tensormask.to_coco(d, im["id"])
    assert len(results) == len(expected) > 0
    for a, b in zip(results, expected):
        assert a["category_id"] == b["category_id"] and a["segmentation"] == b["segmentation"]
        assert a["score"] == pytest.approx(b["score"], abs=1e-6) and a["bbox"] == pytest.approx(b["bbox"], abs=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_gives_the_cpu_detections(files, predictor):
    gpu = tensormask.load(files["ckpt"], device="cuda")
    assert gpu.model.device.type == "cuda"
    a, b = predictor(files["a"]), gpu(files["a"])
    assert b.boxes.device.type == "cpu"
    assert_close(a, b, box_atol=1e-2, score_atol=1e-4, min_iou=0.95)


def readme_python_example() -> str:
    """The fenced python block of the README's "Python API" section."""
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    section = re.search(r"^## Python API\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "README.md has no '## Python API' section"
    block = re.search(r"```python\n(.*?)```", section.group(1), re.S)
    assert block, "the README's Python API section has no python block"
    return block.group(1)


def test_readme_example_runs_and_matches_the_cli(tmp_path, monkeypatch):
    """The README's example, run as written in a folder laid out like `make demo`'s output (a tiny
    model in demo_out/run, a validation PNG): it predicts on the PNG and on its numpy array (the same
    detections), draws, and gives what `tensormask predict` writes for that image."""
    from tensormask.predict import main as predict_main

    cfg = tiny_config()
    os.makedirs(tmp_path / "demo_out" / "run")
    os.makedirs(tmp_path / "demo_out" / "data" / "val" / "images")
    ckpt = save_checkpoint(make_model(cfg), cfg, str(tmp_path / "demo_out" / "run" / "model_0000012.pth"))
    image = write_image(str(tmp_path / "demo_out" / "data" / "val" / "images" / "000001.png"))
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(readme_python_example(), "README.md", "exec"), scope)
    detections, same = scope["detections"], scope["same"]
    assert len(detections) > 3
    assert_equal(detections, same)
    assert Image.open(tmp_path / "overlay.png").size == (140, 100)
    keep = detections[detections.scores >= 0.5]
    assert predict_main([image, "--weights", ckpt, "--out", "cli", "--device", "cpu"]) == 0  # --threshold 0.5
    written = json.loads((tmp_path / "cli" / "predictions.json").read_text())
    assert [{k: r[k] for k in ("bbox", "score", "category_id", "segmentation")} for r in written] == \
        [{k: r[k] for k in ("bbox", "score", "category_id", "segmentation")} for r in tensormask.to_coco(keep, 0)]
    assert [r["category_name"] for r in written] == keep.category_names


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="no native bf16 on this CPU")
def test_predict_cli_bfloat16_is_the_api_in_bfloat16(files, tmp_path):
    from tensormask.predict import main as predict_main

    assert predict_main([files["a"], "--weights", files["ckpt"], "--out", str(tmp_path), "--device", "cpu",
                         "--threshold", "0.3", "--dtype", "bfloat16"]) == 0
    written = json.loads((tmp_path / "predictions.json").read_text())
    d = tensormask.load(files["ckpt"], device="cpu", dtype="bfloat16")(files["a"])
    d = d[d.scores >= 0.3]
    assert [r["score"] for r in written] == [r["score"] for r in tensormask.to_coco(d, 0)] and len(written) > 0


def test_no_detections(files):
    none = tensormask.load(files["ckpt"], device="cpu", score_threshold=1.0)
    d = none(files["a"])
    assert len(d) == 0 and d.masks.shape == (0, 100, 140) and d.boxes.shape == (0, 4)
    assert tensormask.to_coco(d, 0) == [] and none(files["a"], mask_format="rle").masks == []
    assert tensormask.draw(files["a"], d).size == (140, 100)
