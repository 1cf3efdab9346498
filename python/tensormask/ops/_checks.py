"""Argument checks shared by the fake kernels (the native kernels do the same checks in C++)."""

from __future__ import annotations

import torch

MODES = ("bilinear", "nearest")


def check_4d_tensor(x: torch.Tensor, op: str, arg: str = "x") -> None:
    """Raise ValueError/TypeError unless ``x`` is a floating (N, V, U, H, W) tensor."""
    if x.dim() != 5:
        raise ValueError(f"{op}: `{arg}` must be a 5D tensor (N, V, U, H, W), got {x.dim()}D with shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{op}: `{arg}` must be a floating point tensor, got {x.dtype}")


def check_positive(value: int, op: str, arg: str) -> None:
    if value < 1:
        raise ValueError(f"{op}: `{arg}` must be a positive integer, got {value}")


def check_mode(mode: str, op: str) -> None:
    if mode not in MODES:
        raise ValueError(f'{op}: `mode` must be "bilinear" or "nearest", got "{mode}"')
