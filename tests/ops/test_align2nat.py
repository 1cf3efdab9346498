"""Tests of align2nat / nat2align against the slow reference of ``reference.py`` (paper §3.4, eq. 1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tensormask  # noqa: F401  (registers torch.ops.tensormask.*)
from tensormask import ops

from .reference import align2nat_ref, align2nat_valid_mask, nat2align_ref
from .utils import DEVICES, LAYOUTS, as_ref_input, assert_matches_ref, noncontiguous, num_threads, rand

OPS = {
    "align2nat": (ops.align2nat, align2nat_ref, torch.ops.tensormask.align2nat),
    "nat2align": (ops.nat2align, nat2align_ref, torch.ops.tensormask.nat2align),
}
# The inverse of each op; by the spec the backward of one is the other with pad_val = 0.
INVERSE = {"align2nat": "nat2align", "nat2align": "align2nat"}

# (N, V, U, H, W): V ≠ U, odd and even window sizes, N ∈ {1, 2}.
SHAPES = [
    (1, 3, 2, 4, 5),
    (2, 2, 5, 5, 3),
    (1, 4, 1, 3, 6),
    (2, 5, 4, 6, 4),
    (1, 1, 3, 2, 2),
]
ALPHAS = [1, 2, 3]
PADS = [0.0, -6.0, 2.5]
DTYPES = [torch.float64, torch.float32]


def scatter_backward_ref(grad: np.ndarray, op: str, alpha: int) -> np.ndarray:
    """Gradient of align2nat / nat2align as the scatter transpose of the forward gather."""
    sign = 1 if op == "align2nat" else -1
    N, V, U, H, W = grad.shape
    gin = np.zeros_like(grad)
    for v in range(V):
        for u in range(U):
            for y in range(H):
                for x in range(W):
                    iy = y + sign * alpha * (v - V // 2)
                    ix = x + sign * alpha * (u - U // 2)
                    if 0 <= iy < H and 0 <= ix < W:
                        gin[:, v, u, iy, ix] += grad[:, v, u, y, x]
    return gin


# ------------------------------------------------------------------------------------------------
# forward / backward vs the reference
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("pad_val", PADS)
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("op", OPS)
def test_forward_matches_reference(op, shape, alpha, pad_val, dtype, device):
    fn, ref, _ = OPS[op]
    x = rand(shape, dtype, device)
    assert_matches_ref(fn(x, alpha, pad_val), ref(as_ref_input(x), alpha, pad_val))


@pytest.mark.parametrize("op", OPS)
def test_default_arguments(op):
    fn, ref, raw = OPS[op]
    x = rand((2, 3, 2, 4, 5))
    assert_matches_ref(fn(x), ref(as_ref_input(x), 1, 0.0))
    assert_matches_ref(raw(x), ref(as_ref_input(x), 1, 0.0))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("op", OPS)
def test_backward_matches_reference(op, shape, alpha, dtype, device):
    fn, _, _ = OPS[op]
    inv = OPS[INVERSE[op]][0]
    x = rand(shape, dtype, device, seed=1).requires_grad_()
    grad = rand(shape, dtype, device, seed=2)
    fn(x, alpha, -6.0).backward(grad)  # pad_val must not leak into the gradient
    ref = scatter_backward_ref(as_ref_input(grad), op, alpha)
    assert_matches_ref(x.grad, ref)
    # The documented closed form: the backward of one op is the other one with pad_val = 0.
    assert_matches_ref(inv(grad, alpha, 0.0), ref)


@pytest.mark.parametrize("alpha", [1, 2])
@pytest.mark.parametrize("shape", [(1, 3, 2, 3, 4), (2, 2, 3, 4, 3)], ids=str)
@pytest.mark.parametrize("op", OPS)
def test_gradcheck(op, shape, alpha):
    fn = OPS[op][0]
    x = rand(shape, seed=3).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: fn(t, alpha, 1.5), (x,))


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("alpha", [1, 2])
@pytest.mark.parametrize("op", OPS)
def test_opcheck(op, alpha, requires_grad):
    raw = OPS[op][2]
    x = rand((2, 3, 2, 4, 5), seed=4).requires_grad_(requires_grad)
    torch.library.opcheck(raw.default, (x, alpha, -1.0))


@pytest.mark.parametrize("op", OPS)
def test_compile_single_op(op):
    """Fullgraph compile (fake kernel + autograd under AOT) with the cheap aot_eager backend."""
    fn = OPS[op][0]
    x = rand((2, 3, 2, 4, 5), seed=5).requires_grad_()
    compiled = torch.compile(lambda t: fn(t, 2, -1.0).tanh(), fullgraph=True, backend="aot_eager")
    out = compiled(x)
    out.sum().backward()
    x2 = x.detach().clone().requires_grad_()
    expected = fn(x2, 2, -1.0).tanh()
    expected.sum().backward()
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(x.grad, x2.grad)


# ------------------------------------------------------------------------------------------------
# identities
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pad_val", [0.0, -3.0])
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("first", OPS)
def test_round_trip_is_identity_on_valid_region(first, shape, alpha, pad_val):
    """nat2align(align2nat(x)) == x where the intermediate sample is inside the map, else pad_val
    (and the same for align2nat(nat2align(x)), whose valid region is mirrored)."""
    x = rand(shape, seed=6)
    once = OPS[first][0](x, alpha, pad_val)
    back = OPS[INVERSE[first]][0](once, alpha, pad_val)
    # The intermediate index is y − s·α(v − ⌊V/2⌋) with s = +1 for align2nat first, −1 otherwise.
    valid = align2nat_valid_mask(*shape[1:], alpha=alpha if first == "align2nat" else -alpha)
    valid = torch.from_numpy(valid).expand(shape)
    assert valid.any()
    torch.testing.assert_close(back[valid], x[valid], atol=0, rtol=0)
    assert (back[~valid] == pad_val).all()


@pytest.mark.parametrize("op", OPS)
def test_window_of_size_one_is_identity(op):
    """V = U = 1: the offset α·(v − ⌊V/2⌋) is 0, so the op is the identity whatever α."""
    x = rand((2, 1, 1, 4, 5))
    torch.testing.assert_close(OPS[op][0](x, 3, 7.0), x, atol=0, rtol=0)


# ------------------------------------------------------------------------------------------------
# layouts, dtypes, determinism, empty tensors
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op", OPS)
def test_noncontiguous_input(op, layout):
    fn = OPS[op][0]
    x = noncontiguous((2, 3, 4, 5, 6), layout, seed=7).requires_grad_()
    xc = x.detach().contiguous().requires_grad_()
    grad = rand((2, 3, 4, 5, 6), seed=8)
    out, outc = fn(x, 2, -1.0), fn(xc, 2, -1.0)
    assert out.is_contiguous()
    torch.testing.assert_close(out, outc, atol=0, rtol=0)
    out.backward(grad)
    outc.backward(grad)
    torch.testing.assert_close(x.grad, xc.grad, atol=0, rtol=0)
    # non-contiguous upstream gradient
    g_nc = noncontiguous((2, 3, 4, 5, 6), "permuted", seed=9)
    x.grad = None
    fn(x, 2, -1.0).backward(g_nc)
    assert_matches_ref(x.grad, scatter_backward_ref(g_nc.numpy(), op, 2))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("op", OPS)
def test_half_precision_cpu(op, dtype):
    """A pure gather: exact w.r.t. float32 on the same (rounded) values, forward and backward."""
    fn = OPS[op][0]
    x = rand((2, 3, 2, 4, 5), dtype, seed=10).requires_grad_()
    x32 = x.detach().float().requires_grad_()
    grad = rand((2, 3, 2, 4, 5), dtype, seed=11)
    out, out32 = fn(x, 2, -6.0), fn(x32, 2, -6.0)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), out32, atol=0, rtol=0)
    out.backward(grad)
    out32.backward(grad.float())
    assert x.grad.dtype == dtype
    torch.testing.assert_close(x.grad.float(), x32.grad, atol=0, rtol=0)


@pytest.mark.parametrize("op", OPS)
def test_cpu_backward_is_deterministic(op):
    fn = OPS[op][0]
    shape = (2, 5, 4, 40, 48)
    x = rand(shape, torch.float32, seed=12)
    grad = rand(shape, torch.float32, seed=13)

    def backward():
        xr = x.clone().requires_grad_()
        fn(xr, 2, 0.0).backward(grad)
        return xr.grad

    with num_threads(1):
        g1 = backward()
    with num_threads(2):
        g2 = [backward() for _ in range(3)]
    for g in g2:
        assert torch.equal(g1, g)


@pytest.mark.parametrize(
    "shape", [(0, 3, 2, 4, 5), (2, 0, 3, 4, 5), (2, 3, 0, 4, 5), (2, 3, 2, 0, 5), (1, 3, 2, 4, 0)], ids=str
)
@pytest.mark.parametrize("op", OPS)
def test_empty_tensors(op, shape):
    fn = OPS[op][0]
    x = torch.zeros(shape, requires_grad=True)
    out = fn(x, 2, -1.0)
    assert out.shape == shape
    out.sum().backward()
    assert x.grad.shape == shape


# ------------------------------------------------------------------------------------------------
# CUDA vs CPU
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("device", [p for p in DEVICES if p != "cpu"])
def test_cuda_matches_cpu(op, dtype, device):
    fn = OPS[op][0]
    x = noncontiguous((2, 5, 4, 9, 7), "channels_last_like", dtype, seed=14).requires_grad_()
    xd = x.detach().to(device).requires_grad_()
    grad = rand((2, 5, 4, 9, 7), dtype, seed=15)
    out, outd = fn(x, 2, -6.0), fn(xd, 2, -6.0)
    torch.testing.assert_close(outd.cpu(), out, atol=0, rtol=0)
    out.backward(grad)
    outd.backward(grad.to(device))
    torch.testing.assert_close(xd.grad.cpu(), x.grad, atol=0, rtol=0)


# ------------------------------------------------------------------------------------------------
# argument errors (native kernels on CPU, fake kernels on meta)
# ------------------------------------------------------------------------------------------------


# name → (call(fn, x), expected exception, argument named in the message)
BAD_CALLS = {
    "rank4": (lambda fn, x: fn(x[0]), ValueError, "`x`"),
    "rank1": (lambda fn, x: fn(x.flatten()), ValueError, "`x`"),
    "rank6": (lambda fn, x: fn(x[None]), ValueError, "`x`"),
    "int64": (lambda fn, x: fn(x.long()), TypeError, "`x`"),
    "bool": (lambda fn, x: fn(x.bool()), TypeError, "`x`"),
    "alpha0": (lambda fn, x: fn(x, 0), ValueError, "`alpha`"),
    "alpha_negative": (lambda fn, x: fn(x, -1), ValueError, "`alpha`"),
}


@pytest.mark.parametrize("bad", BAD_CALLS)
@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("op", OPS)
def test_bad_arguments(op, device, bad):
    call, exc, arg = BAD_CALLS[bad]
    x = torch.zeros((1, 3, 2, 4, 5), device=device)
    with pytest.raises(exc, match=arg):
        call(OPS[op][0], x)


def test_error_messages_print_their_numbers():
    """The native library formats numbers with the C++ runtime torch runs with. A private, statically
    linked libstdc++ writes no numbers (the messages stop at the first one) or crashes; CMakeLists.txt
    links torch's shared one. Checked through the raw op, whose message comes from C++."""
    with pytest.raises(ValueError, match=r"got 1D with shape \[3\]"):
        torch.ops.tensormask.align2nat(torch.zeros(3), 1, -1.0)
    with pytest.raises(ValueError, match=r"`alpha` must be a positive integer, got -7"):
        torch.ops.tensormask.align2nat(torch.zeros(1, 3, 3, 2, 2), -7, 0.0)


# ------------------------------------------------------------------------------------------------
# property test
# ------------------------------------------------------------------------------------------------


@st.composite
def align_cases(draw):
    shape = tuple(draw(st.integers(lo, hi)) for lo, hi in [(1, 2), (1, 5), (1, 5), (1, 6), (1, 6)])
    alpha = draw(st.integers(1, 4))
    pad_val = draw(st.sampled_from([0.0, -6.0, 1.25]))
    seed = draw(st.integers(0, 2**31 - 2))
    return shape, alpha, pad_val, seed


@pytest.mark.parametrize("op", OPS)
@settings(max_examples=25, deadline=None)
@given(case=align_cases())
def test_property_matches_reference(op, case):
    shape, alpha, pad_val, seed = case
    fn, ref, _ = OPS[op]
    x = rand(shape, seed=seed).requires_grad_()
    out = fn(x, alpha, pad_val)
    assert_matches_ref(out, ref(as_ref_input(x), alpha, pad_val))
    grad = rand(shape, seed=seed + 1)
    out.backward(grad)
    assert_matches_ref(x.grad, scatter_backward_ref(grad.numpy(), op, alpha))
