"""align2nat / nat2align: coordinate transforms between the aligned and natural representations
(paper §3.4, eq. 1). Native kernels: ``cpp/src/ops/align2nat.cpp`` (CPU), ``cuda/align2nat.cu`` (CUDA).
"""

from __future__ import annotations

import torch

from ._checks import check_4d_tensor, check_positive


def align2nat(x: torch.Tensor, alpha: int = 1, pad_val: float = 0.0) -> torch.Tensor:
    """Natural representation from the aligned one (eq. 1).

    ``out[n, v, u, y, x] = x[n, v, u, y + α·(v − ⌊V/2⌋), x + α·(u − ⌊U/2⌋)]``, ``pad_val`` where the
    source lies outside (H, W).

    Args:
        x: aligned tensor ``(N, V, U, H, W)``, floating point; units σ_VU = α·σ_HW.
        alpha: α = σ_VU / σ_HW, a positive integer.
        pad_val: value of samples outside the feature map.

    Returns:
        natural tensor ``(N, V, U, H, W)``: ``out[n, :, :, y, x]`` is the V×U window centred at (y, x).
    """
    return torch.ops.tensormask.align2nat(x, alpha, pad_val)


def nat2align(x: torch.Tensor, alpha: int = 1, pad_val: float = 0.0) -> torch.Tensor:
    """Aligned representation from the natural one (the inverse relation of :func:`align2nat`).

    ``out[n, v, u, y, x] = x[n, v, u, y − α·(v − ⌊V/2⌋), x − α·(u − ⌊U/2⌋)]``.

    Args:
        x: natural tensor ``(N, V, U, H, W)``; σ_VU = α·σ_HW.
        alpha: positive integer α.
        pad_val: value of samples outside the feature map.

    Returns:
        aligned tensor ``(N, V, U, H, W)``: ``out[n, :, :, y, x]`` holds pixel (y, x) of every window
        that overlaps it.
    """
    return torch.ops.tensormask.nat2align(x, alpha, pad_val)


def _fake(op: str):
    def fake(x: torch.Tensor, alpha: int = 1, pad_val: float = 0.0) -> torch.Tensor:
        check_4d_tensor(x, op)
        check_positive(alpha, op, "alpha")
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    return fake


torch.library.register_fake("tensormask::align2nat")(_fake("align2nat"))
torch.library.register_fake("tensormask::nat2align")(_fake("nat2align"))
