"""Benchmark of a training step: the mask loss at the positive windows through the sparse
``decode_windows`` (with its backward) against the dense path it replaced.

*sparse* (the model as it trains): the 1×1 ``mask_pred_XX`` convs are evaluated only at the
(channel, position) pairs the positive windows read (:meth:`TensorMaskHead.window_mask_logits` →
``decode_windows`` and ``decode_windows_backward``). *dense* (the baseline, what training did
before): each ``mask_pred_XX`` conv over the whole fused P2-resolution map of every level, then
``swap_align2nat_windows`` at the positive windows; its backward builds the zero-filled dense
V̂·Û-channel gradient and runs the conv's backward over the whole map.

Both models start from the same weights and see the same batches of the embedded synthetic dataset
(generated into a temporary folder, preset "demo"); the variants alternate so a noisy machine slows
both alike. Prints per round the seconds per iteration of each, then the medians and the ratio
dense / sparse. Usage (from the repository root)::

    python benchmarks/bench_train_step.py [--config configs/demo-tiny-cpu.yaml] [--batches 12]
        [--rounds 4] [--threads 2] [--amp none|bf16|fp16]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from tensormask.config import Config, load_config
from tensormask.data.coco import CocoDataset
from tensormask.data.synthetic import generate
from tensormask.data.transforms import build_transforms
from tensormask.engine import trainer
from tensormask.modeling.heads import to_4d
from tensormask.modeling.tensormask import TensorMask
from tensormask.ops import swap_align2nat_windows


def use_dense_mask_loss(model: TensorMask) -> None:
    """The baseline: dense ``mask_pred_XX`` conv over the whole map + ``swap_align2nat_windows``."""
    head = model.head
    if not head.bipyramid:
        raise SystemExit("bench_train_step: the dense baseline is written for the tensor bipyramid head")

    def window_mask_logits(mask_feats, level, window_idx, windows):
        v = head.window_sizes[window_idx]
        out = head.mask_pred(window_idx)(mask_feats[level])
        return swap_align2nat_windows(to_4d(out, v, v), windows, 2**level, True, "bilinear", head.pad_val)

    head.window_mask_logits = window_mask_logits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/demo-tiny-cpu.yaml")
    ap.add_argument("--batches", type=int, default=12, help="batches per round (same for both variants)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--amp", default=None, help="none, bf16 or fp16 (default: the config's solver.amp)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, base=Config())
    amp = cfg.solver.amp if args.amp is None else args.amp
    device = torch.device("cpu")
    dtype = trainer.autocast_dtype(amp, device)
    batch = cfg.solver.ims_per_batch

    with tempfile.TemporaryDirectory() as tmp:
        data = generate(tmp, args.batches * batch, seed=0, config="demo")
        dataset = CocoDataset(data["json_path"], data["image_root"], on_error="skip")
        transform = build_transforms(True, tuple(cfg.data.train_min_size), cfg.data.train_max_size, flip_prob=0.5)
        samples = trainer.AugmentedSamples(dataset, transform)
        batches = [trainer.to_model_inputs([samples[(i * batch + j, 0)] for j in range(batch)]) for i in range(args.batches)]

    variants = {}
    for name in ("sparse", "dense"):
        torch.manual_seed(0)
        model = TensorMask(cfg.model).train()
        if name == "dense":
            use_dense_mask_loss(model)
        variants[name] = (model, trainer.build_optimizer(model, cfg))

    def run(name: str) -> float:
        model, optimizer = variants[name]
        t0 = time.perf_counter()
        for images, targets in batches:
            with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                losses = model(images, targets)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
        return (time.perf_counter() - t0) / len(batches)

    print(f"config {args.config}: batch {batch}, {args.batches} batches per round, {args.threads} threads, "
          f"autocast {dtype or 'off'}")
    times: dict[str, list[float]] = {name: [] for name in variants}
    for name in variants:  # warm-up (allocator, oneDNN primitives)
        run(name)
    for r in range(args.rounds):
        for name in variants:
            times[name].append(run(name))
        print(f"round {r}: " + "  ".join(f"{n} {times[n][-1]:.3f} s/it" for n in variants), flush=True)
    med = {n: statistics.median(t) for n, t in times.items()}
    print("| mask loss path | median s/iteration |\n|---|---|")
    for n in variants:
        print(f"| {n} | {med[n]:.3f} |")
    print(f"dense / sparse = {med['dense'] / med['sparse']:.2f}x")


if __name__ == "__main__":
    main()
