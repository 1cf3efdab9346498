"""Helpers shared by the op tests (tensor factories, device parametrization, comparisons)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")

# Devices the reference comparisons run on; CUDA results are compared to the CPU reference too.
DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]

# Tolerances vs the float64 reference (which is evaluated on the very same, already-rounded inputs).
TOL = {torch.float64: dict(atol=1e-10, rtol=0.0), torch.float32: dict(atol=1e-5, rtol=1e-6)}

# Layouts used by the non-contiguity tests.
LAYOUTS = ["permuted", "channels_last_like", "sliced", "expanded"]


def rand(shape, dtype=torch.float64, device="cpu", seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(tuple(shape), generator=g, dtype=torch.float64).to(dtype=dtype, device=device)


def noncontiguous(shape, layout: str, dtype=torch.float64, seed=0) -> torch.Tensor:
    """A random tensor of ``shape`` = (N, V, U, H, W) that is *not* contiguous, in a given layout."""
    N, V, U, H, W = shape
    if layout == "permuted":  # storage order (W, H, U, V, N): every stride reversed
        t = rand((W, H, U, V, N), dtype, seed=seed).permute(4, 3, 2, 1, 0)
    elif layout == "channels_last_like":  # storage order (N, H, W, V, U): (V, U) innermost
        t = rand((N, H, W, V, U), dtype, seed=seed).permute(0, 3, 4, 1, 2)
    elif layout == "sliced":  # steps and offsets in every dim
        t = rand((N + 1, 2 * V, U + 2, 2 * H + 1, 3 * W), dtype, seed=seed)[1:, ::2, 1 : U + 1, 1::2, ::3]
    elif layout == "expanded":  # stride 0 along N and U
        t = rand((1, V, 1, H, W), dtype, seed=seed).expand(N, V, U, H, W)
    else:
        raise ValueError(layout)
    assert t.shape == tuple(shape)
    assert not t.is_contiguous() or t.numel() <= 1
    return t


def assert_matches_ref(out: torch.Tensor, ref: np.ndarray, dtype=None, **tol) -> None:
    """Compare an op result to a float64 numpy reference."""
    dtype = dtype or out.dtype
    assert tuple(out.shape) == tuple(ref.shape), (tuple(out.shape), ref.shape)
    assert out.dtype == dtype
    kw = dict(TOL[dtype])
    kw.update(tol)
    torch.testing.assert_close(out.detach().cpu().double(), torch.from_numpy(ref), **kw)


def as_ref_input(x: torch.Tensor) -> np.ndarray:
    """The float64 values the op actually sees (after rounding to its dtype)."""
    return x.detach().cpu().double().numpy()


@contextlib.contextmanager
def num_threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def call_in_fake_mode(op, kwargs: dict):
    """Call ``op(**kwargs)`` with every tensor argument turned into a FakeTensor, so that only the
    op's fake kernel (its argument checks and output shape) runs."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        return op(**{k: mode.from_tensor(v) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()})
