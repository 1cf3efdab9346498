"""Fuzz tests of align2nat / nat2align / up_align2nat / swap_align2nat / swap_align2nat_windows against
the float64 references of ``tests/ops/reference.py`` (written from the paper's formulas).

Random shapes with zero-size dims (N = 0, V = 0, H = 0, ...), V ≠ U, α and λ much larger than H/W, every
float dtype, and non-contiguous / channels-last inputs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

import tensormask  # noqa: F401  (registers torch.ops.tensormask.*)
from tensormask import ops

from ..ops import reference as ref
from ..ops.test_align2nat import scatter_backward_ref
from .counter import tick
from .strategies import INTERP_TOL, as_f64, dtypes, expected_values, layouts, seeds, values, with_layout

MODES = ("bilinear", "nearest")
pad_vals = st.sampled_from([0.0, -6.0, 1.25, -0.5])
# Output elements × taps the Python references loop over stay ≲ 10^4 per case.
MAX_OUT = 600


def _assert_close(out: torch.Tensor, expected: np.ndarray, dtype, exact: bool = False) -> None:
    assert tuple(out.shape) == expected.shape, (tuple(out.shape), expected.shape)
    assert out.dtype == dtype
    tol = dict(atol=0.0, rtol=0.0) if exact else INTERP_TOL[dtype]
    torch.testing.assert_close(out.detach().double(), torch.from_numpy(expected), **tol)


# ---- align2nat / nat2align ------------------------------------------------------------------------


@st.composite
def shift_cases(draw):
    shape = (draw(st.integers(0, 2)),) + tuple(draw(st.integers(0, 5)) for _ in range(4))
    # α: small, larger than H/W, or near the int64 limit (the shift must not overflow)
    alpha = draw(st.one_of(st.integers(1, 4), st.integers(5, 10**6), st.sampled_from([2**31, 2**62, 2**63 - 1])))
    return shape, alpha, draw(pad_vals), draw(dtypes), draw(layouts), draw(seeds)


OPS_SHIFT = {"align2nat": (ops.align2nat, ref.align2nat_ref), "nat2align": (ops.nat2align, ref.nat2align_ref)}


@given(op=st.sampled_from(sorted(OPS_SHIFT)), case=shift_cases())
def test_fuzz_align2nat_nat2align(op, case):
    tick("align2nat/nat2align")
    shape, alpha, pad_val, dtype, layout, seed = case
    fn, fn_ref = OPS_SHIFT[op]
    base = values(shape, seed, dtype)
    x = with_layout(base, layout)
    out = fn(x, alpha, pad_val)
    # a pure gather: bit-exact in every dtype
    _assert_close(out, fn_ref(as_f64(expected_values(base, layout)), alpha, pad_val), dtype, exact=True)
    if dtype in (torch.float32, torch.float64):
        xg = x.detach().clone().requires_grad_()
        grad = values(shape, seed + 1, dtype)
        (gx,) = torch.autograd.grad(fn(xg, alpha, pad_val), xg, grad, allow_unused=True)
        expected = scatter_backward_ref(as_f64(grad), op, alpha)
        if gx is None:  # zero-size input
            assert xg.numel() == 0
        else:
            _assert_close(gx, expected, dtype, exact=True)


# ---- up_align2nat / swap_align2nat ------------------------------------------------------------------


@st.composite
def resample_cases(draw, subsample: bool):
    # λ: small, or much larger than the window and the feature map ("huge λ relative to H/W")
    lam = draw(st.one_of(st.integers(1, 4), st.integers(5, 16)))
    N = draw(st.integers(0, 2))
    V = draw(st.integers(0, 3))
    U = draw(st.integers(0, 3))
    side = max(1, math.isqrt(MAX_OUT // max(1, lam * lam * V * U)))  # output pixels per axis
    hw_max = side * lam if subsample else side
    H = draw(st.integers(0, min(hw_max, 24)))
    W = draw(st.integers(0, min(hw_max, 24)))
    return (N, V, U, H, W), lam, draw(st.sampled_from(MODES)), draw(pad_vals), draw(dtypes), draw(layouts), draw(seeds)


def _check_resample(op: str, case) -> None:
    subsample = op == "swap_align2nat"
    fn = ops.swap_align2nat if subsample else ops.up_align2nat
    fn_ref = ref.swap_align2nat_ref if subsample else ref.up_align2nat_ref
    bref = ref.swap_align2nat_backward_ref if subsample else ref.up_align2nat_backward_ref
    bop = torch.ops.tensormask.swap_align2nat_backward if subsample else torch.ops.tensormask.up_align2nat_backward
    shape, lam, mode, pad_val, dtype, layout, seed = case
    base = values(shape, seed, dtype)
    x = with_layout(base, layout)
    out = fn(x, lam, mode, pad_val)
    _assert_close(out, fn_ref(as_f64(expected_values(base, layout)), lam, mode, pad_val), dtype)
    if dtype not in (torch.float32, torch.float64):
        return
    grad = values(out.shape, seed + 1, dtype)
    expected = bref(as_f64(grad), lam, mode, shape)
    _assert_close(bop(grad, lam, mode, *shape[1:]), expected, dtype)
    xg = x.detach().clone().requires_grad_()
    if xg.numel():
        (gx,) = torch.autograd.grad(fn(xg, lam, mode, pad_val), xg, grad, allow_unused=True)
        _assert_close(gx if gx is not None else torch.zeros_like(xg), expected, dtype)


@given(case=resample_cases(subsample=False))
def test_fuzz_up_align2nat(case):
    tick("up_align2nat")
    _check_resample("up_align2nat", case)


@given(case=resample_cases(subsample=True))
def test_fuzz_swap_align2nat(case):
    tick("swap_align2nat")
    _check_resample("swap_align2nat", case)


# ---- swap_align2nat_windows ---------------------------------------------------------------------------


@given(subsample=st.booleans(), case=resample_cases(subsample=True), data=st.data())
def test_fuzz_swap_align2nat_windows(subsample, case, data):
    """Windows (n, y, x) of the dense output, duplicates allowed; the backward scatters each window's
    gradient into the dense output gradient, then applies the dense backward reference."""
    tick("swap_align2nat_windows")
    shape, lam, mode, pad_val, dtype, layout, seed = case
    N, V, U, H, W = shape
    fn_ref = ref.swap_align2nat_ref if subsample else ref.up_align2nat_ref
    bref = ref.swap_align2nat_backward_ref if subsample else ref.up_align2nat_backward_ref
    _, Vo, Uo, Ho, Wo = ref.output_shape(shape, lam, subsample)
    if N * Ho * Wo == 0:
        rows = []
    else:
        row = st.tuples(st.integers(0, N - 1), st.integers(0, Ho - 1), st.integers(0, Wo - 1))
        rows = data.draw(st.lists(row, max_size=6))
    windows = torch.tensor(rows, dtype=torch.int64).reshape(-1, 3)
    base = values(shape, seed, dtype)
    x = with_layout(base, layout)
    out = ops.swap_align2nat_windows(x, windows, lam, subsample, mode, pad_val)
    dense = fn_ref(as_f64(expected_values(base, layout)), lam, mode, pad_val)
    idx = windows.numpy()
    expected = dense[idx[:, 0], :, :, idx[:, 1], idx[:, 2]].reshape(len(rows), Vo, Uo)
    _assert_close(out, expected, dtype)
    if dtype != torch.float64 or x.numel() == 0 or not rows:
        return
    xg = x.detach().clone().requires_grad_()
    g = values(out.shape, seed + 1, dtype)
    (gx,) = torch.autograd.grad(ops.swap_align2nat_windows(xg, windows, lam, subsample, mode, pad_val), xg, g)
    dense_grad = np.zeros((N, Vo, Uo, Ho, Wo))
    for p, (n, y, xx) in enumerate(rows):
        dense_grad[n, :, :, y, xx] += as_f64(g[p])
    _assert_close(gx, bref(dense_grad, lam, mode, shape), dtype)
