"""Bad input to every ``tensormask`` command: missing files, files where folders are expected (and
the reverse), unreadable folders and invalid options give one line on stderr and a non-zero exit
(1 for bad data, 2 for bad options), with no traceback unless ``--debug``. Run in-process through
:func:`tensormask.cli.main`, plus one subprocess run of the installed entry point."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tensormask.cli import COMMANDS, main


@pytest.fixture()
def paths(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "dir").mkdir()
    (tmp_path / "not_a_ckpt.pth").write_text("{}")
    (tmp_path / "broken.yaml").write_text("model: [1, 2\n")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    return {k: str(tmp_path / v) for k, v in dict(
        missing="missing", file="file.txt", dir="dir", ckpt="not_a_ckpt.pth", broken="broken.yaml",
        list="list.yaml", under_file="file.txt/sub", out="out").items()}


# (argv with {placeholders}, exit code, text the one-line error must contain)
CASES = {
    "demo-negative-images": (["demo", "--train-images", "-5", "--out", "{out}"], 1, "num_images"),
    "demo-out-under-a-file": (["demo", "--out", "{under_file}"], 1, "Not a directory"),
    "demo-negative-minutes": (["demo", "--minutes", "-1", "--out", "{out}"], 1, "--minutes must be"),
    "demo-bad-precision": (["demo", "--precision", "1.5", "--out", "{out}"], 1, "--precision must be in [0, 1]"),
    "demo-bad-option": (["demo", "--bogus"], 2, "unrecognized arguments: --bogus"),
    "demo-bad-override": (["demo", "--out", "{out}", "solver.max_iter=many"], 1, "solver.max_iter"),
    "train-missing-config": (["train", "--config", "{missing}.yaml"], 1, "does not exist"),
    "train-config-is-a-dir": (["train", "--config", "{dir}"], 1, "Is a directory"),
    "train-broken-yaml": (["train", "--config", "{broken}"], 1, "not valid YAML"),
    "train-yaml-not-a-mapping": (["train", "--config", "{list}"], 1, "mapping"),
    "train-unknown-key": (["train", "--config", "configs/demo-tiny-cpu.yaml", "solver.nope=1"], 1, "unknown config key 'solver.nope'"),
    "train-wrong-type": (["train", "--config", "configs/demo-tiny-cpu.yaml", "solver.max_iter=abc"], 1, "'solver.max_iter' must be of type int"),
    "train-bad-override-syntax": (["train", "--config", "configs/demo-tiny-cpu.yaml", "max_iter"], 1, "section.key=value"),
    "train-missing-json": (["train", "--config", "configs/demo-tiny-cpu.yaml", "--output-dir", "{out}",
                            "data.train_json={missing}.json"], 1, "annotation file not found"),
    "train-output-under-a-file": (["train", "--config", "configs/demo-tiny-cpu.yaml", "--output-dir", "{under_file}"],
                                  1, "Not a directory"),
    "train-no-config": (["train"], 2, "--config"),
    "train-negative-minutes": (["train", "--config", "configs/demo-tiny-cpu.yaml", "--minutes", "-1"], 1, "--minutes must be"),
    "eval-missing-weights": (["eval", "--weights", "{missing}.pth"], 1, "weights file not found"),
    "eval-not-a-checkpoint": (["eval", "--weights", "{ckpt}"], 1, "cannot read checkpoint"),
    "eval-weights-is-a-dir": (["eval", "--weights", "{dir}"], 1, "not found"),
    "eval-bad-dataset-arity": (["eval", "--weights", "{ckpt}", "--dataset", "a.json"], 2, "--dataset"),
    "predict-missing-input": (["predict", "{missing}.png", "--weights", "{missing}.pth", "--out", "{out}"], 1, "no such file or folder"),
    "predict-empty-folder": (["predict", "{dir}", "--weights", "{ckpt}", "--out", "{out}"], 1, "no images found"),
    "predict-bad-threshold": (["predict", "x.png", "--weights", "w.pth", "--out", "o", "--threshold", "abc"], 2, "invalid float value"),
    "predict-bad-dtype": (["predict", "x.png", "--weights", "w.pth", "--out", "o", "--dtype", "int8"], 2, "invalid choice"),
    "eval-bad-dtype": (["eval", "--weights", "w.pth", "--dtype", "half"], 2, "invalid choice"),
    "calibrate-missing-weights": (["calibrate", "--weights", "{missing}.pth"], 1, "weights file not found"),
    "calibrate-bad-iou": (["calibrate", "--weights", "{ckpt}", "--iou-threshold", "2"], 1, "--iou-threshold"),
    "calibrate-bad-iou-type": (["calibrate", "--weights", "{ckpt}", "--iou-type", "keypoints"], 2, "invalid choice"),
    "make-synthetic-under-a-file": (["make-synthetic", "{under_file}", "--images", "1"], 1, "Not a directory"),
    "make-synthetic-negative": (["make-synthetic", "{out}", "--images", "-1"], 2, "--images must be >= 0"),
    "make-synthetic-bad-preset": (["make-synthetic", "{out}", "--preset", "nope"], 2, "invalid choice"),
    "convert-missing": (["convert-detectron2", "{missing}.pkl", "{out}.safetensors"], 1, "does not exist"),
    "convert-not-a-checkpoint": (["convert-detectron2", "{ckpt}", "{out}.safetensors"], 1, "could not read"),
    "convert-src-is-a-dir": (["convert-detectron2", "{dir}", "{out}.safetensors"], 1, "does not exist"),
    "convert-bad-mask-head": (["convert-detectron2", "a.pkl", "b.safetensors", "--mask-head", "x"], 2, "invalid choice"),
    "unknown-command": (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
}
if "export" in COMMANDS:
    CASES.update({
        "export-missing-weights": (["export", "--weights", "{missing}.pth", "--out", "{out}.safetensors"], 1, "not found"),
        "export-out-folder-missing": (["export", "--weights", "{ckpt}", "--out", "{under_file}/o.safetensors"], 1, "--out"),
        "export-no-out": (["export", "--weights", "{ckpt}"], 2, "--out"),
    })
if "ablate" in COMMANDS:
    CASES.update({
        "ablate-unknown-group": (["ablate", "--dataset", "{dir}", "--out", "{out}", "--variants", "nope", "--iters", "1"],
                                 1, "unknown group 'nope'"),
        "ablate-no-budget": (["ablate", "--dataset", "{dir}", "--out", "{out}", "--variants", "table1"], 2, "--iters"),
    })


def run_in_process(argv, capsys) -> tuple[int, list[str]]:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse errors
        code = e.code
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_non_zero(case, paths, capsys, monkeypatch):
    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs/ is relative
    argv, code, text = CASES[case]
    argv = [a.format(**paths) for a in argv]
    got, err = run_in_process(argv, capsys)
    assert got == code, err
    assert len(err) == 1, err
    assert "error:" in err[0] and text in err[0], err[0]
    assert "Traceback" not in err[0]


def test_every_command_is_covered():
    covered = {CASES[c][0][0] for c in CASES}
    assert set(COMMANDS) <= covered, set(COMMANDS) - covered


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any folder")
def test_unreadable_folder(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "a.png").write_bytes(b"x")
    locked.chmod(0)
    try:
        code, err = run_in_process(["predict", str(locked), "--weights", "w.pth", "--out", str(tmp_path / "o")], capsys)
        assert code == 1 and len(err) == 1 and "error:" in err[0]
        code, err = run_in_process(["make-synthetic", str(locked / "sub"), "--images", "1"], capsys)
        assert code == 1 and len(err) == 1 and "Permission denied" in err[0]
    finally:
        locked.chmod(0o755)


def test_debug_shows_the_traceback(paths):
    with pytest.raises(FileNotFoundError):
        main(["eval", "--weights", paths["missing"] + ".pth", "--debug"])


def test_entry_point_subprocess_has_no_traceback(paths):
    """The installed ``tensormask`` script (or ``python -m tensormask.cli``): one line, exit 1."""
    proc = subprocess.run([sys.executable, "-m", "tensormask.cli", "train", "--config", paths["broken"]],
                          capture_output=True, text=True, timeout=300)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(err) == 1, proc.stderr
    assert err[0].startswith("tensormask train: error: ") and "Traceback" not in proc.stderr
