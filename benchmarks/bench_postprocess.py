"""Benchmarks of the inference post-processing (paper §4.3).

Sections (``--section``, several allowed, default all):

* ``paste``: pasting P soft M×M masks into an H×W image and thresholding them — the native
  ``paste_masks`` op (all masks in one call) against torchvision-style per-mask pasting written in
  plain PyTorch (a Python loop over the masks: crop the box region, ``F.interpolate`` the mask to the
  box size with bilinear / align_corners=False, threshold, write into a zero image, stack), and the
  same loop writing into one preallocated output (no per-mask allocation), measured in the same run.
  Prints the median times and the ratios, and how much the results differ (the baselines round the
  box to whole pixels and replicate the grid border instead of zero padding).

* ``sparse_vs_dense``: mask decoding of the tensor-bipyramid head (paper §3.5–3.6) for a
  ``--height``×``--width`` image: the default head (``HeadConfig(num_classes=80)``: mask trunk of 128
  channels, window sizes 11 and 15, 6 levels), random weights, random FPN features of 256 channels
  (P2 200×304 ... P7 7×10 for 800×1216). Only the decoding stage is timed (the mask trunk and the
  fusion of Fig. 8 run once before, both paths need them). *dense*: every ``mask_pred_XX`` 1×1 conv over
  the whole fused P2-resolution map of every level + ``swap_align2nat(λ = 2^k)``, the masks of all
  windows (~160k); *sparse*: ``decode_windows`` on 100 windows spread over the levels like the
  detections left after NMS (``--decode-per-level``, default 30/25/20/13/8/4 on P2..P7, alternating
  window sizes, random positions). Checks that both agree, then prints the medians, the ratio, the
  bytes of the dense mask logits (and of the conv outputs they come from) vs the sparse masks, and the
  sparse time per level.

Usage::

    python benchmarks/bench_postprocess.py [--section paste sparse_vs_dense candidates] [--device cuda] [--repeat 7]
        [--masks 100] [--mask-size 30] [--height 800] [--width 1216]
        [--decode-per-level 30 25 20 13 8 4]

* ``candidates``: the candidate selection of the post-processing with score threshold 0 (every
  window × class of an 800×1216 image, 13 M scores of an untrained head, many tied):
  :func:`tensormask.modeling.postprocess.top_candidates` (``torch.topk``, then a stable sort of those)
  against a full stable sort then the first 6000 (checked equal) and the full unstable sort the
  post-processing did before (equal up to the order of tied scores).

New sections: write ``bench_<name>(args)`` and add it to ``SECTIONS``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

import tensormask  # noqa: F401  (registers the ops)
from tensormask.ops import paste_masks
from timing import median_seconds as timed


# ------------------------------------------------------------------------------------------------
# Section "paste"
# ------------------------------------------------------------------------------------------------


def paste_per_mask_torch(masks: torch.Tensor, boxes: torch.Tensor, image_h: int, image_w: int,
                         threshold: float = 0.5) -> torch.Tensor:
    """torchvision-style pasting, one mask at a time: the box rounded to whole pixels, the mask resized
    to the box with ``F.interpolate`` (bilinear, align_corners=False), thresholded, cropped to the
    image and written into a zero image; the images are stacked. masks (P, M, M), boxes (P, 4) XYXY
    → (P, image_h, image_w) bool."""
    out = []
    for mask, box in zip(masks, boxes.tolist()):  # one host round trip for all the boxes
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        img = torch.zeros(image_h, image_w, dtype=torch.bool, device=masks.device)
        w, h = x2 - x1, y2 - y1
        if w > 0 and h > 0:
            resized = F.interpolate(mask[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
            ix1, iy1, ix2, iy2 = max(x1, 0), max(y1, 0), min(x2, image_w), min(y2, image_h)
            if ix2 > ix1 and iy2 > iy1:
                img[iy1:iy2, ix1:ix2] = resized[iy1 - y1 : iy2 - y1, ix1 - x1 : ix2 - x1] >= threshold
        out.append(img)
    return torch.stack(out) if out else torch.zeros(0, image_h, image_w, dtype=torch.bool, device=masks.device)


def paste_per_mask_torch_prealloc(masks: torch.Tensor, boxes: torch.Tensor, image_h: int, image_w: int,
                                  threshold: float = 0.5) -> torch.Tensor:
    """The same per-mask loop, writing into one preallocated zero (P, image_h, image_w) output instead
    of a zero image per mask plus a stack: the baseline without its per-mask allocations."""
    out = torch.zeros(masks.shape[0], image_h, image_w, dtype=torch.bool, device=masks.device)
    for p, (mask, box) in enumerate(zip(masks, boxes.tolist())):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        w, h = x2 - x1, y2 - y1
        ix1, iy1, ix2, iy2 = max(x1, 0), max(y1, 0), min(x2, image_w), min(y2, image_h)
        if w > 0 and h > 0 and ix2 > ix1 and iy2 > iy1:
            resized = F.interpolate(mask[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
            out[p, iy1:iy2, ix1:ix2] = resized[iy1 - y1 : iy2 - y1, ix1 - x1 : ix2 - x1] >= threshold
    return out


def random_detections(P: int, M: int, image_h: int, image_w: int, device: torch.device, seed: int = 0):
    """P soft masks (blobs through a sigmoid) and COCO-like boxes: sides log-uniform in [16, 512] px,
    centres anywhere in the image (some boxes cross the border)."""
    g = torch.Generator().manual_seed(seed)
    v = (torch.arange(M, dtype=torch.float32) + 0.5) / M - 0.5
    r = 0.25 + 0.2 * torch.rand(P, 1, 1, generator=g)
    d = v[None, :, None] ** 2 + v[None, None, :] ** 2 + 0.05 * torch.randn(P, M, M, generator=g)
    masks = torch.sigmoid((r * r - d) * 40.0)
    sides = torch.exp(torch.empty(P, 2).uniform_(math.log(16), math.log(512), generator=g))
    centres = torch.rand(P, 2, generator=g) * torch.tensor([image_w, image_h])
    boxes = torch.cat([centres - sides / 2, centres + sides / 2], dim=1)
    return masks.to(device), boxes.to(device)


def bench_paste(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    P, M, H, W = args.masks, args.mask_size, args.height, args.width
    masks, boxes = random_detections(P, M, H, W, device)
    area = ((boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(dim=1)).sum().item()
    print(f"paste: {P} masks {M}×{M} into {H}×{W}, boxes 16–512 px (Σ box area {area / 1e6:.2f} Mpx), "
          f"{device}, threads={torch.get_num_threads()}, torch {torch.__version__}")

    native = paste_masks(masks, boxes, H, W)
    baseline = paste_per_mask_torch(masks, boxes, H, W)
    differ = (native != baseline).sum().item()
    union = (native | baseline).sum().item()
    print(f"  results differ on {differ} of {union} foreground pixels ({100 * differ / max(union, 1):.2f}%: "
          "box rounding and border handling of the baseline)")

    assert torch.equal(paste_per_mask_torch_prealloc(masks, boxes, H, W), baseline)
    t_native = timed(lambda: paste_masks(masks, boxes, H, W), args.repeat, device)
    t_base = timed(lambda: paste_per_mask_torch(masks, boxes, H, W), args.repeat, device)
    t_pre = timed(lambda: paste_per_mask_torch_prealloc(masks, boxes, H, W), args.repeat, device)
    header = f"  {'method':<34} {'median ms':>10} {'× vs native':>12}"
    print(header)
    print("  " + "-" * (len(header) - 2))
    print(f"  {'paste_masks (native, one call)':<34} {t_native * 1e3:>10.2f} {1.0:>12.2f}")
    print(f"  {'per-mask F.interpolate loop':<34} {t_base * 1e3:>10.2f} {t_base / t_native:>12.2f}")
    print(f"  {'  same, preallocated output':<34} {t_pre * 1e3:>10.2f} {t_pre / t_native:>12.2f}")
    print(f"  speed-up of the native op: {t_base / t_native:.1f}× vs the torchvision-style loop, "
          f"{t_pre / t_native:.1f}× vs the loop into a preallocated output")


# ------------------------------------------------------------------------------------------------
# Section "sparse_vs_dense"
# ------------------------------------------------------------------------------------------------

DECODE_LEVELS = 6
DECODE_IN_CHANNELS = 256


def fpn_sizes(height: int, width: int, levels: int = DECODE_LEVELS) -> list[tuple[int, int]]:
    """P2..P7 sizes: stride 4, then H_k = ⌈H_(k−1)/2⌉ (200×304, 100×152, ..., 7×10 for 800×1216)."""
    h, w = -(-height // 4), -(-width // 4)
    sizes = [(h, w)]
    for _ in range(levels - 1):
        h, w = -(-h // 2), -(-w // 2)
        sizes.append((h, w))
    return sizes


def sample_level_windows(per_level, grid_sizes, num_sizes: int, seed: int = 0) -> dict:
    """{(level, window_idx): (P, 3) int64 rows (n=0, y, x)}: per_level[k] windows on level k, alternating
    window sizes, uniform positions on the level's grid."""
    g = torch.Generator().manual_seed(seed)
    out: dict = {}
    for k, count in enumerate(per_level):
        hk, wk = grid_sizes[k]
        for i in range(count):
            y, x = int(torch.randint(hk, (1,), generator=g)), int(torch.randint(wk, (1,), generator=g))
            out.setdefault((k, i % num_sizes), []).append([0, y, x])
    return {key: torch.tensor(rows, dtype=torch.int64) for key, rows in out.items()}


def bench_sparse_vs_dense(args: argparse.Namespace) -> None:
    from tensormask.config import HeadConfig
    from tensormask.modeling.bipyramid import bipyramid_mask_logits, fuse_to_finest
    from tensormask.modeling.heads import TensorMaskHead
    from tensormask.ops import decode_windows

    device = torch.device(args.device)
    torch.manual_seed(0)
    cfg = HeadConfig(num_classes=80)
    head = TensorMaskHead(cfg, in_channels=DECODE_IN_CHANNELS, num_levels=DECODE_LEVELS).to(device).eval()
    with torch.no_grad():
        for prm in head.parameters():  # random weights, biases included
            prm.normal_(0.0, 0.01)
    sizes = fpn_sizes(args.height, args.width)
    feats = [torch.randn(1, DECODE_IN_CHANNELS, h, w, device=device) for h, w in sizes]
    convs = [getattr(head, head.mask_pred_name(v)) for v in head.window_sizes]
    pad = head.pad_val

    with torch.inference_mode():
        fused = fuse_to_finest([head.mask_subnet(x) for x in feats], head.mask_fuse)
        h0, w0 = fused[0].shape[-2:]
        grid = [(-(-h0 // 2**k), -(-w0 // 2**k)) for k in range(DECODE_LEVELS)]
        dets = sample_level_windows(args.decode_per_level, grid, len(head.window_sizes))
        dets = {key: w.to(device) for key, w in dets.items()}

        def dense():
            return [
                [bipyramid_mask_logits(conv(fused[k]), v, k, pad) for v, conv in zip(head.window_sizes, convs)]
                for k in range(DECODE_LEVELS)
            ]

        def sparse_of(keys):
            def run():
                return {
                    (k, a): decode_windows(fused[k], convs[a].weight, convs[a].bias, dets[(k, a)],
                                           head.window_sizes[a], head.window_sizes[a], 2**k, True, "bilinear", pad)
                    for k, a in keys
                }

            return run

        sparse = sparse_of(sorted(dets))
        d, s = dense(), sparse()  # agreement and memory first
        err = max((s[key] - d[key[0]][key[1]][w[:, 0], :, :, w[:, 1], w[:, 2]]).abs().max().item()
                  for key, w in dets.items())
        dense_bytes = sum(t.numel() * t.element_size() for row in d for t in row)
        n_dense = sum(t.shape[0] * t.shape[-2] * t.shape[-1] for row in d for t in row)
        conv_bytes = sum(f.shape[0] * v * v * f.shape[2] * f.shape[3] * f.element_size()
                         for f in fused for v in head.window_sizes)
        sparse_bytes = sum(t.numel() * t.element_size() for t in s.values())
        del d, s

        t_dense = timed(dense, args.repeat, device)
        t_sparse = timed(sparse, args.repeat, device)
        per_level = []
        for k in range(DECODE_LEVELS):
            keys = [key for key in sorted(dets) if key[0] == k]
            n = sum(dets[key].shape[0] for key in keys)
            per_level.append((k, n, timed(sparse_of(keys), args.repeat, device) if keys else 0.0))

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, threads={torch.get_num_threads()}"
    n_sparse = sum(w.shape[0] for w in dets.values())
    print(f"sparse_vs_dense: {args.height}×{args.width} image, P2 {sizes[0][0]}×{sizes[0][1]} ... "
          f"P7 {sizes[-1][0]}×{sizes[-1][1]}, window sizes {head.window_sizes}, mask channels {cfg.mask_channels}, "
          f"{where}, torch {torch.__version__}, median of {args.repeat}")
    print(f"  windows: dense {n_dense} (all), sparse {n_sparse} (P2..P7: {list(args.decode_per_level)}); "
          f"max |sparse − dense| = {err:.2e}")
    header = f"  {'method':<52} {'median ms':>10} {'× vs sparse':>12}"
    print(header)
    print("  " + "-" * (len(header) - 2))
    print(f"  {'dense: mask_pred convs + swap_align2nat, all levels':<52} {t_dense * 1e3:>10.2f} {t_dense / t_sparse:>12.1f}")
    print(f"  {f'sparse: decode_windows, {n_sparse} windows':<52} {t_sparse * 1e3:>10.2f} {1.0:>12.1f}")
    print(f"  memory: dense mask logits {dense_bytes} B ({dense_bytes / 2**20:.1f} MiB), made from conv outputs of "
          f"{conv_bytes} B ({conv_bytes / 2**20:.1f} MiB); sparse masks {sparse_bytes} B ({sparse_bytes / 2**20:.2f} MiB)")
    print("  sparse per level: " + ", ".join(f"P{k + 2} {n} windows {t * 1e3:.2f} ms" for k, n, t in per_level))


# ------------------------------------------------------------------------------------------------
# Section "candidates"
# ------------------------------------------------------------------------------------------------


def bench_candidates(args: argparse.Namespace) -> None:
    from tensormask.modeling.postprocess import top_candidates

    device = torch.device(args.device)
    windows = sum(h * w for h, w in fpn_sizes(args.height, args.width)) * 2  # 2 window sizes
    g = torch.Generator().manual_seed(0)
    # Class scores of an untrained head (logits near the prior −4.6): many exact float32 ties.
    scores = torch.sigmoid(-4.6 + 0.05 * torch.randn(windows * 80, generator=g)).to(device)
    k, thresh = 6000, 0.0

    def full_sort(stable: bool):
        def run():
            cand = torch.nonzero(scores > thresh).squeeze(1)
            values, order = scores[cand].sort(descending=True, stable=stable)
            return cand[order[:k]], values[:k]

        return run

    ref, new = full_sort(True)(), top_candidates(scores, thresh, k)
    assert torch.equal(ref[0], new[0]) and torch.equal(ref[1], new[1])
    t_topk = timed(lambda: top_candidates(scores, thresh, k), args.repeat, device)
    t_stable = timed(full_sort(True), args.repeat, device)
    t_sort = timed(full_sort(False), args.repeat, device)
    print(f"candidates: top {k} of {scores.numel()} scores (above {thresh}; {windows} windows × 80 classes, "
          f"{args.height}×{args.width}), {device}, threads={torch.get_num_threads()}, torch {torch.__version__}; "
          "top_candidates equals the full stable sort")
    print(f"  top_candidates (topk, then a stable sort of the k) {t_topk * 1e3:.1f} ms; full stable sort "
          f"{t_stable * 1e3:.1f} ms ({t_stable / t_topk:.1f}×); full unstable sort (before) {t_sort * 1e3:.1f} ms "
          f"({t_sort / t_topk:.1f}×)")


SECTIONS: dict[str, Callable[[argparse.Namespace], None]] = {
    "paste": bench_paste, "sparse_vs_dense": bench_sparse_vs_dense, "candidates": bench_candidates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--section", nargs="+", choices=sorted(SECTIONS), default=list(SECTIONS),
                        help="sections to run (default: all)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--masks", type=int, default=100, help="paste: number of masks P")
    parser.add_argument("--mask-size", type=int, default=30, help="paste: mask resolution M")
    parser.add_argument("--height", type=int, default=800, help="image height")
    parser.add_argument("--width", type=int, default=1216, help="image width")
    parser.add_argument("--decode-per-level", type=int, nargs=DECODE_LEVELS, default=[30, 25, 20, 13, 8, 4],
                        help="sparse_vs_dense: windows on P2..P7 (default 30 25 20 13 8 4 = 100)")
    args = parser.parse_args()
    for name in args.section:
        SECTIONS[name](args)


if __name__ == "__main__":
    main()
