"""Hostile weight files: a pickle whose payload runs ``os.system`` is refused by every entry point
that takes a checkpoint or weights file, with one line naming the file and what was refused, and the
payload never runs (its sentinel file is not created). Checkpoints hold only tensors and plain data
(``weights_only=True``); those of earlier versions (a NumPy RNG state) still load, with exactly the
NumPy globals that rebuild it allowed."""

from __future__ import annotations

import os
import pickle
import random

import numpy as np
import pytest
import torch

from tensormask.cli import main
from tensormask.config import save_config
from tensormask.engine.checkpoint import load_checkpoint, load_inference_model, rng_state, set_rng_state
from tensormask.engine.trainer import train
from tensormask.safeio import ForbiddenGlobalError

from .conftest import tiny_config

REFUSED = "it references '"  # ... 'posix.system' (or nt.system), which ... never contains


class Payload:
    """Pickles as ``os.system(f"touch {sentinel}")``: run if the loader executes anything."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return os.system, (f"touch {self.sentinel}",)


@pytest.fixture()
def hostile(tmp_path):
    """A sentinel path and hostile files: a training-checkpoint-like ``.pth``, a detectron2-like
    ``.pkl``, and a run folder whose newest checkpoint is the hostile one."""
    sentinel = tmp_path / "payload_ran"
    evil = {"model": {"w": torch.zeros(2)}, "iteration": 10, "config": {}, "rng": Payload(sentinel)}
    pth = tmp_path / "evil.pth"
    torch.save(evil, pth)
    pkl = tmp_path / "evil.pkl"
    pkl.write_bytes(pickle.dumps({"model": {"backbone.bottom_up.stem.conv1.weight": Payload(sentinel)},
                                  "__author__": "x"}))
    run = tmp_path / "run"
    run.mkdir()
    torch.save(evil, run / "model_0000010.pth")
    (run / "last_checkpoint").write_text("model_0000010.pth\n")
    return {"sentinel": sentinel, "pth": str(pth), "pkl": str(pkl), "run": str(run), "tmp": tmp_path}


def run_cli(argv, capsys) -> tuple[int, list[str]]:
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err.strip().splitlines()


def assert_refused(code, err, name, sentinel):
    assert not sentinel.exists(), "the payload ran"
    assert code == 1 and len(err) == 1, err
    assert "refusing to load" in err[0] and name in err[0] and REFUSED in err[0] and "system'" in err[0], err[0]


@pytest.mark.parametrize("command", ["predict", "eval", "export", "calibrate"])
def test_inference_commands_refuse_a_hostile_checkpoint(command, hostile, capsys):
    tmp = hostile["tmp"]
    image = tmp / "x.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(image)
    argv = {
        "predict": ["predict", str(image), "--weights", hostile["pth"], "--out", str(tmp / "out"), "--device", "cpu"],
        "eval": ["eval", "--weights", hostile["pth"], "--device", "cpu"],
        "export": ["export", "--weights", hostile["pth"], "--out", str(tmp / "m.safetensors")],
        "calibrate": ["calibrate", "--weights", hostile["pth"], "--device", "cpu"],
    }[command]
    assert_refused(*run_cli(argv, capsys), "evil.pth", hostile["sentinel"])
    assert not (tmp / "m.safetensors").exists()


@pytest.mark.parametrize("suffix", ["pth", "pkl"])
def test_convert_detectron2_refuses_a_hostile_file(suffix, hostile, capsys):
    out = hostile["tmp"] / "out.safetensors"
    code, err = run_cli(["convert-detectron2", hostile[suffix], str(out)], capsys)
    assert_refused(code, err, f"evil.{suffix}", hostile["sentinel"])
    assert not out.exists()


@pytest.fixture()
def train_config(shapes_dataset, hostile):
    cfg = tiny_config(shapes_dataset, hostile["run"])
    path = hostile["tmp"] / "config.yaml"
    save_config(cfg, str(path))
    return str(path)


def test_train_resume_refuses_a_hostile_checkpoint(train_config, hostile, capsys):
    code, err = run_cli(["train", "--config", train_config, "--resume", "--no-progress"], capsys)
    assert_refused(code, err, "model_0000010.pth", hostile["sentinel"])


@pytest.mark.parametrize("suffix", ["pth", "pkl"])
def test_train_refuses_hostile_backbone_weights(suffix, train_config, hostile, capsys):
    code, err = run_cli(["train", "--config", train_config, "--no-progress", "--output-dir", str(hostile["tmp"] / "o"),
                         f"model.backbone.weights={hostile[suffix]}"], capsys)
    assert_refused(code, err, f"evil.{suffix}", hostile["sentinel"])


def test_python_api_refuses_a_hostile_checkpoint(hostile):
    with pytest.raises(ForbiddenGlobalError, match=r"refusing to load .*evil\.pth: it references '\w+\.system'"):
        load_inference_model(hostile["pth"])
    with pytest.raises(ForbiddenGlobalError, match="model_0000010.pth"):
        load_checkpoint(os.path.join(hostile["run"], "model_0000010.pth"))
    import tensormask

    with pytest.raises(ForbiddenGlobalError, match=r"refusing to load .*evil\.pth"):
        tensormask.load(hostile["pth"], "cpu")
    assert not hostile["sentinel"].exists()


def test_an_allowed_global_cannot_smuggle_a_payload(hostile):
    """The NumPy allow-list of old checkpoints rebuilds uint32 arrays, not object arrays."""
    path = hostile["tmp"] / "object_array.pth"
    torch.save({"model": {}, "rng": {"numpy": np.array([Payload(hostile["sentinel"])], dtype=object)}}, path)
    with pytest.raises(ForbiddenGlobalError, match="object_array.pth"):
        load_checkpoint(str(path))
    assert not hostile["sentinel"].exists()


def test_checkpoints_hold_only_tensors_and_plain_data(shapes_dataset, tmp_path):
    """What the trainer writes loads with weights_only=True and no allow-list; the RNG states round-trip."""
    cfg = tiny_config(shapes_dataset, tmp_path / "run", max_iter=1, steps=[], warmup_iters=0, checkpoint_period=0)
    path = train(cfg, progress=False)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    state = torch.load(path, weights_only=True)
    assert set(state) >= {"model", "optimizer", "scheduler", "scaler", "rng", "iteration", "config", "dataset"}
    set_rng_state(state["rng"])
    expected = (random.random(), np.random.rand(), torch.rand(1))
    set_rng_state(state["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected


def _as_numpy1_pickle(path):
    """Rewrite a torch.save file as NumPy 1 would have pickled its arrays (``numpy.core`` names)."""
    import zipfile

    with zipfile.ZipFile(path) as zin:
        entries = [(info, zin.read(info.filename)) for info in zin.infolist()]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zout:
        for info, data in entries:
            if info.filename.endswith("data.pkl"):
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            zout.writestr(info, data)


@pytest.mark.parametrize("numpy_major", [2, 1])
def test_an_old_checkpoint_with_a_numpy_rng_state_still_loads(tmp_path, numpy_major):
    """Earlier versions stored ``np.random.get_state()`` (an ndarray) as is."""
    np.random.seed(123)
    np.random.rand(7)  # some position inside the key
    old = {"model": {"w": torch.ones(3)}, "iteration": 5, "config": {},
           "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}}
    expected = np.random.rand(5)
    path = tmp_path / "model_0000005.pth"
    torch.save(old, path)
    if numpy_major == 1:
        _as_numpy1_pickle(path)
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    assert "numpy.ndarray" in unsafe and (numpy_major == 2 or "numpy.core.multiarray._reconstruct" in unsafe)
    state = load_checkpoint(str(path))
    set_rng_state(state["rng"])
    np.testing.assert_array_equal(np.random.rand(5), expected)
    # re-saved in the new form: no allow-list needed any more
    new = {**state, "rng": rng_state()}
    torch.save(new, tmp_path / "resaved.pth")
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(tmp_path / "resaved.pth")) == []
    draws = np.random.rand(3)
    set_rng_state(new["rng"])
    np.testing.assert_array_equal(np.random.rand(3), draws)


def test_no_reader_in_the_project_can_run_code():
    """Source scan: every torch.load goes through tensormask.safeio (weights_only=True), the only
    Unpickler is the restricted one, YAML is read with safe_load only."""
    import re

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    forbidden = [
        (re.compile(r"weights_only\s*=\s*False"), None),
        (re.compile(r"\bpickle\.loads?\(|\bUnpickler\(|\bdill\.|\bjoblib\.load|\bnp\.load\([^)]*allow_pickle\s*=\s*True"),
         None),
        (re.compile(r"\byaml\.(load|unsafe_load|full_load|load_all)\("), None),
        (re.compile(r"\btorch\.load\((?!weights_only=True\)``)"), "python/tensormask/safeio.py"),
    ]
    found = []
    for top in ("python", "benchmarks", "tools", "examples"):
        for folder, _, files in os.walk(os.path.join(repo, top)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, repo)
                with open(path, encoding="utf-8") as f:
                    for n, line in enumerate(f, 1):
                        for pattern, allowed_in in forbidden:
                            if pattern.search(line) and rel != allowed_in:
                                found.append(f"{rel}:{n}: {line.strip()}")
    assert not found, "\n".join(found)
