"""up_align2nat (Fig. 4) and swap_align2nat (Fig. 5): upsample the aligned (V̂, Û) sub-tensor by λ and
convert it to the natural representation; swap_align2nat also subsamples (H, W) by λ in the same pass.
Native kernels: ``cpp/src/ops/swap_align2nat.cpp`` (CPU), ``cuda/swap_align2nat.cu`` (CUDA); the
sampling formula is in ``cpp/include/tensormask/detail/sampling.h``.
"""

from __future__ import annotations

import torch

from ._checks import check_4d_tensor, check_mode, check_positive


def up_align2nat(x: torch.Tensor, lam: int, mode: str = "bilinear", pad_val: float = -6.0) -> torch.Tensor:
    """Upscale the (V̂, Û) sub-tensor of an aligned tensor by λ, then align2nat (paper Fig. 4).

    For output index (v, u, y, x) with Vo = λV̂, Uo = λÛ the input is sampled at window position
    ``sv = (v + 0.5)/λ − 0.5`` (``⌊sv + 0.5⌋`` with ``mode="nearest"``) and spatial position
    ``sy = y + v − Vo/2 + 0.5`` (likewise su, sx), interpolating linearly on every axis; samples outside
    the input count as ``pad_val``.

    Args:
        x: aligned tensor ``(N, V̂, Û, H, W)`` with σ_VU = λ·σ_HW.
        lam: upscale factor λ ≥ 1.
        mode: ``"bilinear"`` (aligned) or ``"nearest"`` (the "unaligned" InstanceFCN variant, §A.2).
        pad_val: value outside the input (−6 ≈ a mask logit of "background").

    Returns:
        natural tensor ``(N, λV̂, λÛ, H, W)`` with σ_VU = σ_HW.
    """
    return torch.ops.tensormask.up_align2nat(x, lam, mode, pad_val)


def swap_align2nat(x: torch.Tensor, lam: int, mode: str = "bilinear", pad_val: float = -6.0) -> torch.Tensor:
    """up_align2nat followed by subsampling (H, W) by λ, fused (paper Fig. 5, §3.6).

    Same sampling as :func:`up_align2nat` with ``sy = y·λ + v − Vo/2 + 0.5``; the work is O(output)
    whatever λ, and the λ²-larger intermediate is never built. Used by the tensor bipyramid with
    λ = 2^k.

    Args:
        x: aligned tensor ``(N, V̂, Û, H, W)``: fine (H, W) with unit σ_HW, coarse (V̂, Û) with unit
            σ_VU = λ·σ_HW.
        lam: factor λ ≥ 1.
        mode: ``"bilinear"`` or ``"nearest"``.
        pad_val: value outside the input.

    Returns:
        natural tensor ``(N, λV̂, λÛ, ⌈H/λ⌉, ⌈W/λ⌉)`` whose units are swapped: σ_VU' = σ_HW and
        σ_HW' = λ·σ_HW.
    """
    return torch.ops.tensormask.swap_align2nat(x, lam, mode, pad_val)


def _output_hw(h, w, lam: int, subsample: bool):
    if not subsample:
        return h, w
    return (h + lam - 1) // lam, (w + lam - 1) // lam


def _fake_forward(op: str, subsample: bool):
    def fake(x: torch.Tensor, lam: int, mode: str = "bilinear", pad_val: float = -6.0) -> torch.Tensor:
        check_4d_tensor(x, op)
        check_positive(lam, op, "lam")
        check_mode(mode, op)
        n, v, u, h, w = x.shape
        ho, wo = _output_hw(h, w, lam, subsample)
        return x.new_empty((n, lam * v, lam * u, ho, wo))

    return fake


def _fake_backward(op: str, subsample: bool):
    def fake(grad: torch.Tensor, lam: int, mode: str, V, U, H, W) -> torch.Tensor:
        check_4d_tensor(grad, op, "grad")
        check_positive(lam, op, "lam")
        check_mode(mode, op)
        ho, wo = _output_hw(H, W, lam, subsample)
        expected = (grad.shape[0], lam * V, lam * U, ho, wo)
        if tuple(grad.shape) != expected:
            raise ValueError(f"{op}: `grad` has shape {tuple(grad.shape)} but the forward output is {expected}")
        return grad.new_empty((grad.shape[0], V, U, H, W))

    return fake


torch.library.register_fake("tensormask::up_align2nat")(_fake_forward("up_align2nat", False))
torch.library.register_fake("tensormask::swap_align2nat")(_fake_forward("swap_align2nat", True))
torch.library.register_fake("tensormask::up_align2nat_backward")(_fake_backward("up_align2nat_backward", False))
torch.library.register_fake("tensormask::swap_align2nat_backward")(_fake_backward("swap_align2nat_backward", True))


def swap_align2nat_windows(
    x: torch.Tensor, windows: torch.Tensor, lam: int, subsample: bool = True, mode: str = "bilinear", pad_val: float = -6.0
) -> torch.Tensor:
    """The natural masks of a list of windows of :func:`swap_align2nat` (``subsample=True``) or
    :func:`up_align2nat` (``subsample=False``), differentiable w.r.t. ``x``.

    ``out[p] = op(x, lam, mode, pad_val)[n, :, :, y, x]`` for ``windows[p] = (n, y, x)``, computed
    without the dense output: training needs mask logits only at the positive windows.

    Args:
        x: aligned tensor ``(N, V̂, Û, H, W)``.
        windows: ``(P, 3)`` int64 rows ``(n, y, x)`` on the op's output grid (``⌈H/λ⌉ × ⌈W/λ⌉`` when
            subsampling, ``H × W`` otherwise).
        lam, mode, pad_val: as :func:`swap_align2nat`.

    Returns:
        ``(P, λV̂, λÛ)`` natural masks, σ_VU = σ_HW of ``x``.
    """
    return torch.ops.tensormask.swap_align2nat_windows(x, windows, lam, subsample, mode, pad_val)


def _check_windows_arg(windows: torch.Tensor, op: str) -> None:
    if windows.dim() != 2 or windows.shape[1] != 3:
        raise ValueError(f"{op}: `windows` must be a (P, 3) tensor of rows (n, y, x), got shape {tuple(windows.shape)}")
    if windows.dtype != torch.int64:
        raise TypeError(f"{op}: `windows` must be int64, got {windows.dtype}")


@torch.library.register_fake("tensormask::swap_align2nat_windows")
def _swap_align2nat_windows_fake(x, windows, lam, subsample=True, mode="bilinear", pad_val=-6.0):
    op = "swap_align2nat_windows"
    check_4d_tensor(x, op)
    check_positive(lam, op, "lam")
    check_mode(mode, op)
    _check_windows_arg(windows, op)
    return x.new_empty((windows.shape[0], lam * x.shape[1], lam * x.shape[2]))


@torch.library.register_fake("tensormask::swap_align2nat_windows_backward")
def _swap_align2nat_windows_backward_fake(grad, windows, lam, subsample, mode, N, V, U, H, W):
    op = "swap_align2nat_windows_backward"
    check_positive(lam, op, "lam")
    check_mode(mode, op)
    _check_windows_arg(windows, op)
    return grad.new_empty((N, V, U, H, W))
