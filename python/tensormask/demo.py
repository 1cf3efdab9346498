"""A short tour of the 4D tensor ops (``make demo`` until the training demo lands)."""

from __future__ import annotations

import argparse

import torch

from . import ops


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="tensormask ops-demo", description=__doc__).parse_args(argv)
    torch.set_printoptions(precision=3, sci_mode=False)
    x = torch.zeros(1, 3, 3, 4, 4)
    for v in range(3):
        for u in range(3):
            x[0, v, u] = torch.arange(16.0).view(4, 4) + 100 * (3 * v + u)
    print("aligned tensor F̂(v,u,y,x) = 100·(3v+u) + 4y + x, shape (N,V,U,H,W) =", tuple(x.shape))
    nat = ops.align2nat(x, alpha=1, pad_val=-1.0)
    print("align2nat: the 3×3 window centred at (1,1) reads F̂(v,u, 1+(v−1), 1+(u−1)):")
    print(nat[0, :, :, 1, 1])
    print("swap_align2nat(ones(1,1,1,2,2), λ=2, pad −6): one 2×2 window at H/2 × W/2")
    print(ops.swap_align2nat(torch.ones(1, 1, 1, 2, 2), 2)[0, :, :, 0, 0])
    print("tensor bipyramid of an 800×1216 image (V̂=Û=15 on the 200×304 P2 map):")
    feat = torch.randn(1, 15, 15, 200, 304)
    for k in range(6):
        lam = 2**k
        out = ops.swap_align2nat(feat, lam)
        print(f"  level {k}: λ={lam:>2} → {tuple(out.shape[1:])} = {out.numel() / 1e6:.1f}M values")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
