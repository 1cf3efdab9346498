"""`tensormask export`: the safetensors file loads back into the Python model with equal outputs, and
the JSON holds the full config and the category map."""

from __future__ import annotations

import json

import pytest
import torch

from tensormask.config import Config, from_dict, to_dict
from tensormask.engine.checkpoint import load_inference_model
from tensormask.export import main as export_main

from .conftest import CATEGORIES


def test_round_trip_equal_outputs(exported):
    ckpt, out, cfg_json, cfg = exported
    ref, _, _ = load_inference_model(ckpt)
    model, meta, cfg2 = load_inference_model(out)
    assert meta == CATEGORIES
    assert cfg2 == cfg
    for (k1, v1), (k2, v2) in zip(ref.state_dict().items(), model.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2), k1
    image = torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ref([image])[0], model([image])[0]
    assert len(a["scores"]) > 0
    for key in ("boxes", "scores", "labels", "masks"):
        assert torch.equal(a[key], b[key]), key


def test_config_json(exported):
    _, _, cfg_json, cfg = exported
    with open(cfg_json) as f:
        doc = json.load(f)
    assert doc["format"] == "tensormask" and doc["version"] == 1
    assert from_dict(doc["config"], Config()) == cfg
    assert doc["config"] == to_dict(cfg)
    assert doc["category_names"] == CATEGORIES["category_names"]
    assert doc["contiguous_to_category_id"] == CATEGORIES["contiguous_to_category_id"]


def test_cli(exported, tmp_path, capsys):
    ckpt = exported[0]
    out = tmp_path / "m.safetensors"
    assert export_main(["--weights", ckpt, "--out", str(out), "--config-out", str(tmp_path / "c.json")]) == 0
    assert out.is_file() and (tmp_path / "c.json").is_file()
    assert "exported" in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["--weights", "/nonexistent.pth", "--out", "{tmp}/m.safetensors"], "weights file not found"),
    (["--weights", "{ckpt}", "--out", "{tmp}/m.bin"], "--out must name a .safetensors file"),
    (["--weights", "{ckpt}", "--out", "{tmp}/missing/m.safetensors"], "does not exist"),
])
def test_cli_errors(exported, tmp_path, capsys, args, message):
    args = [a.format(tmp=tmp_path, ckpt=exported[0]) for a in args]
    assert export_main(args) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
