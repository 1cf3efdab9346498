"""Malformed and hostile inputs other than pickles: YAML configs, COCO and calibration JSON,
safetensors files and their JSON metadata, images. Each gives one line naming the file and the
problem — no traceback, no code run, no out-of-memory (a PNG declaring 60000 × 60000 pixels is
refused from its header)."""

from __future__ import annotations

import json
import struct
import zlib

import pytest
import torch

from .test_hostile_files import run_cli
from tensormask.config import Config, load_config, merge, save_config, to_dict
from tensormask.data import CocoDataset
from tensormask.data.images import ImageTooLargeError, load_image
from tensormask.demo import DEMO_CONFIG
from tensormask.engine.calibration import load_calibration
from tensormask.engine.checkpoint import load_inference_model

DEEP = "[" * 100_000 + "]" * 100_000  # deeper than Python's recursion limit




def png(width: int, height: int, idat: bytes = b"\x00" * 64) -> bytes:
    """A PNG whose header declares ``width`` × ``height`` RGB pixels, with a tiny IDAT chunk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(idat)) + chunk(b"IEND", b"")


def small_config() -> Config:
    cfg = load_config(DEMO_CONFIG, base=Config())
    return merge(cfg, {"model": {"fpn": {"out_channels": 8},
                                 "head": {"num_classes": 2, "num_convs": 1, "cls_channels": 8, "bbox_channels": 8,
                                          "mask_channels": 8}},
                       "data": {"test_min_size": 64, "test_max_size": 96}})


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A small training checkpoint (random weights) and the model's safetensors tensors."""
    from tensormask.modeling.tensormask import TensorMask

    cfg = small_config()
    model = TensorMask(cfg.model)
    path = tmp_path_factory.mktemp("w") / "model_final.pth"
    torch.save({"model": model.state_dict(), "config": to_dict(cfg), "iteration": 1,
                "dataset": {"category_names": ["a", "b"], "contiguous_to_category_id": [1, 2]}}, path)
    state = {k: v.detach().float().contiguous().clone() for k, v in model.state_dict().items()}
    return str(path), state, cfg


# ---------------------------------------------------------------------------------------------- images
def test_an_image_declaring_60000_squared_pixels_is_refused_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png(60000, 60000))
    assert bomb.stat().st_size < 200
    with pytest.raises(ImageTooLargeError, match=r"bomb\.png: it declares 3,600,000,000 pixels"):
        load_image(str(bomb))
    wide = tmp_path / "wide.png"  # under Pillow's own limit, over ours
    wide.write_bytes(png(12000, 9000))
    with pytest.raises(ImageTooLargeError, match=r"12000×9000 = 108,000,000 pixels, more than the limit of 100,000,000"):
        load_image(str(wide))
    with pytest.raises(ImageTooLargeError, match="limit of 1,000"):
        load_image(str(tmp_path / "bomb.png"), max_pixels=1000)


@pytest.mark.parametrize("kind", ["bomb", "corrupt", "truncated"])
def test_predict_on_a_bad_image_is_one_line(kind, weights, tmp_path, capsys):
    image = tmp_path / "x.png"
    image.write_bytes({"bomb": png(60000, 60000), "corrupt": b"\x89PNG\r\n\x1a\n" + b"\x00" * 50,
                       "truncated": png(64, 64, idat=b"\x00" * 10)}[kind])
    code, err = run_cli(["predict", str(image), "--weights", weights[0], "--out", str(tmp_path / "o"),
                         "--device", "cpu"], capsys)
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith("tensormask predict: error: cannot read image") and "x.png" in err[0], err[0]
    if kind == "bomb":
        assert "refused before decoding" in err[0]


# ----------------------------------------------------------------------------------------------- YAML
@pytest.mark.parametrize("content,text", [
    (DEEP.encode(), "nested too deeply"),
    (b"model: \xff\xfe", "not valid YAML"),
    (b"model: !!python/object/apply:os.system ['touch {sentinel}']", "not valid YAML"),
])
def test_hostile_yaml_configs(content, text, tmp_path, capsys):
    sentinel = tmp_path / "payload_ran"
    path = tmp_path / "c.yaml"
    path.write_bytes(content.replace(b"{sentinel}", str(sentinel).encode()))
    code, err = run_cli(["train", "--config", str(path)], capsys)
    assert code == 1 and len(err) == 1 and text in err[0] and "c.yaml" in err[0], err
    assert not sentinel.exists()


# ----------------------------------------------------------------------------------------------- JSON
@pytest.mark.parametrize("content,text", [
    (DEEP, "nested too deeply"), ("{\"images\": [", "not valid JSON"), (b"\xff\xfe{}", "not valid JSON"),
    ("[1, 2]", "a COCO file is a JSON object"), ("{\"images\": {}, \"annotations\": [], \"categories\": []}",
                                                 "'images' must be a list"),
])
def test_hostile_coco_json(content, text, tmp_path, capsys):
    path = tmp_path / "ann.json"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    with pytest.raises(ValueError, match=text) as e:
        CocoDataset(path, tmp_path)
    assert "ann.json" in str(e.value) and "\n" not in str(e.value)
    cfg = tmp_path / "c.yaml"
    save_config(merge(small_config(), {"data": {"train_json": str(path), "train_images": str(tmp_path)},
                                       "output_dir": str(tmp_path / "run")}), str(cfg))
    code, err = run_cli(["train", "--config", str(cfg), "--no-progress"], capsys)
    assert code == 1 and len(err) == 1 and text in err[0] and "ann.json" in err[0], err


@pytest.mark.parametrize("content,text", [
    (DEEP, "nested too deeply"), (b"\xff\xfe", "not valid JSON"), ("{\"format\": 1}", "not a tensormask-calibration"),
])
def test_hostile_calibration_json(content, text, tmp_path):
    path = tmp_path / "w.calibration.json"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    with pytest.raises(ValueError, match=text) as e:
        load_calibration(str(path))
    assert "w.calibration.json" in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------- safetensors
def _write_safetensors(path, state, cfg, **metadata):
    from safetensors.torch import save_file

    save_file(state, str(path), metadata={"format": "tensormask", "config": json.dumps(to_dict(cfg.model)), **metadata})


@pytest.mark.parametrize("metadata,text", [
    ({"dataset": "{not json"}, "metadata 'dataset': not valid JSON"),
    ({"dataset": DEEP}, "metadata 'dataset': not usable JSON: nested too deeply"),
    ({"dataset": "[1, 2]"}, "'category_names', a list of 2 strings"),
    ({"dataset": json.dumps({"category_names": ["a", 3], "contiguous_to_category_id": [1, 2]})}, "a list of 2 strings"),
    ({"dataset": json.dumps({"category_names": ["a", "b"], "contiguous_to_category_id": [1]})}, "a list of 2 integers"),
    ({"full_config": "\"a string\""}, "'full_config' must be a JSON object"),
    ({"full_config": json.dumps({"model": {"head": {"nope": 1}}})}, "unknown config key"),
    ({"full_config": json.dumps({"model": {"backbone": 3}})}, "'full_config' must be a JSON object"),
    ({"config": DEEP}, "nested too deeply"),
    ({"config": "{\"head\": {\"num_classes\": \"x\"}}"}, "stored model config is unusable"),
])
def test_hostile_safetensors_metadata(metadata, text, weights, tmp_path, capsys):
    _, state, cfg = weights
    path = tmp_path / "m.safetensors"
    _write_safetensors(path, state, cfg, **metadata)
    with pytest.raises(ValueError, match=text) as e:
        load_inference_model(str(path))
    assert "m.safetensors" in str(e.value) and "\n" not in str(e.value)
    code, err = run_cli(["export", "--weights", str(path), "--out", str(tmp_path / "e.safetensors")], capsys)
    assert code == 1 and len(err) == 1 and text in err[0], err


@pytest.mark.parametrize("corrupt", ["garbage", "header_beyond_file", "truncated"])
def test_corrupt_safetensors_files(corrupt, weights, tmp_path):
    _, state, cfg = weights
    good = tmp_path / "good.safetensors"
    _write_safetensors(good, state, cfg)
    raw = good.read_bytes()
    path = tmp_path / "m.safetensors"
    path.write_bytes({"garbage": b"\x00" * 64, "header_beyond_file": struct.pack("<Q", 1 << 40) + raw[8:],
                      "truncated": raw[: len(raw) - 100]}[corrupt])
    with pytest.raises(ValueError, match="m.safetensors") as e:
        load_inference_model(str(path))
    assert "\n" not in str(e.value)


def test_a_checkpoint_with_a_malformed_category_map_or_config(weights, tmp_path):
    path, _, _ = weights
    state = torch.load(path, weights_only=True)
    bad = tmp_path / "bad.pth"
    torch.save({**state, "dataset": {"category_names": "ab"}}, bad)
    with pytest.raises(ValueError, match=r"bad\.pth: 'dataset' must hold 'category_names'"):
        load_inference_model(str(bad))
    torch.save({**state, "config": {"model": {"head": {"num_classes": [2]}}}}, bad)
    with pytest.raises(ValueError, match=r"bad\.pth: the stored config \('config'\) is unusable"):
        load_inference_model(str(bad))
    torch.save({**state, "model": [1, 2]}, bad)
    with pytest.raises(ValueError, match=r"bad\.pth"):
        load_inference_model(str(bad))
