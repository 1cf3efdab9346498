"""Tests of sparse mask decoding (decode_windows and the natural-head helpers): the sparse masks equal
the dense head outputs gathered at the windows, for every mask head of Fig. 6/7."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tensormask  # noqa: F401  (registers torch.ops.tensormask.*)
from tensormask import ops
from tensormask.config import HeadConfig
from tensormask.modeling.bipyramid import bipyramid_mask_logits, fuse_to_finest
from tensormask.modeling.heads import TensorMaskHead, baseline_mask_logits

from .utils import DEVICES, num_threads, requires_cuda

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def make_conv(C, channels, dtype, seed, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(channels, C, generator=g, dtype=torch.float64) / C**0.5
    b = torch.randn(channels, generator=g, dtype=torch.float64)
    return w.to(dtype=dtype, device=device), b.to(dtype=dtype, device=device)


def make_features(N, C, H, W, dtype, seed, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return (2 * torch.randn(N, C, H, W, generator=g, dtype=torch.float64)).to(dtype=dtype, device=device)


def conv1x1(f, w, b):
    return F.conv2d(f, w[:, :, None, None], b)


def sample_windows(N, Ho, Wo, count, seed, device="cpu"):
    """Random windows plus the four corners of every image (borders y = 0, x = Wo − 1, ...)."""
    g = torch.Generator().manual_seed(seed)
    rows = [[n, y, x] for n in range(N) for y in (0, Ho - 1) for x in (0, Wo - 1)]
    rand = torch.stack(
        [torch.randint(0, N, (count,), generator=g), torch.randint(0, Ho, (count,), generator=g),
         torch.randint(0, Wo, (count,), generator=g)],
        dim=1,
    )
    return torch.cat([torch.tensor(rows, dtype=torch.int64), rand]).to(device)


def gather(dense, windows):
    """dense (N, V, U, Ho, Wo) → (P, V, U) at the windows."""
    w = windows.cpu()
    return dense[w[:, 0], :, :, w[:, 1], w[:, 2]]


def assert_close_rel(out, ref, dtype):
    """max |out − ref| ≤ tol·max(1, max |ref|)."""
    assert out.shape == ref.shape, (out.shape, ref.shape)
    assert out.dtype == ref.dtype
    out, ref = out.detach().cpu().double(), ref.detach().cpu().double()
    scale = max(1.0, ref.abs().max().item()) if ref.numel() else 1.0
    err = (out - ref).abs().max().item() if ref.numel() else 0.0
    assert err <= TOL[dtype] * scale, f"max error {err:.3g} > {TOL[dtype]:.0e} × {scale:.3g}"


# ------------------------------------------------------------------------------------------------
# Sparse = dense, against the real head functions
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("level", [0, 1, 2, 3, 4, 5])
@pytest.mark.parametrize("size", [3, 4])
def test_bipyramid_matches_dense(dtype, level, size):
    # Fused features at "P2" resolution; level k: λ = 2^k, output grid ⌈H/2^k⌉ × ⌈W/2^k⌉.
    N, C, H, W = 2, 12, 37, 45
    f = make_features(N, C, H, W, dtype, seed=level)
    w, b = make_conv(C, size * size, dtype, seed=10 + level)
    dense = bipyramid_mask_logits(conv1x1(f, w, b), size, level, pad_val=-6.0)
    Ho, Wo = dense.shape[-2:]
    windows = sample_windows(N, Ho, Wo, 12, seed=level)
    out = ops.decode_windows(f, w, b, windows, size, size, 2**level, True, "bilinear", -6.0)
    assert out.shape == (windows.shape[0], 2**level * size, 2**level * size)
    assert_close_rel(out, gather(dense, windows), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("size", [5, 4])
def test_simple_aligned_matches_dense(dtype, size):
    N, C, H, W = 2, 10, 9, 13
    f = make_features(N, C, H, W, dtype, seed=size)
    w, b = make_conv(C, size * size, dtype, seed=size + 1)
    dense = baseline_mask_logits(conv1x1(f, w, b), "simple_aligned", size, pad_val=-3.5)
    windows = sample_windows(N, H, W, 20, seed=size)
    out = ops.decode_windows(f, w, b, windows, size, size, 1, True, "bilinear", -3.5)
    assert_close_rel(out, gather(dense, windows), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("lam,size", [(3, 9), (3, 15), (5, 15)])
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_upscale_aligned_matches_dense(dtype, lam, size, interpolation):
    N, C, H, W = 2, 8, 7, 10
    coarse = size // lam
    f = make_features(N, C, H, W, dtype, seed=lam * size)
    w, b = make_conv(C, coarse * coarse, dtype, seed=lam)
    dense = baseline_mask_logits(conv1x1(f, w, b), "upscale_aligned", size, lam, interpolation, pad_val=-6.0)
    windows = sample_windows(N, H, W, 16, seed=lam)
    out = ops.decode_windows(f, w, b, windows, coarse, coarse, lam, False, interpolation, -6.0)
    assert out.shape == (windows.shape[0], size, size)
    assert_close_rel(out, gather(dense, windows), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize(
    "V,U,lam,subsample,mode",
    [
        (3, 5, 1, True, "bilinear"),
        (2, 3, 1, True, "bilinear"),
        (5, 2, 2, True, "bilinear"),
        (3, 4, 4, True, "bilinear"),
        (4, 3, 2, True, "nearest"),
        (3, 2, 8, True, "nearest"),
        (2, 5, 3, False, "bilinear"),
        (4, 1, 2, False, "nearest"),
        (1, 1, 6, True, "bilinear"),
    ],
)
def test_rectangular_matches_swap_align2nat(dtype, V, U, lam, subsample, mode):
    """V̂ ≠ Û, even/odd sizes, both geometries, against conv + swap_align2nat / up_align2nat."""
    N, C, H, W = 2, 9, 19, 23
    f = make_features(N, C, H, W, dtype, seed=V * 7 + U)
    w, b = make_conv(C, V * U, dtype, seed=lam)
    aligned = conv1x1(f, w, b).reshape(N, V, U, H, W)
    dense = (ops.swap_align2nat if subsample else ops.up_align2nat)(aligned, lam, mode, 1.25)
    Ho, Wo = dense.shape[-2:]
    windows = sample_windows(N, Ho, Wo, 16, seed=lam + V)
    out = ops.decode_windows(f, w, b, windows, V, U, lam, subsample, mode, 1.25)
    assert out.shape == (windows.shape[0], lam * V, lam * U)
    assert_close_rel(out, gather(dense, windows), dtype)


def test_all_windows_of_a_level_equal_dense():
    """Every window of the grid (a 1×1 map included): nothing depends on the order of the windows."""
    for H, W in [(11, 6), (1, 1)]:
        N, C, V, lam = 2, 5, 3, 4
        f = make_features(N, C, H, W, torch.float64, seed=H)
        w, b = make_conv(C, V * V, torch.float64, seed=W)
        dense = bipyramid_mask_logits(conv1x1(f, w, b), V, 2)
        Ho, Wo = dense.shape[-2:]
        grid = torch.cartesian_prod(torch.arange(N), torch.arange(Ho), torch.arange(Wo))
        perm = torch.randperm(grid.shape[0], generator=torch.Generator().manual_seed(0))
        out = ops.decode_windows(f, w, b, grid[perm], V, V, lam)
        assert_close_rel(out, gather(dense, grid[perm]), torch.float64)


@pytest.mark.parametrize("head,lam", [("simple_natural", 1), ("upscale_natural", 1), ("upscale_natural", 3), ("upscale_natural", 5)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_natural_helpers_match_dense(head, lam, dtype):
    N, C, H, W, size = 2, 11, 8, 9, 15
    coarse = size // lam
    f = make_features(N, C, H, W, dtype, seed=lam)
    w, b = make_conv(C, coarse * coarse, dtype, seed=lam + 3)
    dense = baseline_mask_logits(conv1x1(f, w, b), head, size, lam)
    windows = sample_windows(N, H, W, 10, seed=lam)
    if head == "simple_natural":
        out = ops.gather_natural_windows(f, w, b, windows, size, size)
    else:
        out = ops.upscale_natural_windows(f, w, b, windows, coarse, coarse, lam)
    assert out.shape == (windows.shape[0], size, size)
    assert_close_rel(out, gather(dense, windows), dtype)


def test_natural_helpers_rectangular_and_conv_weight():
    N, C, H, W, V, U, lam = 1, 6, 5, 7, 2, 3, 2
    f = make_features(N, C, H, W, torch.float64, seed=0)
    w, b = make_conv(C, V * U, torch.float64, seed=1)
    windows = sample_windows(N, H, W, 5, seed=2)
    coarse = conv1x1(f, w, b).reshape(N, V, U, H, W)[windows[:, 0], :, :, windows[:, 1], windows[:, 2]]
    out = ops.gather_natural_windows(f, w[:, :, None, None], b, windows, V, U)  # conv weight layout
    assert_close_rel(out, coarse, torch.float64)
    up = ops.upscale_natural_windows(f, w, b, windows, V, U, lam)
    ref = F.interpolate(coarse[:, None], scale_factor=lam, mode="bilinear", align_corners=False)[:, 0]
    assert_close_rel(up, ref, torch.float64)
    # no bias = zero bias
    assert_close_rel(ops.gather_natural_windows(f, w, None, windows, V, U),
                     ops.gather_natural_windows(f, w, torch.zeros_like(b), windows, V, U), torch.float64)


# ------------------------------------------------------------------------------------------------
# End to end through TensorMaskHead (all five mask heads)
# ------------------------------------------------------------------------------------------------

HEAD_VARIANTS = [
    ("bipyramid", 1, "bilinear", (3, 4)),
    ("simple_natural", 1, "bilinear", (3, 4)),
    ("simple_aligned", 1, "bilinear", (3, 4)),
    ("upscale_natural", 3, "bilinear", (6, 9)),
    ("upscale_aligned", 3, "bilinear", (6, 9)),
    ("upscale_aligned", 2, "nearest", (4, 6)),
]


@pytest.mark.parametrize("mask_head,lam,interpolation,window_sizes", HEAD_VARIANTS)
def test_head_windows_match_head_forward(mask_head, lam, interpolation, window_sizes):
    torch.manual_seed(0)
    cfg = HeadConfig(num_classes=2, num_convs=1, cls_channels=4, bbox_channels=4, mask_channels=6, mask_head=mask_head,
                     upscale_lambda=lam, interpolation=interpolation, window_sizes=window_sizes)
    head = TensorMaskHead(cfg, in_channels=5, num_levels=6).double().eval()
    for p in head.parameters():  # detectron2's init is too small to see anything: random weights
        torch.nn.init.normal_(p, std=0.3)
    g = torch.Generator().manual_seed(1)
    # FPN levels of a 96×128 image: P2 24×32 ... P7 1×1 (H_k = ⌈H_(k−1)/2⌉)
    sizes = [(24, 32)]
    for _ in range(5):
        sizes.append(((sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2))
    feats = [torch.randn(2, 5, h, w, generator=g, dtype=torch.float64) for h, w in sizes]
    with torch.no_grad():
        dense = head(feats).mask_logits
        mask_feats = [head.mask_subnet(x) for x in feats]
        inputs = fuse_to_finest(mask_feats, head.mask_fuse) if mask_head == "bipyramid" else mask_feats
        for k in range(6):
            for a in range(len(window_sizes)):
                d = dense[k][a]
                windows = sample_windows(2, d.shape[-2], d.shape[-1], 3, seed=k * 10 + a)
                out = head.window_mask_logits(inputs, k, a, windows)
                assert out.shape[1:] == (head.output_size(k, a),) * 2
                assert_close_rel(out, gather(d, windows), torch.float64)


# ------------------------------------------------------------------------------------------------
# Edge cases, dtypes, threads, layouts
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_empty_windows(device):
    f = make_features(2, 4, 6, 7, torch.float32, seed=0, device=device)
    w, b = make_conv(4, 6, torch.float32, seed=0, device=device)
    out = ops.decode_windows(f, w, b, torch.zeros((0, 3), dtype=torch.int64, device=device), 2, 3, 4)
    assert out.shape == (0, 8, 12) and out.dtype == torch.float32 and out.device.type == device
    nat = ops.gather_natural_windows(f, w, b, torch.zeros((0, 3), dtype=torch.int64, device=device), 2, 3)
    assert nat.shape == (0, 2, 3)


def test_zero_channels_gives_bias():
    f = torch.zeros(1, 0, 5, 5)
    b = torch.arange(9, dtype=torch.float32)
    windows = torch.tensor([[0, 2, 2]])
    out = ops.decode_windows(f, torch.zeros(9, 0), b, windows, 3, 3, 1, pad_val=0.0)
    torch.testing.assert_close(out[0], b.reshape(3, 3))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_reduced_precision(dtype):
    N, C, H, W, V, lam = 1, 16, 12, 12, 3, 2
    f = make_features(N, C, H, W, dtype, seed=0)
    w, b = make_conv(C, V * V, dtype, seed=1)
    windows = sample_windows(N, 6, 6, 6, seed=0)
    out = ops.decode_windows(f, w, b, windows, V, V, lam)
    ref = ops.decode_windows(f.double(), w.double(), b.double(), windows, V, V, lam)
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), ref, atol=0.05, rtol=0.02)


def test_thread_count_and_layout_do_not_change_results():
    N, C, H, W, V, lam = 2, 9, 20, 17, 3, 4
    f = make_features(N, C, H, W, torch.float32, seed=3)
    w, b = make_conv(C, V * V, torch.float32, seed=4)
    windows = sample_windows(N, 5, 5, 30, seed=5)
    with num_threads(1):
        one = ops.decode_windows(f, w, b, windows, V, V, lam)
    with num_threads(2):
        two = ops.decode_windows(f, w, b, windows, V, V, lam)
    assert torch.equal(one, two)
    cl = ops.decode_windows(f.to(memory_format=torch.channels_last), w.t().contiguous().t(), b, windows.t().contiguous().t(), V, V, lam)
    assert torch.equal(one, cl)


def test_opcheck():
    for dtype, (V, U, lam, sub, mode) in [
        (torch.float32, (3, 3, 4, True, "bilinear")),
        (torch.float64, (2, 3, 3, False, "nearest")),
        (torch.float32, (5, 5, 1, True, "bilinear")),
    ]:
        f = make_features(2, 6, 9, 11, dtype, seed=0)
        w, b = make_conv(6, V * U, dtype, seed=1)
        Ho, Wo = ((9 + lam - 1) // lam, (11 + lam - 1) // lam) if sub else (9, 11)
        windows = sample_windows(2, Ho, Wo, 4, seed=2)
        torch.library.opcheck(torch.ops.tensormask.decode_windows.default, (f, w, b, windows, V, U, lam, sub, mode, -6.0))
    torch.library.opcheck(
        torch.ops.tensormask.decode_windows.default,
        (f, w, b, torch.zeros((0, 3), dtype=torch.int64), V, U, lam, True, "bilinear", -6.0),
    )


def test_compile_with_fake_kernel():
    f = make_features(1, 4, 8, 8, torch.float32, seed=0)
    w, b = make_conv(4, 9, torch.float32, seed=1)
    windows = sample_windows(1, 4, 4, 3, seed=2)
    fn = torch.compile(lambda *a: ops.decode_windows(*a, 3, 3, 2) * 2, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(fn(f, w, b, windows), 2 * ops.decode_windows(f, w, b, windows, 3, 3, 2))


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------


def _args(**kw):
    f = make_features(2, 4, 8, 10, torch.float32, seed=0)
    w, b = make_conv(4, 6, torch.float32, seed=0)
    a = dict(features=f, weight=w, bias=b, windows=torch.tensor([[0, 1, 2], [1, 3, 4]]), V=2, U=3, lam=2)
    a.update(kw)
    return a


def _call(**kw):
    a = _args(**kw)
    extra = {k: a.pop(k) for k in ("subsample", "mode", "pad_val") if k in a}
    return torch.ops.tensormask.decode_windows(
        a["features"], a["weight"], a["bias"], a["windows"], a["V"], a["U"], a["lam"], **extra
    )


@pytest.mark.parametrize(
    "kw,exc,match",
    [
        (dict(features=torch.zeros(4, 8, 10)), ValueError, "`features` must be a 4D"),
        (dict(features=torch.zeros(2, 4, 8, 10, dtype=torch.int32)), TypeError, "`features` must be a floating"),
        (dict(weight=torch.zeros(6, 4, 1, 1)), ValueError, "`weight` must be a 2D"),
        (dict(weight=torch.zeros(7, 4)), ValueError, "`weight` must have V·U = 2·3 = 6 rows, got 7"),
        (dict(weight=torch.zeros(6, 5)), ValueError, "`weight` must have C = 4 columns"),
        (dict(weight=torch.zeros(6, 4, dtype=torch.float64)), TypeError, "`weight` must have the dtype"),
        (dict(bias=torch.zeros(5)), ValueError, "`bias` must have V·U = 6 elements"),
        (dict(bias=torch.zeros(6, 1)), ValueError, "`bias` must be a 1D"),
        (dict(windows=torch.zeros(3, 2, dtype=torch.int64)), ValueError, "`windows` must be a 2D tensor \\(P, 3\\)"),
        (dict(windows=torch.zeros(3, 3, dtype=torch.int32)), TypeError, "`windows` must be an int64"),
        (dict(windows=torch.tensor([[0, 0, 0], [2, 0, 0]])), ValueError, "`windows` row 1 = \\(2, 0, 0\\) is out of range"),
        (dict(windows=torch.tensor([[0, 4, 0]])), ValueError, "`windows` row 0 = \\(0, 4, 0\\) is out of range.*0 <= y < 4"),
        (dict(windows=torch.tensor([[0, 0, 0], [0, 0, 0], [0, 0, -1]])), ValueError, "`windows` row 2"),
        (dict(windows=torch.tensor([[0, 7, 9]]), subsample=False), None, None),  # up_align2nat grid is H × W
        (dict(windows=torch.tensor([[0, 8, 0]]), subsample=False), ValueError, "`windows` row 0"),
        (dict(lam=0), ValueError, "`lam` must be a positive integer"),
        (dict(V=0, weight=torch.zeros(0, 4), bias=torch.zeros(0)), ValueError, "`V` must be a positive"),
        (dict(mode="bicubic"), ValueError, "`mode` must be"),
    ],
)
def test_errors(kw, exc, match):
    if exc is None:
        _call(**kw)
        return
    with pytest.raises(exc, match=match):
        _call(**kw)


def test_errors_of_the_helpers():
    a = _args()
    with pytest.raises(ValueError, match="`windows` row 1"):
        ops.gather_natural_windows(a["features"], a["weight"], a["bias"], torch.tensor([[0, 0, 0], [0, 8, 0]]), 2, 3)
    with pytest.raises(ValueError, match="`weight` must be"):
        ops.gather_natural_windows(a["features"], a["weight"], a["bias"], a["windows"], 3, 3)
    with pytest.raises(ValueError, match="1×1 conv weight"):
        ops.decode_windows(a["features"], torch.zeros(6, 4, 3, 3), a["bias"], a["windows"], 2, 3, 2)


# ------------------------------------------------------------------------------------------------
# Backward (training's mask loss at the positive windows)
# ------------------------------------------------------------------------------------------------

GRAD_CASES = [  # V, U, lam, subsample, mode
    (3, 3, 1, True, "bilinear"),
    (2, 2, 1, True, "bilinear"),  # even V at λ = 1: two spatial taps
    (3, 2, 2, True, "bilinear"),
    (2, 3, 4, True, "bilinear"),
    (3, 3, 2, True, "nearest"),
    (2, 2, 3, False, "bilinear"),  # up_align2nat geometry (upscale_aligned)
    (3, 2, 2, False, "nearest"),
]


def _grad_inputs(V, U, lam, subsample, dtype=torch.float64, count=6, seed=0, N=3, C=3, H=7, W=6):
    f = make_features(N, C, H, W, dtype, seed=seed).requires_grad_()
    w, b = make_conv(C, V * U, dtype, seed=seed + 1)
    Ho, Wo = ((H + lam - 1) // lam, (W + lam - 1) // lam) if subsample else (H, W)
    windows = sample_windows(N - 1, Ho, Wo, count, seed=seed + 2)  # image N − 1 has no window
    windows = torch.cat([windows, windows[:2]])  # a window listed twice
    return f, w.requires_grad_(), b.requires_grad_(), windows


@pytest.mark.parametrize("V,U,lam,subsample,mode", GRAD_CASES)
def test_gradcheck(V, U, lam, subsample, mode):
    """Against finite differences of the forward (itself tested against the dense reference above)."""
    f, w, b, windows = _grad_inputs(V, U, lam, subsample)
    fn = lambda f, w, b: ops.decode_windows(f, w, b, windows, V, U, lam, subsample, mode, -2.5)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (f, w, b))


@pytest.mark.parametrize("V,U,lam,subsample,mode", GRAD_CASES)
def test_gradients_equal_the_dense_path(V, U, lam, subsample, mode):
    """float32 at a bipyramid-like size: the gradients of conv1x1 + swap/up_align2nat, gathered."""
    f, w, b, windows = _grad_inputs(V, U, lam, subsample, torch.float32, count=40, N=3, C=16, H=21, W=26)
    out = ops.decode_windows(f, w, b, windows, V, U, lam, subsample, mode)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(5))
    sparse = torch.autograd.grad(out, (f, w, b), g)
    aligned = conv1x1(f, w, b).reshape(f.shape[0], V, U, *f.shape[-2:])
    dense_op = ops.swap_align2nat if subsample else ops.up_align2nat
    dense = torch.autograd.grad(gather(dense_op(aligned, lam, mode, -6.0), windows), (f, w, b), g)
    for got, ref in zip(sparse, dense):
        assert got.shape == ref.shape and got.dtype == ref.dtype
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_gradients_are_deterministic_whatever_the_threads():
    f, w, b, windows = _grad_inputs(3, 3, 2, True, torch.float32, count=60, N=4, C=8, H=24, W=20)
    out = ops.decode_windows(f, w, b, windows, 3, 3, 2)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    grads = []
    for threads in (1, 2, 3):
        with num_threads(threads):
            grads.append(torch.autograd.grad(out, (f, w, b), g, retain_graph=True))
    for other in grads[1:]:
        for x, y in zip(grads[0], other):
            assert torch.equal(x, y)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_gradients_in_half_precision(dtype):
    """bf16 / fp16 inputs (autocast training): gradients in the input dtype, accumulated in float."""
    f, w, b, windows = _grad_inputs(3, 3, 2, True, torch.float32, count=20, N=2, C=8, H=12, W=10)
    out = ops.decode_windows(f, w, b, windows, 3, 3, 2)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    ref = torch.autograd.grad(out, (f, w, b), g)
    fh, wh, bh = (t.detach().to(dtype).requires_grad_() for t in (f, w, b))
    got = torch.autograd.grad(ops.decode_windows(fh, wh, bh, windows, 3, 3, 2), (fh, wh, bh), g.to(dtype))
    for x, y in zip(got, ref):
        assert x.dtype == dtype
        torch.testing.assert_close(x.float(), y, rtol=0.05, atol=0.05 * y.abs().max().item())


def test_no_windows_gives_zero_gradients():
    f, w, b, _ = _grad_inputs(3, 3, 2, True)
    out = ops.decode_windows(f, w, b, torch.zeros(0, 3, dtype=torch.int64), 3, 3, 2)
    assert out.shape == (0, 6, 6)
    for grad in torch.autograd.grad(out.sum(), (f, w, b), allow_unused=True):
        assert grad is None or not grad.any()


def test_only_the_needed_gradients():
    """The 4D conv weight (the head passes its conv's parameters) and inputs that need no grad."""
    f, w, b, windows = _grad_inputs(3, 3, 2, True)
    f = f.detach()
    w4 = w.detach().reshape(9, 3, 1, 1).requires_grad_()
    out = ops.decode_windows(f, w4, None, windows, 3, 3, 2)
    (gw,) = torch.autograd.grad(out.sum(), (w4,))
    assert gw.shape == (9, 3, 1, 1)
    with torch.no_grad():
        assert not ops.decode_windows(f, w4, b, windows, 3, 3, 2).requires_grad


def test_double_backward_raises():
    f, w, b, windows = _grad_inputs(3, 3, 2, True)
    out = ops.decode_windows(f, w, b, windows, 3, 3, 2)
    with pytest.raises(RuntimeError, match="double backward .* is not supported"):
        torch.autograd.grad(out.sum(), (f,), create_graph=True)
    torch.autograd.grad(out.sum(), (f,))  # a plain backward works


@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(requires_grad):
    """Schema, fake kernels (forward and backward) and autograd registration (torch.library.opcheck)."""
    a = _args()
    f, w, b = (a[k].double().requires_grad_(requires_grad) for k in ("features", "weight", "bias"))
    torch.library.opcheck(torch.ops.tensormask.decode_windows.default, (f, w, b, a["windows"], 2, 3, 2, True, "bilinear", -6.0))


def test_backward_errors():
    a = _args()
    grad = torch.zeros(2, 4, 6)
    backward = torch.ops.tensormask.decode_windows_backward
    with pytest.raises(ValueError, match="`grad` must have the output's shape \\(P, λV, λU\\) = \\(2, 4, 6\\)"):
        backward(torch.zeros(2, 4, 5), a["features"], a["weight"], a["windows"], 2, 3, 2, True, "bilinear")
    with pytest.raises(TypeError, match="`grad` must have the dtype"):
        backward(grad.double(), a["features"], a["weight"], a["windows"], 2, 3, 2, True, "bilinear")
    with pytest.raises(ValueError, match="`weight` must have V·U"):
        backward(grad, a["features"], torch.zeros(7, 4), a["windows"], 2, 3, 2, True, "bilinear")
    with pytest.raises(ValueError, match="`windows` row 1"):
        backward(grad, a["features"], a["weight"], torch.tensor([[0, 1, 2], [2, 0, 0]]), 2, 3, 2, True, "bilinear")
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        fake = _args()
        gf, gw, gb = backward(torch.zeros(2, 4, 6), fake["features"], fake["weight"], fake["windows"], 2, 3, 2, True, "bilinear")
        assert gf.shape == (2, 4, 8, 10) and gw.shape == (6, 4) and gb.shape == (6,)
        with pytest.raises(ValueError, match="`grad` must have the output's shape"):
            backward(torch.zeros(3, 4, 6), fake["features"], fake["weight"], fake["windows"], 2, 3, 2, True, "bilinear")


def test_fake_kernel_errors():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        a = _args()
        out = _call()
        assert out.shape == (2, 4, 6)
        with pytest.raises(ValueError, match="`weight` must have V·U"):
            _call(weight=torch.zeros(7, 4))
        with pytest.raises(TypeError, match="`windows` must be an int64"):
            _call(windows=torch.zeros(3, 3, dtype=torch.int32))
    del a


@requires_cuda
def test_device_mismatch():
    a = _args()
    with pytest.raises(ValueError, match="`windows` is on cpu but `features` is on cuda"):
        ops.decode_windows(a["features"].cuda(), a["weight"].cuda(), a["bias"].cuda(), a["windows"], 2, 3, 2)
    with pytest.raises(ValueError, match="`weight` is on cpu"):
        ops.decode_windows(a["features"].cuda(), a["weight"], a["bias"].cuda(), a["windows"].cuda(), 2, 3, 2)


# ------------------------------------------------------------------------------------------------
# CUDA vs CPU
# ------------------------------------------------------------------------------------------------


@requires_cuda
@pytest.mark.parametrize("V,U,lam,subsample,mode", GRAD_CASES)
def test_cuda_gradients_match_cpu(V, U, lam, subsample, mode):
    f, w, b, windows = _grad_inputs(V, U, lam, subsample, torch.float64, count=30, N=3, C=8, H=19, W=23)
    g = torch.randn(windows.shape[0], lam * V, lam * U, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    cpu = torch.autograd.grad(ops.decode_windows(f, w, b, windows, V, U, lam, subsample, mode), (f, w, b), g)
    fc, wc, bc = (t.detach().cuda().requires_grad_() for t in (f, w, b))
    out = ops.decode_windows(fc, wc, bc, windows.cuda(), V, U, lam, subsample, mode)
    gpu = torch.autograd.grad(out, (fc, wc, bc), g.cuda())
    for x, y in zip(gpu, cpu):
        assert x.device.type == "cuda"
        torch.testing.assert_close(x.cpu(), y, rtol=1e-10, atol=1e-10)


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    "V,U,lam,subsample,mode",
    [(3, 3, 1, True, "bilinear"), (3, 4, 4, True, "bilinear"), (5, 5, 32, True, "bilinear"),
     (3, 3, 5, False, "nearest"), (2, 3, 3, False, "bilinear")],
)
def test_cuda_matches_cpu(dtype, V, U, lam, subsample, mode):
    N, C, H, W = 2, 24, 41, 53
    f = make_features(N, C, H, W, dtype, seed=lam)
    w, b = make_conv(C, V * U, dtype, seed=V)
    Ho, Wo = ((H + lam - 1) // lam, (W + lam - 1) // lam) if subsample else (H, W)
    windows = sample_windows(N, Ho, Wo, 40, seed=lam)
    cpu = ops.decode_windows(f, w, b, windows, V, U, lam, subsample, mode)
    gpu = ops.decode_windows(f.cuda(), w.cuda(), b.cuda(), windows.cuda(), V, U, lam, subsample, mode)
    assert gpu.device.type == "cuda" and gpu.dtype == dtype
    if dtype in TOL:
        assert_close_rel(gpu, cpu, dtype)
    else:
        torch.testing.assert_close(gpu.cpu().double(), cpu.double(), atol=0.05, rtol=0.02)
    nat = ops.gather_natural_windows(f.cuda(), w.cuda(), b.cuda(), windows.cuda() % torch.tensor([N, Ho, Wo]).cuda(), V, U)
    assert nat.device.type == "cuda"


@requires_cuda
def test_cuda_large_workspace_is_chunked():
    """Many big windows (λ = 32): the tap table is processed in chunks of windows."""
    N, C, H, W, V, lam = 1, 8, 160, 160, 15, 32
    f = make_features(N, C, H, W, torch.float32, seed=0)
    w, b = make_conv(C, V * V, torch.float32, seed=1)
    windows = sample_windows(N, 5, 5, 60, seed=2)
    cpu = ops.decode_windows(f, w, b, windows, V, V, lam)
    gpu = ops.decode_windows(f.cuda(), w.cuda(), b.cuda(), windows.cuda(), V, V, lam)
    assert_close_rel(gpu, cpu, torch.float32)
