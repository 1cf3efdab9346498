"""Training faults: SIGKILL during a checkpoint write, --resume after a kill, a checkpoint of another
config, and non-finite losses/weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from tensormask.config import merge, save_config
from tensormask.engine.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, load_inference_model
from tensormask.engine.trainer import train

from .conftest import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_child(script: str, *args: str, wait_for: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess | int:
    """Run ``script`` in a fresh interpreter; with ``wait_for``, SIGKILL it once it prints that line
    and return its exit status."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-c", textwrap.dedent(script), *args]
    if wait_for is None:
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.strip() == wait_for:
                proc.send_signal(signal.SIGKILL)
                break
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


SLOW_SAVE = """
import io, os, sys, time, torch
from tensormask.engine import checkpoint as ck

folder = sys.argv[1]
ck.save_checkpoint(folder, 1, {"model": {"w": torch.arange(10.0)}, "iteration": 1})
real_save = torch.save

def half_then_hang(obj, f, *args, **kwargs):
    buf = io.BytesIO()
    real_save(obj, buf, *args, **kwargs)
    data = buf.getvalue()
    f.write(data[: len(data) // 2])
    f.flush()
    os.fsync(f.fileno())
    print("WRITING", flush=True)
    time.sleep(600)

ck.torch.save = half_then_hang
ck.save_checkpoint(folder, 2, {"model": {"w": torch.zeros(100000)}, "iteration": 2})
"""


def test_sigkill_during_checkpoint_write_keeps_the_previous_one(tmp_path):
    status = run_child(SLOW_SAVE, str(tmp_path), wait_for="WRITING")
    assert status == -signal.SIGKILL
    leftovers = [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]
    assert len(leftovers) == 1  # the half-written temporary file ...
    assert [it for it, _ in list_checkpoints(str(tmp_path))] == [1]  # ... is never taken for a checkpoint
    path = latest_checkpoint(str(tmp_path))
    assert os.path.basename(path) == "model_0000001.pth"
    state = load_checkpoint(path)
    assert state["iteration"] == 1 and torch.equal(state["model"]["w"], torch.arange(10.0))
    with pytest.raises(ValueError, match="cannot read checkpoint"):  # the fragment itself is unreadable
        load_checkpoint(str(tmp_path / leftovers[0]))


KILLED_TRAINING = """
import os, signal, sys
from tensormask import cli
from tensormask.engine import trainer

real = trainer.save_checkpoint

def save_then_die(folder, iteration, state, keep_last=3):
    path = real(folder, iteration, state, keep_last)
    if iteration == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9 right after the first checkpoint
    return path

trainer.save_checkpoint = save_then_die
cli.main(["train", "--config", sys.argv[1], "--no-progress"])
"""


def test_resume_after_sigkill_continues_from_the_last_checkpoint(shapes_dataset, tmp_path, capsys):
    cfg = tiny_config(shapes_dataset, tmp_path / "killed")
    config_path = tmp_path / "killed.yaml"
    save_config(cfg, str(config_path))
    child = run_child(KILLED_TRAINING, str(config_path))
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    assert [it for it, _ in list_checkpoints(cfg.output_dir)] == [2]

    from tensormask.cli import main

    assert main(["train", "--config", str(config_path), "--resume", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "resumed from" in out and "model_0000002.pth at iteration 2" in out
    resumed = load_checkpoint(latest_checkpoint(cfg.output_dir))
    assert resumed["iteration"] == 4
    straight = tiny_config(shapes_dataset, tmp_path / "straight")
    expected = load_checkpoint(train(straight, progress=False))["model"]
    for k, v in expected.items():  # bit-identical to the run that was never killed
        assert torch.equal(resumed["model"][k], v), k


def test_checkpoint_of_another_config_is_a_clear_error(shapes_dataset, tmp_path):
    cfg = tiny_config(shapes_dataset, tmp_path / "run", max_iter=1)
    path = train(cfg, progress=False)
    other = merge(cfg, {"model": {"head": {"mask_channels": 8}}})
    with pytest.raises(ValueError, match="does not match the model config"):
        load_inference_model(path, config=other)
    with pytest.raises(ValueError, match="different model config"):
        train(merge(other, {"solver": {"max_iter": 2}}), resume=True, progress=False)


def poisoned_forward(real, at: int, factor: float = float("nan"), grad: bool = False):
    """TensorMask.forward that, at training call ``at`` (0-based), multiplies ``loss_mask`` by
    ``factor`` or (``grad=True``) adds a zero term whose gradient w.r.t. the first parameter is inf."""
    calls = [0]

    def forward(model, images, targets=None, *args, **kwargs):
        losses = real(model, images, targets, *args, **kwargs)
        if model.training:
            if calls[0] == at:
                bad = _inf_grad(next(model.parameters())) if grad else None
                losses = dict(losses, loss_mask=losses["loss_mask"] + bad if grad else losses["loss_mask"] * factor)
            calls[0] += 1
        return losses

    return forward


def _inf_grad(p: torch.Tensor) -> torch.Tensor:
    """A zero-valued term whose gradient w.r.t. ``p`` is +inf."""

    class InfGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.new_zeros(())

        @staticmethod
        def backward(ctx, g):
            return torch.full(p.shape, float("inf"), dtype=p.dtype)

    return InfGrad.apply(p)


@pytest.mark.parametrize("factor", [float("nan"), float("inf")])
def test_non_finite_loss_is_reported_with_the_iteration(shapes_dataset, tmp_path, monkeypatch, factor):
    from tensormask.modeling.tensormask import TensorMask

    monkeypatch.setattr(TensorMask, "forward", poisoned_forward(TensorMask.forward, at=2, factor=factor))
    cfg = tiny_config(shapes_dataset, tmp_path / "run")
    with pytest.raises(FloatingPointError, match=r"non-finite loss at iteration 2: .*loss_mask="):
        train(cfg, progress=False)
    # the checkpoint of iteration 2 (written before the bad iteration) is intact
    state = load_checkpoint(latest_checkpoint(cfg.output_dir))
    assert state["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_non_finite_weights_never_overwrite_a_checkpoint(shapes_dataset, tmp_path, monkeypatch):
    """A finite loss with an inf gradient makes the weights non-finite; the next checkpoint is refused."""
    from tensormask.modeling.tensormask import TensorMask

    monkeypatch.setattr(TensorMask, "forward", poisoned_forward(TensorMask.forward, at=1, grad=True))
    cfg = tiny_config(shapes_dataset, tmp_path / "run", clip_grad_norm=0.0)
    with pytest.raises(FloatingPointError, match=r"non-finite weights after iteration 2 .*checkpoint not written"):
        train(cfg, progress=False)
    assert list_checkpoints(cfg.output_dir) == []
