"""Tests of up_align2nat (paper Fig. 4) and swap_align2nat (Fig. 5) against the slow reference of
``reference.py``, forward and backward, both interpolation modes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tensormask  # noqa: F401  (registers torch.ops.tensormask.*)
from tensormask import ops

from .reference import (
    output_shape,
    swap_align2nat_backward_ref,
    swap_align2nat_ref,
    up_align2nat_backward_ref,
    up_align2nat_ref,
)
from .utils import DEVICES, LAYOUTS, as_ref_input, assert_matches_ref, noncontiguous, num_threads, rand

T = torch.ops.tensormask

# op name → (wrapper, forward reference, backward reference, explicit backward op, subsamples (H, W))
OPS = {
    "up_align2nat": (ops.up_align2nat, up_align2nat_ref, up_align2nat_backward_ref, T.up_align2nat_backward, False),
    "swap_align2nat": (
        ops.swap_align2nat,
        swap_align2nat_ref,
        swap_align2nat_backward_ref,
        T.swap_align2nat_backward,
        True,
    ),
}
MODES = ["bilinear", "nearest"]
PADS = [-6.0, 0.0, 1.5]
DTYPES = [torch.float64, torch.float32]

# ((N, V̂, Û, H, W), λ): V̂ ≠ Û, odd and even window and spatial sizes, N ∈ {1, 2}, spatial sizes not
# multiples of λ (partial last cell of swap_align2nat); spatial sizes kept small for large λ.
CASES = [
    ((1, 3, 2, 4, 5), 1),
    ((2, 2, 3, 3, 4), 1),
    ((1, 3, 2, 5, 4), 2),
    ((2, 2, 1, 4, 6), 2),
    ((1, 2, 3, 5, 4), 3),
    ((2, 3, 1, 6, 5), 3),
    ((1, 2, 3, 6, 5), 5),
    ((2, 1, 2, 3, 4), 5),
    ((1, 2, 1, 9, 8), 8),
    ((2, 1, 2, 3, 4), 8),
]
CASE_IDS = [f"{s}-lam{lam}" for s, lam in CASES]


# ------------------------------------------------------------------------------------------------
# forward / backward vs the reference
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("pad_val", PADS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("op", OPS)
def test_forward_matches_reference(op, case, mode, pad_val, dtype, device):
    fn, ref = OPS[op][:2]
    shape, lam = case
    x = rand(shape, dtype, device)
    out = fn(x, lam, mode, pad_val)
    assert tuple(out.shape) == output_shape(shape, lam, OPS[op][4])
    assert_matches_ref(out, ref(as_ref_input(x), lam, mode, pad_val))


@pytest.mark.parametrize("op", OPS)
def test_default_arguments(op):
    """mode="bilinear", pad_val=-6 by default, in the wrapper and in the op schema."""
    fn, ref = OPS[op][:2]
    x = rand((2, 2, 3, 4, 5))
    expected = ref(as_ref_input(x), 2, "bilinear", -6.0)
    assert_matches_ref(fn(x, 2), expected)
    assert_matches_ref(getattr(T, op)(x, 2), expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("op", OPS)
def test_backward_matches_reference(op, case, mode, dtype, device):
    fn, _, bref, bop, sub = OPS[op]
    shape, lam = case
    x = rand(shape, dtype, device, seed=1).requires_grad_()
    grad = rand(output_shape(shape, lam, sub), dtype, device, seed=2)
    expected = bref(as_ref_input(grad), lam, mode, shape)
    # autograd; a non-zero pad_val must not contribute to the gradient
    fn(x, lam, mode, -6.0).backward(grad)
    assert_matches_ref(x.grad, expected)
    # explicit backward op (V, U, H, W are the forward input sizes)
    assert_matches_ref(bop(grad, lam, mode, *shape[1:]), expected)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", [((1, 3, 2, 3, 4), 1), ((1, 2, 3, 4, 3), 2), ((2, 1, 2, 5, 4), 3)], ids=str)
@pytest.mark.parametrize("op", OPS)
def test_gradcheck(op, case, mode):
    fn = OPS[op][0]
    shape, lam = case
    x = rand(shape, seed=3).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: fn(t, lam, mode, 1.5), (x,))


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("lam", [1, 2, 3])
@pytest.mark.parametrize("op", OPS)
def test_opcheck_forward(op, lam, mode, requires_grad):
    x = rand((2, 3, 2, 4, 5), seed=4).requires_grad_(requires_grad)
    torch.library.opcheck(getattr(T, op).default, (x, lam, mode, -6.0))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("lam", [1, 2, 3])
@pytest.mark.parametrize("op", OPS)
def test_opcheck_backward(op, lam, mode):
    bop, sub = OPS[op][3], OPS[op][4]
    in_shape = (2, 3, 2, 4, 5)
    grad = rand(output_shape(in_shape, lam, sub), seed=5)
    torch.library.opcheck(bop.default, (grad, lam, mode, *in_shape[1:]))


# ------------------------------------------------------------------------------------------------
# identities
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pad_val", [-6.0, 0.5])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_swap_is_subsampled_up(case, mode, pad_val):
    """swap_align2nat(x, λ) == up_align2nat(x, λ)[..., ::λ, ::λ], and the same for the gradient."""
    shape, lam = case
    x = rand(shape, seed=6).requires_grad_()
    swap = ops.swap_align2nat(x, lam, mode, pad_val)
    up = ops.up_align2nat(x, lam, mode, pad_val)
    torch.testing.assert_close(swap, up[..., ::lam, ::lam], atol=1e-12, rtol=0)

    grad = rand(swap.shape, seed=7)
    up_grad = torch.zeros(up.shape, dtype=grad.dtype)
    up_grad[..., ::lam, ::lam] = grad
    (g_swap,) = torch.autograd.grad(swap, x, grad)
    (g_up,) = torch.autograd.grad(up, x, up_grad)
    torch.testing.assert_close(g_swap, g_up, atol=1e-12, rtol=0)


@pytest.mark.parametrize("pad_val", [0.0, -6.0, 2.0])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(1, 3, 1, 4, 5), (2, 5, 3, 3, 4), (1, 1, 5, 6, 2)], ids=str)
@pytest.mark.parametrize("op", OPS)
def test_lambda_one_odd_window_is_align2nat(op, shape, mode, pad_val):
    """For odd V̂, Û and λ = 1 the samples are integers: up/swap_align2nat == align2nat(x, 1)."""
    fn = OPS[op][0]
    x = rand(shape, seed=8).requires_grad_()
    out = fn(x, 1, mode, pad_val)
    expected = ops.align2nat(x, 1, pad_val)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
    grad = rand(shape, seed=9)
    torch.testing.assert_close(
        torch.autograd.grad(out, x, grad)[0], torch.autograd.grad(expected, x, grad)[0], atol=1e-12, rtol=0
    )


@pytest.mark.parametrize("op", OPS)
def test_nearest_mode_constant_input_interior(op):
    """In nearest mode each output is a convex combination of ≤ 4 spatial neighbours of one window
    element: with a constant input c and no padding reached, the output is exactly c."""
    fn = OPS[op][0]
    x = torch.full((1, 2, 3, 40, 40), 0.75, dtype=torch.float64)
    out = fn(x, 2, "nearest", -6.0)
    # Windows of size 4×6 around interior pixels never leave the 40×40 map.
    interior = out[..., 4:-4, 4:-4] if op == "up_align2nat" else out[..., 2:-2, 2:-2]
    assert torch.equal(interior, torch.full_like(interior, 0.75))


# ------------------------------------------------------------------------------------------------
# torch.compile
# ------------------------------------------------------------------------------------------------


class BipyramidHead(torch.nn.Module):
    """A tiny mask head: conv+reshape to (N, V̂, Û, H, W), swap_align2nat, then align2nat on a
    second branch (for coverage of both op families in one graph)."""

    def __init__(self, channels=4, V=2, U=3, lam=2):
        super().__init__()
        self.V, self.U, self.lam = V, U, lam
        self.conv = torch.nn.Conv2d(channels, V * U, 1)

    def forward(self, f):
        N, _, H, W = f.shape
        t = self.conv(f).view(N, self.V, self.U, H, W)
        masks = ops.swap_align2nat(t, self.lam, "bilinear", -6.0).sigmoid()
        nat = ops.align2nat(t.tanh(), 1, 0.0)
        return masks, nat


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # emitted inside torch's inductor
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph_matches_eager(backend):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = BipyramidHead().double()
    f = rand((2, 4, 5, 7), seed=10)
    compiled = torch.compile(model, fullgraph=True, backend=backend)

    def run(m):
        fr = f.clone().requires_grad_()
        masks, nat = m(fr)
        loss = (masks * torch.linspace(0, 1, masks.numel(), dtype=masks.dtype).view_as(masks)).sum() + (
            nat**2
        ).sum()
        grads = torch.autograd.grad(loss, [fr, *m.parameters()])
        return masks, nat, grads

    eager = run(model)
    comp = run(compiled)
    torch.testing.assert_close(comp[0], eager[0])
    torch.testing.assert_close(comp[1], eager[1])
    for gc, ge in zip(comp[2], eager[2]):
        torch.testing.assert_close(gc, ge)


@pytest.mark.parametrize("op", OPS)
def test_compile_single_op(op):
    fn = OPS[op][0]
    x = rand((2, 2, 3, 5, 4), seed=11).requires_grad_()
    compiled = torch.compile(lambda t: fn(t, 3, "nearest", -1.0).tanh(), fullgraph=True, backend="aot_eager")
    out = compiled(x)
    (g,) = torch.autograd.grad(out.sum(), x)
    expected = fn(x, 3, "nearest", -1.0).tanh()
    (ge,) = torch.autograd.grad(expected.sum(), x)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(g, ge)


# ------------------------------------------------------------------------------------------------
# layouts, dtypes, determinism, empty tensors
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", OPS)
def test_noncontiguous_input(op, mode, layout):
    fn, _, bref, bop, sub = OPS[op]
    shape, lam = (2, 3, 2, 5, 6), 2
    x = noncontiguous(shape, layout, seed=12).requires_grad_()
    xc = x.detach().contiguous().requires_grad_()
    out, outc = fn(x, lam, mode, -6.0), fn(xc, lam, mode, -6.0)
    assert out.is_contiguous()
    torch.testing.assert_close(out, outc, atol=0, rtol=0)
    grad = rand(out.shape, seed=13)
    out.backward(grad)
    outc.backward(grad)
    torch.testing.assert_close(x.grad, xc.grad, atol=0, rtol=0)
    # non-contiguous gradient, through the explicit backward op and through autograd
    g_nc = noncontiguous(out.shape, layout, seed=14)
    expected = bref(g_nc.numpy(), lam, mode, shape)
    assert_matches_ref(bop(g_nc, lam, mode, *shape[1:]), expected)
    (g_auto,) = torch.autograd.grad(fn(x, lam, mode, -6.0), x, g_nc)
    assert_matches_ref(g_auto, expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", OPS)
def test_half_precision_cpu_close_to_float32(op, mode, dtype):
    fn, _, _, bop, _ = OPS[op]
    shape, lam = (2, 3, 2, 6, 5), 3
    tol = dict(atol=2e-2, rtol=1e-2) if dtype == torch.float16 else dict(atol=8e-2, rtol=2e-2)
    x = rand(shape, dtype, seed=15).requires_grad_()
    x32 = x.detach().float().requires_grad_()
    out, out32 = fn(x, lam, mode, -6.0), fn(x32, lam, mode, -6.0)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), out32, **tol)
    grad = rand(out.shape, dtype, seed=16)
    out.backward(grad)
    out32.backward(grad.float())
    assert x.grad.dtype == dtype
    torch.testing.assert_close(x.grad.float(), x32.grad, **tol)
    gb = bop(grad, lam, mode, *shape[1:])
    assert gb.dtype == dtype
    torch.testing.assert_close(gb.float(), x32.grad, **tol)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("lam", [2, 3])
@pytest.mark.parametrize("op", OPS)
def test_cpu_backward_is_deterministic(op, lam, mode):
    """The backward scatters into overlapping input cells: it must not depend on the thread count."""
    fn, _, _, bop, sub = OPS[op]
    shape = (2, 3, 4, 36, 40)
    x = rand(shape, torch.float32, seed=17)
    grad = rand(output_shape(shape, lam, sub), torch.float32, seed=18)

    def backward():
        xr = x.clone().requires_grad_()
        fn(xr, lam, mode, -6.0).backward(grad)
        return xr.grad, bop(grad, lam, mode, *shape[1:])

    with num_threads(1):
        ref_auto, ref_explicit = backward()
    assert torch.equal(ref_auto, ref_explicit)
    with num_threads(2):
        for _ in range(3):
            g_auto, g_explicit = backward()
            assert torch.equal(g_auto, ref_auto)
            assert torch.equal(g_explicit, ref_auto)


@pytest.mark.parametrize(
    "shape", [(0, 2, 3, 4, 5), (2, 0, 3, 4, 5), (2, 2, 0, 4, 5), (2, 2, 3, 0, 5), (1, 2, 3, 4, 0)], ids=str
)
@pytest.mark.parametrize("op", OPS)
def test_empty_tensors(op, shape):
    fn, _, _, bop, sub = OPS[op]
    lam = 2
    x = torch.zeros(shape, requires_grad=True)
    out = fn(x, lam, "bilinear", -6.0)
    assert tuple(out.shape) == output_shape(shape, lam, sub)
    out.sum().backward()
    assert x.grad.shape == shape
    gin = bop(torch.zeros(out.shape), lam, "nearest", *shape[1:])
    assert gin.shape == shape
    assert not gin.any()


# ------------------------------------------------------------------------------------------------
# CUDA vs CPU
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("device", [p for p in DEVICES if p != "cpu"])
def test_cuda_matches_cpu(op, mode, dtype, device):
    fn, _, _, bop, sub = OPS[op]
    shape, lam = (2, 3, 2, 17, 12), 4
    tol = dict(atol=1e-12, rtol=0) if dtype == torch.float64 else dict(atol=1e-5, rtol=1e-5)
    x = noncontiguous(shape, "channels_last_like", dtype, seed=19).requires_grad_()
    xd = x.detach().to(device).requires_grad_()
    out, outd = fn(x, lam, mode, -6.0), fn(xd, lam, mode, -6.0)
    torch.testing.assert_close(outd.cpu(), out, **tol)
    grad = rand(out.shape, dtype, seed=20)
    out.backward(grad)
    outd.backward(grad.to(device))
    torch.testing.assert_close(xd.grad.cpu(), x.grad, **tol)
    torch.testing.assert_close(bop(grad.to(device), lam, mode, *shape[1:]).cpu(), x.grad, **tol)


# ------------------------------------------------------------------------------------------------
# argument errors (native kernels on CPU, fake kernels on meta)
# ------------------------------------------------------------------------------------------------


# name → (call(fn, x), expected exception, argument named in the message)
BAD_FORWARD_CALLS = {
    "rank4": (lambda fn, x: fn(x[0], 2), ValueError, "`x`"),
    "rank1": (lambda fn, x: fn(x.flatten(), 2), ValueError, "`x`"),
    "rank6": (lambda fn, x: fn(x[None], 2), ValueError, "`x`"),
    "int32": (lambda fn, x: fn(x.int(), 2), TypeError, "`x`"),
    "bool": (lambda fn, x: fn(x.bool(), 2), TypeError, "`x`"),
    "lam0": (lambda fn, x: fn(x, 0), ValueError, "`lam`"),
    "lam_negative": (lambda fn, x: fn(x, -2), ValueError, "`lam`"),
    "mode_bicubic": (lambda fn, x: fn(x, 2, "bicubic"), ValueError, "`mode`"),
    "mode_case": (lambda fn, x: fn(x, 2, "Bilinear"), ValueError, "`mode`"),
    "mode_empty": (lambda fn, x: fn(x, 2, ""), ValueError, "`mode`"),
}


@pytest.mark.parametrize("bad", BAD_FORWARD_CALLS)
@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("op", OPS)
def test_bad_arguments_forward(op, device, bad):
    call, exc, arg = BAD_FORWARD_CALLS[bad]
    x = torch.zeros((1, 3, 2, 4, 5), device=device)
    with pytest.raises(exc, match=arg):
        call(OPS[op][0], x)


BAD_BACKWARD_CALLS = {
    "rank4": (lambda bop, g, s: bop(g[0], 2, "bilinear", *s), ValueError, "`grad`"),
    "int64": (lambda bop, g, s: bop(g.long(), 2, "bilinear", *s), TypeError, "`grad`"),
    "lam0": (lambda bop, g, s: bop(g, 0, "bilinear", *s), ValueError, "`lam`"),
    "lam_negative": (lambda bop, g, s: bop(g, -1, "bilinear", *s), ValueError, "`lam`"),
    "mode": (lambda bop, g, s: bop(g, 2, "linear", *s), ValueError, "`mode`"),
}


@pytest.mark.parametrize("bad", BAD_BACKWARD_CALLS)
@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("op", OPS)
def test_bad_arguments_backward(op, device, bad):
    call, exc, arg = BAD_BACKWARD_CALLS[bad]
    bop, sub = OPS[op][3], OPS[op][4]
    in_shape = (1, 3, 2, 4, 5)
    grad = torch.zeros(output_shape(in_shape, 2, sub), device=device)
    with pytest.raises(exc, match=arg):
        call(bop, grad, in_shape[1:])


@pytest.mark.parametrize("op", OPS)
def test_backward_rejects_mismatched_grad_shape(op):
    """The explicit backward op checks that `grad` has the forward output shape of (V, U, H, W)."""
    bop, sub = OPS[op][3], OPS[op][4]
    grad = torch.zeros(output_shape((1, 3, 2, 4, 5), 2, sub))
    with pytest.raises(ValueError, match="`grad`"):
        bop(grad, 2, "bilinear", 3, 2, 7, 5)  # wrong H
    with pytest.raises(ValueError, match="`grad`"):
        bop(grad, 3, "bilinear", 3, 2, 4, 5)  # wrong λ for this grad
    # fake kernel (meta): torch._check raises RuntimeError
    with pytest.raises((ValueError, RuntimeError), match="`grad`"):
        bop(grad.to("meta"), 2, "bilinear", 3, 2, 7, 5)


# ------------------------------------------------------------------------------------------------
# property test
# ------------------------------------------------------------------------------------------------


@st.composite
def resample_cases(draw, subsample: bool):
    lam = draw(st.sampled_from([1, 2, 3, 5, 8]))
    N = draw(st.integers(1, 2))
    V = draw(st.integers(1, 4 if lam <= 3 else 2))
    U = draw(st.integers(1, 4 if lam <= 3 else 2))
    # keep the output (and the Python loops) small: ≲ 6×6 output pixels
    hw_max = 6 * lam if subsample else max(2, 12 // lam)
    H = draw(st.integers(1, hw_max))
    W = draw(st.integers(1, hw_max))
    mode = draw(st.sampled_from(MODES))
    pad_val = draw(st.sampled_from([-6.0, 0.0, 3.0]))
    seed = draw(st.integers(0, 2**31 - 2))
    return (N, V, U, H, W), lam, mode, pad_val, seed


def _check_case(op, case):
    fn, ref, bref, bop, sub = OPS[op]
    shape, lam, mode, pad_val, seed = case
    x = rand(shape, seed=seed).requires_grad_()
    out = fn(x, lam, mode, pad_val)
    assert_matches_ref(out, ref(as_ref_input(x), lam, mode, pad_val))
    grad = rand(out.shape, seed=seed + 1)
    expected = bref(grad.numpy(), lam, mode, shape)
    assert_matches_ref(torch.autograd.grad(out, x, grad)[0], expected)
    assert_matches_ref(bop(grad, lam, mode, *shape[1:]), expected)


@settings(max_examples=25, deadline=None)
@given(case=resample_cases(subsample=False))
def test_property_up_align2nat_matches_reference(case):
    _check_case("up_align2nat", case)


@settings(max_examples=25, deadline=None)
@given(case=resample_cases(subsample=True))
def test_property_swap_align2nat_matches_reference(case):
    _check_case("swap_align2nat", case)


# ---------------------------------------------------------------------------------------------------
# swap_align2nat_windows: the dense op (checked against the reference above) indexed at windows.
# ---------------------------------------------------------------------------------------------------


def _random_windows(n, ho, wo, p, seed):
    g = torch.Generator().manual_seed(seed)
    rows = torch.stack([torch.randint(0, n, (p,), generator=g), torch.randint(0, ho, (p,), generator=g),
                        torch.randint(0, wo, (p,), generator=g)], dim=1)
    corners = torch.tensor([[0, 0, 0], [n - 1, ho - 1, wo - 1], [0, 0, wo - 1], [n - 1, ho - 1, 0]])
    return torch.cat([rows, corners])


@pytest.mark.parametrize("subsample", [True, False])
@pytest.mark.parametrize("lam", [1, 2, 3, 5])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_windows_equal_dense_forward_and_backward(subsample, lam, mode):
    x = torch.randn(2, 3, 4, 9, 7, dtype=torch.float64, requires_grad=True)
    dense = (ops.swap_align2nat if subsample else ops.up_align2nat)(x, lam, mode, -2.0)
    windows = _random_windows(2, dense.shape[3], dense.shape[4], 5, seed=lam)
    sparse = ops.swap_align2nat_windows(x, windows, lam, subsample, mode, -2.0)
    picked = dense[windows[:, 0], :, :, windows[:, 1], windows[:, 2]]
    torch.testing.assert_close(sparse, picked, rtol=0, atol=1e-12)
    g = torch.randn_like(sparse)
    (gs,) = torch.autograd.grad(sparse, x, g)
    (gd,) = torch.autograd.grad(picked, x, g)
    torch.testing.assert_close(gs, gd, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: ops.swap_align2nat_windows(t, windows, lam, subsample, mode, -2.0), (x,))
    assert torch.autograd.gradgradcheck(lambda t: ops.swap_align2nat_windows(t, windows, lam, subsample, mode, -2.0), (x,))


def test_windows_opcheck_and_errors():
    x = torch.randn(2, 3, 3, 6, 6, requires_grad=True)
    windows = torch.tensor([[0, 1, 2], [1, 2, 0]])
    torch.library.opcheck(torch.ops.tensormask.swap_align2nat_windows.default, (x, windows, 2, True, "bilinear", -6.0))
    with pytest.raises(ValueError, match="`windows` row 0"):
        ops.swap_align2nat_windows(x, torch.tensor([[2, 0, 0]]), 2)
    with pytest.raises(ValueError, match="`windows`"):
        ops.swap_align2nat_windows(x, torch.zeros(3, 2, dtype=torch.int64), 2)
    with pytest.raises(TypeError, match="`windows`"):
        ops.swap_align2nat_windows(x, windows.int(), 2)
    assert ops.swap_align2nat_windows(x, torch.zeros(0, 3, dtype=torch.int64), 2).shape == (0, 6, 6)


def test_windows_backward_is_deterministic_across_threads():
    x = torch.randn(2, 5, 5, 20, 20, requires_grad=True)
    windows = _random_windows(2, 10, 10, 40, seed=0)
    g = torch.randn(len(windows), 10, 10)
    grads = []
    for threads in (1, 2):
        with num_threads(threads):
            (gx,) = torch.autograd.grad(ops.swap_align2nat_windows(x, windows, 2), x, g)
        grads.append(gx)
    assert torch.equal(grads[0], grads[1])
