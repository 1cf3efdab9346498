"""Hypothesis strategies shared by the fuzz tests: dtypes, memory layouts, random tensors."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st

FLOAT_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
# Layouts of a tensor with given values: the op must give the same result for every one.
LAYOUTS = ["contiguous", "channels_last", "transposed", "sliced", "expanded_batch"]

# Tolerance of an interpolating op vs the float64 reference evaluated on the rounded inputs.
INTERP_TOL = {
    torch.float64: dict(atol=1e-10, rtol=0.0),
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.float16: dict(atol=2e-2, rtol=1e-2),
    torch.bfloat16: dict(atol=8e-2, rtol=2e-2),
}

seeds = st.integers(0, 2**31 - 2)
dtypes = st.sampled_from(FLOAT_DTYPES)
layouts = st.sampled_from(LAYOUTS)


def values(shape, seed: int, dtype=torch.float64) -> torch.Tensor:
    """Standard-normal values of ``shape`` (any sizes, zeros included), rounded to ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(tuple(shape), generator=g, dtype=torch.float64).to(dtype)


def with_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The values of ``t`` in another memory layout (same shape, same values, usually non-contiguous).

    ``channels_last`` is ``channels_last_3d`` for 5D and ``channels_last`` for 4D tensors;
    ``transposed`` stores the last two axes swapped; ``sliced`` is a strided view into a larger buffer;
    ``expanded_batch`` repeats the first sample with stride 0 along dim 0 (and is only used for
    inputs that are never written).
    """
    if layout == "contiguous" or t.dim() < 2:
        return t.contiguous()
    if layout == "channels_last":
        if t.dim() == 5:
            return t.contiguous(memory_format=torch.channels_last_3d)
        if t.dim() == 4:
            return t.contiguous(memory_format=torch.channels_last)
        return t.t().contiguous().t() if t.dim() == 2 else t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if layout == "transposed":
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if layout == "sliced":
        big = torch.zeros(tuple(2 * s + 1 for s in t.shape), dtype=t.dtype)
        view = big[tuple(slice(1, 1 + 2 * s, 2) for s in t.shape)]
        view.copy_(t)
        return view
    if layout == "expanded_batch":
        if t.shape[0] == 0:
            return t
        return t[:1].expand(t.shape)
    raise ValueError(layout)


def expected_values(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The values an op sees for ``with_layout(t, layout)`` (sample 0 repeated for expanded_batch)."""
    return with_layout(t, layout).contiguous()


def as_f64(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()
