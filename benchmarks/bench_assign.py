"""Benchmark of the native label assignment (``assign_windows``) against a dense torch baseline.

Scene: one 800×1216 image, 50 random ground-truth boxes (2 of them crowd, with their crowd region),
6 FPN levels (strides 4..128), 2 window sizes (11, 15) → R = 162,134 windows.

Baselines, both checked to give labels identical to the native op's before timing:

* ``reference``: the slow loop reference of ``tests/ops/test_assign_windows.py`` (plain Python loops
  over windows × boxes, numpy inputs; CPU only);
* ``dense``: the rule evaluated on dense (G, R) boolean matrices with torch (float64), the way
  detectron2's TensorMask ``_assignment_rule`` does it (runs on ``--device``).

Also times ``crop_windows`` on all the positive windows (tensor-bipyramid grids, σ_VU = 4), native only.

Usage: python benchmarks/bench_assign.py [--device cpu|cuda] [--runs 50] [--threads N]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

import tensormask  # noqa: F401
from tensormask import ops
from timing import median_seconds

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.ops
from tests.ops.test_assign_windows import assign_ref  # noqa: E402

HEIGHT, WIDTH = 800, 1216
STRIDES = [4, 8, 16, 32, 64, 128]
WINDOW_SIZES = [11, 15]


def make_scene(num_boxes: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    side = torch.exp(torch.empty(num_boxes, 2).uniform_(math.log(4), math.log(600), generator=g)).round().clamp(1)
    h, w = side[:, 0].clamp(max=HEIGHT), side[:, 1].clamp(max=WIDTH)
    y1 = (torch.rand(num_boxes, generator=g) * (HEIGHT - h)).floor()
    x1 = (torch.rand(num_boxes, generator=g) * (WIDTH - w)).floor()
    boxes = torch.stack([x1, y1, x1 + w, y1 + h], dim=1)
    is_crowd = torch.zeros(num_boxes, dtype=torch.bool)
    is_crowd[:2] = True
    crowd_mask = torch.zeros(HEIGHT, WIDTH, dtype=torch.bool)
    for b in boxes[is_crowd].long().tolist():
        crowd_mask[b[1] : b[3], b[0] : b[2]] = True
    return boxes.to(device), is_crowd.to(device), crowd_mask.to(device)


def assign_dense(boxes, is_crowd, crowd_mask, level_sizes, strides, window_sizes, scale_thresh=2.0,
                 center_thresh=1.0, deduct_unit=True, uniqueness=True, fallback=True) -> torch.Tensor:
    """The rule on dense (G, R) matrices (detectron2 style), float64."""
    dev = boxes.device
    cys, cxs, sides, units = [], [], [], []
    ws = torch.tensor(window_sizes, dtype=torch.float64, device=dev)
    for (H, W), s in zip(level_sizes, strides):
        y, x, a = torch.meshgrid(
            torch.arange(H, device=dev, dtype=torch.float64), torch.arange(W, device=dev, dtype=torch.float64), ws,
            indexing="ij",
        )
        cys.append(y.reshape(-1) * s)
        cxs.append(x.reshape(-1) * s)
        sides.append(a.reshape(-1) * s)
        units.append(torch.full((H * W * len(window_sizes),), float(s), dtype=torch.float64, device=dev))
    cy, cx, side, unit = torch.cat(cys), torch.cat(cxs), torch.cat(sides), torch.cat(units)
    b = boxes.double()
    x1, y1, x2, y2 = (b[:, i : i + 1] for i in range(4))
    half = side / 2
    contain = (cx - half <= x1) & (x2 <= cx + half) & (cy - half <= y1) & (y2 <= cy + half)
    size = torch.maximum(x2 - x1, y2 - y1) * scale_thresh
    if fallback:
        min_window_size = min(window_sizes) * strides[0] - (strides[0] if deduct_unit else 0)
        size = size.clamp(min=min_window_size)
    scale_ok = size >= side - (unit if deduct_unit else 0)
    dx, dy = (x1 + x2) / 2 - cx, (y1 + y2) / 2 - cy
    radius = center_thresh * unit
    central = dx * dx + dy * dy <= radius * radius
    hits = contain & scale_ok & central & ~is_crowd[:, None]
    count = hits.sum(0)
    first = hits.int().argmax(0)
    out = torch.full_like(count, -1)
    if crowd_mask.numel():
        iy, ix = cy.long(), cx.long()
        inside = (iy < crowd_mask.shape[0]) & (ix < crowd_mask.shape[1])
        crowd = torch.zeros_like(inside)
        crowd[inside] = crowd_mask[iy[inside], ix[inside]].bool()
        out[crowd] = -2
    if not uniqueness:
        out[count > 1] = -2
    out[count == 1] = first[count == 1]
    return out


def median_ms(fn, device: str, runs: int, warmup: int = 3) -> float:
    return median_seconds(fn, runs, device, warmup) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--boxes", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("CUDA is not available")

    level_sizes = [(math.ceil(HEIGHT / s), math.ceil(WIDTH / s)) for s in STRIDES]
    boxes, is_crowd, crowd_mask = make_scene(args.boxes, args.device)
    R = ops.num_windows(level_sizes, WINDOW_SIZES)

    def native():
        return ops.assign_windows(boxes, is_crowd, crowd_mask, level_sizes, STRIDES, WINDOW_SIZES)

    def dense():
        return assign_dense(boxes, is_crowd, crowd_mask, level_sizes, STRIDES, WINDOW_SIZES)

    np_args = (boxes.cpu().numpy(), is_crowd.cpu().numpy(), crowd_mask.cpu().numpy())
    np_args += (level_sizes, STRIDES, WINDOW_SIZES)

    def reference():
        return assign_ref(*np_args)

    matched = native()
    assert torch.equal(matched, dense()), "native op and dense baseline disagree"
    assert (matched.cpu().numpy() == reference()).all(), "native op and loop reference disagree"
    positives = torch.nonzero(matched >= 0).flatten()

    baseline_runs = max(3, args.runs // 10)
    t_native = median_ms(native, args.device, args.runs)
    t_dense = median_ms(dense, args.device, baseline_runs)
    t_ref = median_ms(reference, "cpu", baseline_runs, warmup=1)

    # crop_windows on every positive window, tensor-bipyramid grids (σ_VU = s_0, V = U = 2^k·window
    # size): one call per (level, window size), as a training step would do
    masks = torch.zeros(args.boxes, HEIGHT, WIDTH, dtype=torch.bool, device=args.device)
    for i, b in enumerate(boxes.long().tolist()):
        masks[i, b[1] : b[3], b[0] : b[2]] = True
    groups, start = [], 0
    for k, ((H, W), s) in enumerate(zip(level_sizes, STRIDES)):
        n = H * W * len(WINDOW_SIZES)
        sel = positives[(positives >= start) & (positives < start + n)]
        for a, size in enumerate(WINDOW_SIZES):
            wa = sel[sel % len(WINDOW_SIZES) == a]
            if len(wa):
                pos = (wa - start) // len(WINDOW_SIZES)
                centers = torch.stack([(pos // W) * s, (pos % W) * s], 1).float()
                groups.append((matched[wa], centers, 2**k * size))
        start += n

    def crop():
        return [ops.crop_windows(masks, idx, ctr, STRIDES[0], V, V) for idx, ctr, V in groups]

    t_crop = median_ms(crop, args.device, args.runs)
    crop_pixels = sum(len(idx) * V * V for idx, _, V in groups)

    device_name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"assign_windows: {HEIGHT}x{WIDTH} image, {args.boxes} boxes (2 crowd), {len(STRIDES)} levels, "
          f"{len(WINDOW_SIZES)} window sizes, R = {R} windows, {len(positives)} positive  [{device_name}]")
    print(f"  native op                     {t_native:9.3f} ms  (median of {args.runs})")
    for name, t in [("loop reference (Python, CPU) ", t_ref), ("dense torch (detectron2-like)", t_dense)]:
        print(f"  {name} {t:9.3f} ms  (median of {baseline_runs})  ratio {t / t_native:7.1f}x")
    print("  (all three give identical labels)")
    print(f"crop_windows: all {len(positives)} positive windows in {len(groups)} calls (V = U = 2^k*window size, "
          f"sigma_vu = 4, {crop_pixels} window pixels): {t_crop:.3f} ms (median of {args.runs})")


if __name__ == "__main__":
    main()
