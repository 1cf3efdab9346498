"""`tensormask_infer` (C++, LibTorch) against the Python model: same weights and image → the same
detections (count, classes, scores; boxes within 1e-3; mask IoU ≥ 0.99), for every mask head and a
few backbone variants; plus its error paths and ``--help``."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
import torch

from tensormask.export import export_model

from .conftest import CATEGORIES, categories, infer_binary, make_model, save_checkpoint, tame_features, tiny_config, write_image

BINARY = infer_binary()
pytestmark = pytest.mark.skipif(
    BINARY is None, reason="tensormask_infer was not built (needs nlohmann-json3-dev + libstb-dev; set $TENSORMASK_INFER)"
)


def run_infer(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([BINARY, *args], capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def python_detections(model, cfg, path: str, threads: int) -> list[dict]:
    """`tensormask predict`'s path: PIL image, test resize (detectron2's: PIL bilinear), model at the
    original size, COCO entries; on ``threads`` threads, as the C++ run it is compared with (the
    reductions of GroupNorm in channels_last split by thread, and so round differently)."""
    from tensormask.data import load_image
    from tensormask.data.transforms import resize_image, resized_shape
    from tensormask.engine.evaluator import detections_to_coco

    rgb = load_image(path)
    h, w = rgb.shape[:2]
    nh, nw, _ = resized_shape(h, w, cfg.data.test_min_size, cfg.data.test_max_size)
    image = torch.from_numpy(np.array(rgb)).permute(2, 0, 1).contiguous()
    resized = resize_image(image, nh, nw)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            det = model([resized], output_sizes=[(h, w)])[0]
    finally:
        torch.set_num_threads(before)
    return detections_to_coco(det, 0, categories(cfg.model.head.num_classes)["contiguous_to_category_id"])


def mask_iou(a: dict, b: dict) -> float:
    from pycocotools import mask as mask_utils

    ma, mb = mask_utils.decode(a).astype(bool), mask_utils.decode(b).astype(bool)
    union = (ma | mb).sum()
    return 1.0 if union == 0 else float((ma & mb).sum() / union)


def assert_same_detections(py: list[dict], cpp: list[dict]) -> None:
    assert len(py) > 3, "the test model must produce several detections"
    assert len(cpp) == len(py)
    for i, (p, c) in enumerate(zip(py, cpp)):
        assert c["category_id"] == p["category_id"], i
        assert abs(c["score"] - p["score"]) < 1e-5, i
        assert np.allclose(c["bbox"], p["bbox"], atol=1e-3), (i, c["bbox"], p["bbox"])
        assert c["segmentation"]["size"] == p["segmentation"]["size"]
        assert mask_iou(c["segmentation"], p["segmentation"]) >= 0.99, i


VARIANTS = {
    "demo-bipyramid": {},
    "simple_aligned": {"model": {"head": {"mask_head": "simple_aligned"}}},
    "simple_natural-no-box-head": {"model": {"head": {"mask_head": "simple_natural", "box_head": False}}},
    "upscale_aligned-nearest-3-sizes": {"model": {"head": {"mask_head": "upscale_aligned", "upscale_lambda": 2,
                                                           "interpolation": "nearest", "window_sizes": [8, 12, 16]}}},
    "upscale_natural-mask_box-nms": {"model": {"head": {"mask_head": "upscale_natural", "upscale_lambda": 3,
                                                        "window_sizes": [9, 15]},
                                               "inference": {"nms_on": "mask_box", "score_thresh": 0.1}}},
    "demo-channels-last": {"model": {"inference": {"channels_last": True}}},
    "demo-head-GN-4-groups": {"model": {"head": {"norm": "GN", "gn_groups": 4}}},
    "demo-head-no-norm": {"model": {"head": {"norm": "none"}}},
    "R18-FrozenBN-msra-P2P6-sum": {"model": {"backbone": {"depth": 18, "norm": "FrozenBN", "freeze_at": 2, "style": "msra",
                                                          "input_format": "BGR", "pixel_mean": [103.53, 116.28, 123.675],
                                                          "pixel_std": [1.0, 1.0, 1.0]},
                                             "fpn": {"max_level": 6, "size_divisibility": 64, "fuse_type": "sum"},
                                             "inference": {"score_thresh": 0.15}}},
    "R18-none-torchvision": {"model": {"backbone": {"depth": 18, "norm": "none", "freeze_at": 0}}},
    "R50-BN-msra-P3P5": {"model": {"backbone": {"depth": 50, "norm": "BN", "freeze_at": 1, "style": "msra"},
                                          "fpn": {"min_level": 3}, "head": {"mask_head": "simple_aligned"}}},
}


def _variant(name: str, root, base=None) -> tuple:
    from tensormask.config import merge

    cfg = merge(base or tiny_config(), VARIANTS.get(name, {}))
    model = make_model(cfg)
    if cfg.model.backbone.norm == "BN":  # non-trivial running statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(7)
    with torch.no_grad():  # non-trivial GroupNorm affine parameters in the head towers
        for m in model.head.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.uniform_(0.8, 1.2)
                m.bias.uniform_(-0.1, 0.1)
    tame_features(model)
    ckpt = save_checkpoint(model, cfg, str(root / "model.pth"))
    out, cfg_json, _ = export_model(ckpt, str(root / "model.safetensors"))
    return model, cfg, out, cfg_json


@pytest.mark.parametrize("name", list(VARIANTS))
def test_parity_with_python(name, tmp_path):
    model, cfg, weights, cfg_json = _variant(name, tmp_path)
    image = write_image(str(tmp_path / "scene.png"))
    py = python_detections(model, cfg, image, threads=1)
    out = tmp_path / "out"
    run_infer("--model", weights, "--config", cfg_json, image, "--out", str(out), "--threshold", "0", "--threads", "1")
    with open(out / "results.json") as f:
        cpp = json.load(f)
    assert_same_detections(py, cpp)
    assert all(r["file_name"] == "scene.png" for r in cpp)
    assert {r["category_name"] for r in cpp} <= set(CATEGORIES["category_names"])
    assert (out / "scene_overlay.png").is_file()


SHIPPED = {
    # the paper's R50-FPN (P2–P7, 256 channels, 80 classes) tensor bipyramid; kaiming head init and a
    # high score threshold keep the random model's scores apart
    "tensormask_R50_FPN_6x.yaml": {"model": {"backbone": {"weights": None}, "head": {"init": "kaiming"},
                                             "inference": {"score_thresh": 0.85}}},
    "demo-tiny-cpu.yaml": {"model": {"inference": {"score_thresh": 0.25}}},
}


@pytest.mark.parametrize("config_file", list(SHIPPED))
def test_parity_shipped_configs(config_file, tmp_path):
    """The configs as shipped (only the test size made small)."""
    from tensormask.config import Config, load_config, merge

    from .conftest import REPO

    base = load_config(os.path.join(REPO, "configs", config_file), base=Config())
    base = merge(merge(base, SHIPPED[config_file]), {"data": {"test_min_size": 128, "test_max_size": 192}})
    model, cfg, weights, cfg_json = _variant(config_file, tmp_path, base)
    image = write_image(str(tmp_path / "scene.png"))
    py = python_detections(model, cfg, image, threads=2)
    proc = run_infer("--model", weights, "--config", cfg_json, image, "--threshold", "0", "--threads", "2")
    assert_same_detections(py, json.loads(proc.stdout))


def test_stdout_json_and_threshold(exported, tmp_path):
    _, weights, cfg_json, _ = exported
    image = write_image(str(tmp_path / "a.png"))
    all_dets = json.loads(run_infer("--model", weights, "--config", cfg_json, image, "--threshold", "0").stdout)
    some = json.loads(run_infer("--model", weights, "--config", cfg_json, image, "--threshold", "0.4").stdout)
    assert len(some) == sum(d["score"] >= 0.4 for d in all_dets) and 0 < len(some) < len(all_dets)


def test_help():
    proc = run_infer("--help")
    assert "usage: tensormask_infer" in proc.stdout and "--threshold" in proc.stdout


def _one_line_error(proc, message: str, code: int = 1) -> None:
    assert proc.returncode == code, proc
    first = proc.stderr.strip().splitlines()[0]
    assert first.startswith("tensormask_infer: error:") and message in first, proc.stderr
    assert "Traceback" not in proc.stderr and "Exception raised from" not in proc.stderr


def test_errors(exported, tmp_path):
    _, weights, cfg_json, _ = exported
    image = write_image(str(tmp_path / "a.png"))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(open(weights, "rb").read()[:5000])
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{")
    other = json.load(open(cfg_json))
    other["config"]["model"]["head"]["mask_head"] = "simple_aligned"
    other_json = tmp_path / "other.json"
    other_json.write_text(json.dumps(other))
    unknown = json.load(open(cfg_json))
    unknown["config"]["model"]["head"]["mask_head"] = "fancy"
    unknown_json = tmp_path / "unknown.json"
    unknown_json.write_text(json.dumps(unknown))
    m, c = ("--model", weights), ("--config", cfg_json)
    _one_line_error(run_infer(*m, *c, str(tmp_path / "none.png"), check=False), "image file not found")
    _one_line_error(run_infer(*m, *c, str(corrupt), check=False), "cannot read image")
    _one_line_error(run_infer("--model", str(tmp_path / "none.safetensors"), *c, image, check=False), "not found")
    _one_line_error(run_infer("--model", str(truncated), *c, image, check=False), "truncated")
    _one_line_error(run_infer(*m, "--config", str(bad_json), image, check=False), "not valid JSON")
    _one_line_error(run_infer(*m, "--config", str(other_json), image, check=False), "unexpected tensors")
    _one_line_error(run_infer(*m, "--config", str(unknown_json), image, check=False), "mask_head 'fancy'")
    _one_line_error(run_infer(*m, *c, image, "--threshold", "x", check=False), "--threshold expects a number", 2)
    _one_line_error(run_infer(*m, *c, image, "--bogus", check=False), "unknown option --bogus", 2)
    _one_line_error(run_infer(*c, image, check=False), "--model is required", 2)


def _png(width: int, height: int, idat: bytes = b"\x78\x9c\x03\x00\x00\x00\x00\x01") -> bytes:
    """A PNG whose IHDR declares ``width`` × ``height`` RGB pixels, followed by ``idat`` (a tiny body)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _jpeg_header(width: int, height: int) -> bytes:
    """SOI + a baseline SOF0 frame header declaring ``width`` × ``height``, no image data."""
    import struct

    sof = struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00"
    return b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xd9"


def test_hostile_images(exported, tmp_path):
    """Corrupt, truncated, empty and oversized images: one line each, exit status 1, before decoding (a
    PNG declaring 60000×60000 would need 10.8 GB decoded; the limit is 100 megapixels, as in Python)."""
    _, weights, cfg_json, _ = exported
    good = open(write_image(str(tmp_path / "good.png")), "rb").read()
    cases = {
        "empty.png": (b"", "empty file"),
        "truncated.png": (good[: len(good) // 2], "cannot read image"),
        "header-only.png": (good[:40], "cannot read image"),
        "text.png": (b"not an image at all\n", "cannot read image"),
        "huge.png": (_png(60000, 60000), "declares 60000x60000 = 3600000000 pixels, more than the limit of 100000000"),
        "just-over.png": (_png(10001, 10000), "more than the limit of 100000000"),
        "wide.png": (_png(2**31 - 1, 1), "cannot read image"),  # stb itself may refuse > 2^24 first
        "zero.png": (_png(0, 10), "cannot read image"),
        "huge.jpg": (_jpeg_header(60000, 60000), "declares 60000x60000 = 3600000000 pixels"),
        "bitflip.png": (good[:60] + bytes([good[60] ^ 0x40]) + good[61:], None),  # decodes or fails cleanly
    }
    for name, (data, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        proc = run_infer("--model", weights, "--config", cfg_json, str(path), check=False)
        if message is None and proc.returncode == 0:
            continue
        _one_line_error(proc, message or "cannot read image")
        assert str(path) in proc.stderr.splitlines()[0], (name, proc.stderr)
    # a good image after a refused one is never reached: the first error stops the run
    proc = run_infer("--model", weights, "--config", cfg_json, str(tmp_path / "huge.png"), str(tmp_path / "good.png"),
                     check=False)
    _one_line_error(proc, "more than the limit")


def test_hostile_model_files(exported, tmp_path):
    """Malformed weights and configs through the binary: one line naming the file (the C++ reader is
    fuzzed in-process by tests/cpp/test_io_hostile.cpp; this checks the wiring of its errors)."""
    import struct

    _, weights, cfg_json, _ = exported
    image = write_image(str(tmp_path / "a.png"))
    raw = open(weights, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]

    def pack(h: dict | bytes, body: bytes = data) -> bytes:
        text = h if isinstance(h, bytes) else json.dumps(h).encode()
        return struct.pack("<Q", len(text)) + text + body

    name = next(k for k in header if k != "__metadata__")
    other = next(k for k in header if k not in ("__metadata__", name))
    overlap = json.loads(json.dumps(header))
    overlap[other]["data_offsets"] = overlap[name]["data_offsets"]
    overlap[other]["shape"], overlap[other]["dtype"] = overlap[name]["shape"], overlap[name]["dtype"]
    nested = b'{"__metadata__": {"x": ' + b"[" * 100000 + b"]" * 100000 + b"}}"
    nan_data = bytearray(data)
    nan_data[header[name]["data_offsets"][0]:header[name]["data_offsets"][0] + 4] = struct.pack("<f", float("nan"))
    weight_cases = {
        "length.safetensors": (struct.pack("<Q", 2**63) + raw[8:], "truncated: header of 9223372036854775808 bytes"),
        "overlap.safetensors": (pack(overlap), "overlapping data_offsets"),
        "nested.safetensors": (pack(nested), "nested deeper than 64"),
        "nan.safetensors": (pack(header, bytes(nan_data)), "holds NaN or infinite values"),
        "utf8.safetensors": (pack(b'{"\xff": 1}'), "not valid JSON"),
    }
    for fname, (blob, message) in weight_cases.items():
        path = tmp_path / fname
        path.write_bytes(blob)
        proc = run_infer("--model", str(path), "--config", cfg_json, image, check=False)
        _one_line_error(proc, message)
        assert str(path) in proc.stderr, (fname, proc.stderr)
    cfg = json.load(open(cfg_json))
    config_cases = {
        "classes.json": (("model", "head", "num_classes"), 10**12, "model.head.num_classes must be in 1..100000"),
        "window.json": (("model", "head", "window_sizes"), [0, 5], "window_sizes[i] must be in 1..128, got 0"),
        "type.json": (("model", "fpn", "out_channels"), True, "'model.fpn.out_channels' must be an integer, got true"),
        "score.json": (("model", "inference", "score_thresh"), float("nan"), "not valid JSON"),
        "size.json": (("data", "test_max_size"), 10**9, "data.test_max_size must be in 1..8192"),
    }
    for fname, (keys, value, message) in config_cases.items():
        bad = json.loads(json.dumps(cfg))
        section = bad["config"]
        for k in keys[:-1]:
            section = section[k]
        section[keys[-1]] = value
        path = tmp_path / fname
        path.write_text(json.dumps(bad))  # NaN is written as the non-JSON literal NaN
        proc = run_infer("--model", weights, "--config", str(path), image, check=False)
        _one_line_error(proc, message)
        assert str(path) in proc.stderr, (fname, proc.stderr)
