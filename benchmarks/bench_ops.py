"""Benchmark of the fused swap_align2nat on tensor-bipyramid shapes (paper Fig. 5, §3.6).

For V̂ = Û = 15 and a P2 map of H×W = 200×304 (an 800×1216 image), swap_align2nat with λ = 2^k has an
output of constant size λV̂·λÛ·⌈H/λ⌉·⌈W/λ⌉ ≈ V̂ÛHW, so the fused kernel's time should be roughly flat
in λ. The baseline is the composed pure-PyTorch implementation that the paper's Fig. 5 draws:
``F.interpolate`` on (V̂, Û), align2nat as a strided gather, then subsampling — its intermediate is λ²
times larger, so it only runs where it fits (λ ≤ 4 at this size by default).

Prints, per λ, forward and forward+backward times (median of --repeat runs after warm-up) of both,
and the ratio baseline / fused, measured in the same run. Usage:

    python benchmarks/bench_ops.py [--device cuda] [--lams 1 2 4 8 16 32] [--baseline-max-lam 4]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import tensormask  # noqa: F401  (registers the ops)
from tensormask.ops import swap_align2nat
from timing import median_seconds as timed


def composed_swap_align2nat(x: torch.Tensor, lam: int, pad_val: float = -6.0) -> torch.Tensor:
    """swap_align2nat from stock PyTorch ops (bilinear mode): upsample, align2nat gather, subsample.

    x: (N, V̂, Û, H, W) → (N, λV̂, λÛ, ⌈H/λ⌉, ⌈W/λ⌉), same sampling as the native op.
    """
    n, vi, ui, h, w = x.shape
    vo, uo = lam * vi, lam * ui
    # 1) up_bilinear on (V̂, Û): pad by one window pixel with pad_val so the border interpolates
    #    towards it, upsample by λ (align_corners=False), drop the padding.
    t = x.permute(0, 3, 4, 1, 2).reshape(n * h * w, 1, vi, ui)
    t = F.pad(t, (1, 1, 1, 1), value=pad_val)
    t = F.interpolate(t, scale_factor=lam, mode="bilinear", align_corners=False)
    t = t[:, :, lam : lam + vo, lam : lam + uo]
    up = t.reshape(n, h, w, vo, uo).permute(0, 3, 4, 1, 2)  # (N, Vo, Uo, H, W), λ² larger than x
    # 2) align2nat on the upsampled tensor: out(v,u,y,x) = up(v,u, y + v − Vo/2 + 0.5, ...), linear
    #    between the two nearest rows/columns when the offset is a half-integer; pad outside.
    p = 1 + max(vo, uo)
    up = F.pad(up, (p, p, p, p), value=pad_val).contiguous()
    hp, wp = h + 2 * p, w + 2 * p
    ho, wo = -(-h // lam), -(-w // lam)

    def shifted(cy: int, cx: int) -> torch.Tensor:
        # (N, Vo, Uo, Ho, Wo) view: element (v,u,y,x) = up[v, u, p + y·λ + v + cy, p + x·λ + u + cx]
        # 3) the subsampling by λ is folded into the strides of the gather.
        sn, sv, su, sy, sx = up.stride()
        return up.as_strided(
            (n, vo, uo, ho, wo),
            (sn, sv + sy, su + sx, lam * sy, lam * sx),
            up.storage_offset() + (p + cy) * sy + (p + cx) * sx,
        )

    c = 0.5 - vo / 2.0
    if c == int(c):  # odd λV̂: integer offsets
        return shifted(int(c), int(c)).contiguous()
    lo = int(c - 0.5)  # half-integer: average of the two neighbours per axis
    return 0.25 * (shifted(lo, lo) + shifted(lo, lo + 1) + shifted(lo + 1, lo) + shifted(lo + 1, lo + 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lams", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--window", type=int, default=15, help="V̂ = Û")
    parser.add_argument("--height", type=int, default=200)
    parser.add_argument("--width", type=int, default=304)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--baseline-max-lam", type=int, default=4, help="largest λ for the composed baseline")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.randn(1, args.window, args.window, args.height, args.width, device=device)
    print(f"swap_align2nat, V̂=Û={args.window}, H×W={args.height}×{args.width}, float32, {device}, "
          f"threads={torch.get_num_threads()}, torch {torch.__version__}")
    header = f"{'λ':>3} {'out elems':>10} | {'fused fwd ms':>12} {'fused f+b ms':>12} | " \
             f"{'composed fwd ms':>15} {'composed f+b ms':>15} | {'fwd ×':>6} {'f+b ×':>6} | {'GB/s fwd':>8}"
    print(header)
    print("-" * len(header))
    for lam in args.lams:
        xg = x.clone().requires_grad_(True)
        out = swap_align2nat(x, lam)
        grad = torch.randn_like(out)

        def fused_fwd():
            swap_align2nat(x, lam)

        def fused_fb():
            swap_align2nat(xg, lam).backward(grad)

        t_f = timed(fused_fwd, args.repeat, device)
        t_fb = timed(fused_fb, args.repeat, device)
        # bytes moved by the forward at minimum: read the input once, write the output once
        gbs = (x.numel() + out.numel()) * x.element_size() / t_f / 1e9
        row = f"{lam:>3} {out.numel():>10} | {t_f * 1e3:>12.1f} {t_fb * 1e3:>12.1f} | "
        if lam <= args.baseline_max_lam:
            torch.testing.assert_close(composed_swap_align2nat(x, lam), out, atol=1e-4, rtol=1e-4)

            def comp_fwd():
                composed_swap_align2nat(x, lam)

            def comp_fb():
                composed_swap_align2nat(xg, lam).backward(grad)

            c_f = timed(comp_fwd, args.repeat, device)
            c_fb = timed(comp_fb, args.repeat, device)
            row += f"{c_f * 1e3:>15.1f} {c_fb * 1e3:>15.1f} | {c_f / t_f:>6.1f} {c_fb / t_fb:>6.1f} | "
        else:
            row += f"{'(too large)':>15} {'':>15} | {'':>6} {'':>6} | "
        print(row + f"{gbs:>8.2f}")


if __name__ == "__main__":
    main()
