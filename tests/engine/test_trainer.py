"""Training: runs, logs, checkpoints atomically, resumes bit-identically, and DDP with 2 gloo
processes gives the loss of one process with the doubled batch."""

from __future__ import annotations

import json
import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from tensormask.config import merge
from tensormask.engine.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from tensormask.engine.trainer import IterationBatchSampler, autocast_dtype, lr_factor, train

from .conftest import tiny_config


def read_metrics(folder):
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_train_writes_checkpoints_metrics_and_curve(shapes_dataset, tmp_path):
    cfg = tiny_config(shapes_dataset, tmp_path / "run", keep_last=1)
    path = train(cfg, progress=False)
    assert os.path.basename(path) == "model_0000004.pth"
    assert [it for it, _ in list_checkpoints(cfg.output_dir)] == [4]  # keep_last=1
    state = load_checkpoint(path)
    assert state["iteration"] == 4 and state["dataset"]["category_names"][0] == "disk"
    assert set(state) >= {"model", "optimizer", "scheduler", "scaler", "rng", "config"}
    metrics = read_metrics(cfg.output_dir)
    assert [m["iteration"] for m in metrics] == [1, 2, 3, 4]
    assert all(k in metrics[0] for k in ("loss", "loss_cls", "loss_box", "loss_mask", "lr"))
    assert os.path.getsize(os.path.join(cfg.output_dir, "loss_curve.png")) > 0
    assert os.path.exists(os.path.join(cfg.output_dir, "config.yaml"))


def test_resume_is_bit_identical(shapes_dataset, tmp_path):
    straight = tiny_config(shapes_dataset, tmp_path / "straight")
    train(straight, progress=False)
    half = tiny_config(shapes_dataset, tmp_path / "resumed", max_iter=2)
    train(half, progress=False)
    train(merge(half, {"solver": {"max_iter": 4}}), resume=True, progress=False)
    a = load_checkpoint(latest_checkpoint(straight.output_dir))["model"]
    b = load_checkpoint(latest_checkpoint(half.output_dir))["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_autocast_dtype_per_device_and_cpu_support(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype("none", cpu) is None and autocast_dtype("none", cuda) is None
    assert autocast_dtype("bf16", cuda) == torch.bfloat16 and autocast_dtype("fp16", cuda) == torch.float16
    assert autocast_dtype("fp16", cpu) is None  # CUDA only: float32 on the CPU
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert autocast_dtype("bf16", cpu) == torch.bfloat16
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert autocast_dtype("bf16", cpu) is None  # emulated bf16 would be slower than float32
    with pytest.raises(ValueError, match="solver.amp must be one of none, bf16, fp16; got 'bf32'"):
        autocast_dtype("bf32", cpu)


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="this CPU has no oneDNN bf16")
def test_bf16_training_on_cpu_keeps_float32_weights_and_resumes(shapes_dataset, tmp_path):
    straight = tiny_config(shapes_dataset, tmp_path / "straight", amp="bf16")
    train(straight, progress=False)
    half = tiny_config(shapes_dataset, tmp_path / "resumed", max_iter=2, amp="bf16")
    train(half, progress=False)
    train(merge(half, {"solver": {"max_iter": 4}}), resume=True, progress=False)
    a = load_checkpoint(latest_checkpoint(straight.output_dir))["model"]
    b = load_checkpoint(latest_checkpoint(half.output_dir))["model"]
    assert all(v.dtype == torch.float32 for v in a.values() if v.is_floating_point())
    assert all(torch.isfinite(v).all() for v in a.values() if v.is_floating_point())
    for k in a:
        assert torch.equal(a[k], b[k]), k
    losses = [m["loss"] for m in read_metrics(straight.output_dir)]
    assert all(math.isfinite(x) for x in losses)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
@pytest.mark.parametrize("amp", ["none", "bf16", "fp16"])
def test_cuda_training_runs_resumes_and_keeps_float32_weights(shapes_dataset, tmp_path, amp):
    """On CUDA (atomics in cuDNN's and our backward kernels: no bit-identity promised) training with
    each AMP mode gives finite losses and float32 weights, and a resumed run continues from its
    checkpoint to the same iteration count."""
    cfg = merge(tiny_config(shapes_dataset, tmp_path / "run", max_iter=2, amp=amp), {"device": "cuda"})
    train(cfg, progress=False)
    path = train(merge(cfg, {"solver": {"max_iter": 4}}), resume=True, progress=False)
    state = load_checkpoint(path)
    assert state["iteration"] == 4
    weights = [v for v in state["model"].values() if v.is_floating_point()]
    assert all(v.dtype == torch.float32 and v.device.type == "cpu" and torch.isfinite(v).all() for v in weights)
    metrics = read_metrics(cfg.output_dir)
    assert [m["iteration"] for m in metrics] == [1, 2, 3, 4]
    assert all(math.isfinite(m["loss"]) for m in metrics)


def test_resume_with_another_model_config_fails(shapes_dataset, tmp_path):
    cfg = tiny_config(shapes_dataset, tmp_path / "run", max_iter=2)
    train(cfg, progress=False)
    other = merge(cfg, {"model": {"head": {"mask_channels": 8}}, "solver": {"max_iter": 4}})
    with pytest.raises(ValueError, match="different model config"):
        train(other, resume=True, progress=False)


def test_wrong_number_of_classes_is_reported(shapes_dataset, tmp_path):
    cfg = merge(tiny_config(shapes_dataset, tmp_path / "run"), {"model": {"head": {"num_classes": 3}}})
    with pytest.raises(ValueError, match="num_classes=5"):
        train(cfg, progress=False)


def test_batches_are_a_function_of_seed_and_iteration():
    full = list(IterationBatchSampler(7, 4, seed=3, start_iter=0, max_iter=5))
    assert list(IterationBatchSampler(7, 4, seed=3, start_iter=2, max_iter=5)) == full[2:]
    ranks = [list(IterationBatchSampler(7, 4, seed=3, start_iter=0, max_iter=5, rank=r, world=2)) for r in (0, 1)]
    assert [a + b for a, b in zip(*ranks)] == full
    stream = [i for batch in full for i, _ in batch]
    assert sorted(stream[:7]) == list(range(7)) and sorted(stream[7:14]) == list(range(7))  # epochs
    seeds = [seed for batch in full for _, seed in batch]
    assert len(set(seeds)) == len(seeds)  # one augmentation stream per image slot


def test_lr_schedule_warmup_and_steps(shapes_dataset, tmp_path):
    s = tiny_config(shapes_dataset, tmp_path).solver
    assert lr_factor(0, s) == pytest.approx(s.warmup_factor)
    assert lr_factor(2, s) == pytest.approx(1.0)
    assert lr_factor(3, s) == pytest.approx(s.gamma)


def test_cached_training_images_give_the_same_weights(shapes_dataset, tmp_path):
    runs = {}
    for cache in (False, True):  # 5 iterations of 2 of the 6 images: the second epoch reads from the cache
        cfg = merge(tiny_config(shapes_dataset, tmp_path / f"cache-{cache}", max_iter=5, checkpoint_period=0),
                    {"data": {"cache_train_images": cache}})
        runs[cache] = load_checkpoint(train(cfg, progress=False))["model"]
    assert all(torch.equal(runs[False][k], runs[True][k]) for k in runs[False])


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_lr_schedule_decays_to_zero_at_max_iter(schedule):
    from tensormask.config import SolverConfig

    s = SolverConfig(max_iter=100, warmup_iters=10, warmup_factor=0.1, lr_schedule=schedule, steps=(50,))
    for it in range(0, 101):  # the formulas written out: warm-up ramp × decay over the whole run
        warm = 0.1 + 0.9 * it / 10 if it < 10 else 1.0
        decay = 1 - it / 100 if schedule == "linear" else (1 + math.cos(math.pi * it / 100)) / 2
        assert lr_factor(it, s) == pytest.approx(warm * decay, abs=1e-12), it
    assert lr_factor(100, s) == pytest.approx(0.0, abs=1e-12) and lr_factor(150, s) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(49, s) > lr_factor(51, s) > 0.3  # ``steps`` are ignored: no drop by ``gamma`` at 50


def test_unknown_lr_schedule_fails_before_training(shapes_dataset, tmp_path):
    cfg = tiny_config(shapes_dataset, tmp_path / "run", lr_schedule="exponential")
    with pytest.raises(ValueError, match="solver.lr_schedule must be one of step, linear, cosine; got 'exponential'"):
        train(cfg, progress=False)
    assert not os.path.exists(tmp_path / "run")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank, world, port, cfg):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from tensormask.engine import distributed

    try:
        train(cfg, progress=False)
    finally:
        distributed.cleanup()


def test_ddp_two_gloo_processes_match_one_process(shapes_dataset, tmp_path):
    # Images capped at 128 px so every batch pads to the same 128×128: one process with 2 images and
    # two processes with 1 image each then see identical inputs.
    same_size = {"data": {"train_min_size": [128, 128], "train_max_size": 128}}
    single = merge(tiny_config(shapes_dataset, tmp_path / "single", max_iter=2, checkpoint_period=0), same_size)
    train(single, progress=False)
    ddp = merge(tiny_config(shapes_dataset, tmp_path / "ddp", max_iter=2, checkpoint_period=0), same_size)
    mp.start_processes(_ddp_worker, args=(2, _free_port(), ddp), nprocs=2, join=True, start_method="spawn")
    one, two = read_metrics(single.output_dir), read_metrics(ddp.output_dir)
    assert len(one) == len(two) == 2
    for a, b in zip(one, two):
        for key in ("loss_cls", "loss_box", "loss_mask"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a["iteration"], key)
    wa = load_checkpoint(latest_checkpoint(single.output_dir))["model"]
    wb = load_checkpoint(latest_checkpoint(ddp.output_dir))["model"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-6)


def test_periodic_evaluation_hook_logs_ap(shapes_dataset, tmp_path):
    cfg = tiny_config(shapes_dataset, tmp_path / "run", max_iter=2, eval_period=2, checkpoint_period=0)
    train(cfg, progress=False)
    evals = [m for m in read_metrics(cfg.output_dir) if "eval/segm_AP" in m]
    assert [m["iteration"] for m in evals] == [2]
    assert os.path.exists(os.path.join(cfg.output_dir, "eval_0000002", "metrics.json"))
