"""Tests of the class/box heads, the mask trunk and the four baseline mask heads (Fig. 6)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tensormask.config import HeadConfig
from tensormask.modeling.heads import (
    HeadOutputs,
    TensorMaskHead,
    WindowGeometry,
    baseline_mask_logits,
    permute_to_N_HWA_K,
    upscale_natural,
)

_spec = importlib.util.spec_from_file_location("ops_reference", Path(__file__).parents[1] / "ops" / "reference.py")
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

NUM_LEVELS = 6
STRIDES = [4 * 2**k for k in range(NUM_LEVELS)]
IN_CHANNELS = 16
K = 3


def small_cfg(**kw) -> HeadConfig:
    base = dict(num_classes=K, num_convs=2, cls_channels=8, bbox_channels=8, mask_channels=8)
    base.update(kw)
    return HeadConfig(**base)


def pyramid(n=1, size=128, channels=IN_CHANNELS, seed=0, dtype=torch.float32):
    """FPN-like maps P2..P7 of a size×size image: (n, channels, size/4/2^k, size/4/2^k)."""
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(n, channels, size // s, size // s, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
        for s in STRIDES
    ]


# (mask_head, upscale_lambda, interpolation, window_sizes)
VARIANTS = [
    ("simple_natural", 1, "bilinear", (11, 15)),
    ("simple_aligned", 1, "bilinear", (11, 15)),
    ("upscale_natural", 1, "bilinear", (11, 15)),
    ("upscale_natural", 3, "bilinear", (9, 15)),
    ("upscale_natural", 5, "bilinear", (15,)),
    ("upscale_aligned", 3, "bilinear", (9, 15)),
    ("upscale_aligned", 3, "nearest", (9, 15)),
    ("upscale_aligned", 5, "bilinear", (15,)),
    ("upscale_aligned", 5, "nearest", (15,)),
    ("bipyramid", 1, "bilinear", (11, 15)),
]


@pytest.mark.parametrize("mask_head,lam,interp,sizes", VARIANTS)
def test_forward_backward_shapes(mask_head, lam, interp, sizes):
    torch.manual_seed(0)
    head = TensorMaskHead(
        small_cfg(mask_head=mask_head, upscale_lambda=lam, interpolation=interp, window_sizes=sizes),
        IN_CHANNELS,
        NUM_LEVELS,
    )
    feats = pyramid()
    out = head(feats)
    assert isinstance(out, HeadOutputs)
    A = len(sizes)
    geom = head.window_geometry(STRIDES)
    assert len(out.cls_logits) == len(out.box_deltas) == len(out.mask_logits) == NUM_LEVELS
    for k, f in enumerate(feats):
        h, w = f.shape[-2:]
        assert out.cls_logits[k].shape == (1, A * K, h, w)
        assert out.box_deltas[k].shape == (1, A * 4, h, w)
        assert len(out.mask_logits[k]) == A
        for a, v0 in enumerate(sizes):
            v = v0 * 2**k if mask_head == "bipyramid" else v0
            assert out.mask_logits[k][a].shape == (1, v, v, h, w)
            assert head.output_size(k, a) == v
            assert geom[k][a].size == v
            assert geom[k][a].side_px == v0 * STRIDES[k]
            assert geom[k][a].side_px == geom[k][a].size * geom[k][a].sigma_vu_px

    # Backward with random output weights: every parameter and every input level gets a finite gradient.
    g = torch.Generator().manual_seed(1)
    tensors = out.cls_logits + out.box_deltas + [m for row in out.mask_logits for m in row]
    loss = sum((t * torch.randn(t.shape, generator=g)).sum() for t in tensors)
    loss.backward()
    for name, p in head.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    for conv in ["mask_subnet.0.weight"] + [f"mask_pred_{v:02d}.weight" for v in sizes]:
        assert head.get_parameter(conv).grad.abs().sum() > 0, conv
    for f in feats:
        assert f.grad is not None and f.grad.abs().sum() > 0


def test_box_head_free():
    head = TensorMaskHead(small_cfg(box_head=False), IN_CHANNELS, NUM_LEVELS)
    assert head.bbox_pred is None and head.bbox_subnet is None
    assert not any(n.startswith("bbox") for n, _ in head.named_parameters())
    out = head(pyramid())
    assert out.box_deltas is None
    loss = sum(x.sum() for x in out.cls_logits) + sum(m.sum() for row in out.mask_logits for m in row)
    loss.backward()
    assert all(p.grad is not None for p in head.parameters())


def _d2_names(num_convs, sizes, box=True, fuse=True):
    names = []
    for sub, pred, on in [("cls_subnet", "cls_score", True), ("bbox_subnet", "bbox_pred", box)]:
        if on:
            names += [f"{sub}.{2 * i}.{p}" for i in range(num_convs) for p in ("weight", "bias")]
            names += [f"{pred}.weight", f"{pred}.bias"]
    names += [f"mask_subnet.{2 * i}.{p}" for i in range(num_convs) for p in ("weight", "bias")]
    names += [f"mask_pred_{v:02d}.{p}" for v in sizes for p in ("weight", "bias")]
    if fuse:
        names += ["mask_fuse.0.weight", "mask_fuse.0.bias"]
    return names


@pytest.mark.parametrize("mask_head", ["bipyramid", "simple_aligned"])
@pytest.mark.parametrize("box", [True, False])
def test_parameter_names_match_detectron2(mask_head, box):
    cfg = small_cfg(num_convs=4, mask_head=mask_head, box_head=box, window_sizes=(11, 15))
    head = TensorMaskHead(cfg, IN_CHANNELS, NUM_LEVELS)
    expected = _d2_names(4, (11, 15), box=box, fuse=mask_head == "bipyramid")
    assert [n for n, _ in head.named_parameters()] == expected
    sd = head.state_dict()
    assert sd["cls_score.weight"].shape == (2 * K, 8, 3, 3)
    assert sd["mask_pred_11.weight"].shape == (121, 8, 1, 1)
    assert sd["mask_pred_15.weight"].shape == (225, 8, 1, 1)
    assert sd["mask_subnet.0.weight"].shape == (8, IN_CHANNELS, 3, 3)
    if mask_head == "bipyramid":
        assert sd["mask_fuse.0.weight"].shape == (8, 8, 3, 3)
    # Sequentials: Conv2d at even, ReLU at odd indices.
    assert isinstance(head.cls_subnet[0], torch.nn.Conv2d) and isinstance(head.cls_subnet[1], torch.nn.ReLU)


def _numpy_tower(x, convs, groups, eps=1e-5):
    """Reference for a GN tower: per conv, the 3×3 conv as a sum over taps, GroupNorm from its formula
    (mean and biased variance over each group's channels and pixels, then γ·x̂ + β), ReLU."""
    x = x.astype(np.float64)
    for w, b, gamma, beta in convs:
        n, c, h, wd = x.shape
        pad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        y = np.zeros((n, w.shape[0], h, wd)) + b[None, :, None, None]
        for dy in range(3):
            for dx in range(3):
                y += np.einsum("oc,nchw->nohw", w[:, :, dy, dx], pad[:, :, dy:dy + h, dx:dx + wd])
        g = y.reshape(n, groups, -1)
        g = (g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + eps)
        y = g.reshape(y.shape) * gamma[None, :, None, None] + beta[None, :, None, None]
        x = np.maximum(y, 0.0)
    return x


def test_group_norm_towers_names_and_values():
    torch.manual_seed(0)
    head = TensorMaskHead(small_cfg(num_convs=2, norm="GN", gn_groups=4), IN_CHANNELS, NUM_LEVELS)
    names = [n for n, _ in head.named_parameters() if n.startswith("mask_subnet.")]
    assert names == ["mask_subnet.0.weight", "mask_subnet.0.bias", "mask_subnet.1.weight", "mask_subnet.1.bias",
                     "mask_subnet.3.weight", "mask_subnet.3.bias", "mask_subnet.4.weight", "mask_subnet.4.bias"]
    assert isinstance(head.cls_subnet[1], torch.nn.GroupNorm) and head.cls_subnet[1].num_groups == 4
    with torch.no_grad():  # non-trivial affine parameters
        for i in (1, 4):
            head.mask_subnet[i].weight.uniform_(0.5, 1.5)
            head.mask_subnet[i].bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, IN_CHANNELS, 6, 5)
    layers = [(head.mask_subnet[i].weight, head.mask_subnet[i].bias, head.mask_subnet[i + 1].weight,
               head.mask_subnet[i + 1].bias) for i in (0, 3)]
    expected = _numpy_tower(x.numpy(), [tuple(t.detach().numpy().astype(np.float64) for t in ly) for ly in layers], 4)
    np.testing.assert_allclose(head.mask_subnet(x).detach().numpy(), expected, rtol=1e-4, atol=1e-5)


def test_default_config_parameter_shapes():
    """Paper/detectron2 defaults: 256-ch class branch, 128-ch box and mask branches, 2 window sizes."""
    head = TensorMaskHead(HeadConfig(), 256, NUM_LEVELS)
    sd = head.state_dict()
    assert sd["cls_score.weight"].shape == (2 * 80, 256, 3, 3)
    assert sd["bbox_pred.weight"].shape == (2 * 4, 128, 3, 3)
    assert sd["mask_subnet.6.weight"].shape == (128, 128, 3, 3)
    assert sd["mask_fuse.0.weight"].shape == (128, 128, 3, 3)
    assert set(_d2_names(4, (11, 15))) == set(sd)


def test_upscale_head_conv_channels():
    head = TensorMaskHead(small_cfg(mask_head="upscale_aligned", upscale_lambda=3, window_sizes=(9, 15)), 16, 6)
    assert head.mask_pred_09.out_channels == 9 and head.mask_pred_15.out_channels == 25


def test_initialisation():
    torch.manual_seed(0)
    head = TensorMaskHead(small_cfg(cls_channels=64, prior_prob=0.01), IN_CHANNELS, NUM_LEVELS)
    assert torch.allclose(head.cls_score.bias, torch.full_like(head.cls_score.bias, -math.log(99.0)))
    for name, p in head.named_parameters():
        if name.endswith("bias") and name != "cls_score.bias":
            assert (p == 0).all(), name
    w = head.cls_subnet[2].weight
    assert abs(w.std().item() - 0.01) < 1e-3 and abs(w.mean().item()) < 1e-3
    # At initialisation every class probability is ≈ prior_prob.
    out = head(pyramid())
    assert torch.allclose(torch.sigmoid(out.cls_logits[0]), torch.tensor(0.01), atol=1e-3)


def test_window_size_major_channel_order():
    """Channel a·K + k of the class logits is class k of window size a; flattening puts it in row
    (y·W + x)·A + a, column k (detectron2's permute_to_N_HWA_K)."""
    sizes = (11, 15)
    head = TensorMaskHead(small_cfg(window_sizes=sizes), IN_CHANNELS, NUM_LEVELS)
    A = len(sizes)
    with torch.no_grad():
        head.cls_score.weight.zero_()
        head.cls_score.bias.copy_(torch.arange(A * K, dtype=torch.float32))
        head.bbox_pred.weight.zero_()
        head.bbox_pred.bias.copy_(100 + torch.arange(A * 4, dtype=torch.float32))
        out = head(pyramid())
    h, w = out.cls_logits[1].shape[-2:]
    flat = permute_to_N_HWA_K(out.cls_logits[1], K)
    flat_box = permute_to_N_HWA_K(out.box_deltas[1], 4)
    assert flat.shape == (1, h * w * A, K)
    for y, x, a in [(0, 0, 0), (3, 5, 1), (h - 1, w - 1, 1)]:
        r = (y * w + x) * A + a
        assert flat[0, r].tolist() == [a * K + c for c in range(K)]
        assert flat_box[0, r].tolist() == [100 + a * 4 + j for j in range(4)]


def test_permute_to_n_hwa_k_against_loops():
    x = torch.randn(2, 3 * 4, 5, 6)
    y = permute_to_N_HWA_K(x, 4)
    for n in range(2):
        for yy in range(5):
            for xx in range(6):
                for a in range(3):
                    assert torch.equal(y[n, (yy * 6 + xx) * 3 + a], x[n, a * 4 : (a + 1) * 4, yy, xx])


# ------------------------------------------------------------------------------------------------
# The mask-head transforms against independent formulas
# ------------------------------------------------------------------------------------------------


def _bilinear_1d(n_in: int, lam: int) -> np.ndarray:
    """(λ·n_in, n_in) interpolation matrix of F.interpolate(bilinear, align_corners=False)."""
    m = np.zeros((lam * n_in, n_in))
    for i in range(lam * n_in):
        s = max((i + 0.5) / lam - 0.5, 0.0)
        i0 = min(int(math.floor(s)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        f = s - i0
        m[i, i0] += 1 - f
        m[i, i1] += f
    return m


@pytest.mark.parametrize("lam", [1, 2, 3, 5])
def test_upscale_natural_against_formula(lam):
    x = torch.randn(2, 3, 2, 4, 5, dtype=torch.float64)
    out = upscale_natural(x, lam)
    assert out.shape == (2, 3 * lam, 2 * lam, 4, 5)
    mv, mu = _bilinear_1d(3, lam), _bilinear_1d(2, lam)
    expected = np.einsum("iv,ju,nvuyx->nijyx", mv, mu, x.numpy())
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-12)


def test_simple_natural_is_reshape():
    c = torch.randn(2, 9, 4, 5)
    out = baseline_mask_logits(c, "simple_natural", 3)
    for v in range(3):
        for u in range(3):
            assert torch.equal(out[:, v, u], c[:, v * 3 + u])


@pytest.mark.parametrize("size", [3, 5])
def test_simple_aligned_is_align2nat(size):
    """For odd V the simple aligned head is align2nat with α = 1 (eq. 1), pad_val outside."""
    c = torch.randn(1, size * size, 6, 7, dtype=torch.float64)
    out = baseline_mask_logits(c, "simple_aligned", size, pad_val=-6.0)
    expected = ref.align2nat_ref(c.reshape(1, size, size, 6, 7), 1, -6.0)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_upscale_aligned_is_up_align2nat(mode):
    c = torch.randn(1, 9, 6, 7, dtype=torch.float64)
    out = baseline_mask_logits(c, "upscale_aligned", 9, lam=3, interpolation=mode, pad_val=-6.0)
    assert out.shape == (1, 9, 9, 6, 7)
    expected = ref.up_align2nat_ref(c.reshape(1, 3, 3, 6, 7), 3, mode, -6.0)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-10)


@pytest.mark.parametrize(
    "mask_head,lam,interp",
    [("simple_natural", 1, "bilinear"), ("upscale_natural", 3, "bilinear"), ("upscale_aligned", 3, "nearest")],
)
def test_head_wiring(mask_head, lam, interp):
    """The head applies trunk → mask_pred_XX → transform on every level."""
    head = TensorMaskHead(
        small_cfg(mask_head=mask_head, upscale_lambda=lam, interpolation=interp, window_sizes=(9,)), IN_CHANNELS, 3
    )
    feats = pyramid()[:3]
    with torch.no_grad():
        out = head(feats)
        for k, f in enumerate(feats):
            conv = head.mask_pred_09(head.mask_subnet(f))
            expected = baseline_mask_logits(conv, mask_head, 9, lam, interp, head.pad_val)
            torch.testing.assert_close(out.mask_logits[k][0], expected)
            torch.testing.assert_close(out.cls_logits[k], head.cls_score(head.cls_subnet(f)))
            torch.testing.assert_close(out.box_deltas[k], head.bbox_pred(head.bbox_subnet(f)))


@pytest.mark.parametrize("mask_head,lam", [("upscale_natural", 2), ("upscale_aligned", 3), ("simple_aligned", 1)])
def test_gradcheck_mask_branch(mask_head, lam):
    """float64 gradcheck of the mask logits w.r.t. the input features (tiny sizes)."""
    size = 3 if lam == 3 else 6
    cfg = small_cfg(num_convs=1, mask_channels=2, mask_head=mask_head, upscale_lambda=lam, window_sizes=(size,))
    head = TensorMaskHead(cfg, 2, 2).double()
    with torch.no_grad():
        for p in head.parameters():
            p.normal_()
    feats = [torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True),
             torch.randn(1, 2, 2, 2, dtype=torch.float64, requires_grad=True)]

    def f(*xs):
        out = head(list(xs))
        return tuple(m for row in out.mask_logits for m in row)

    assert torch.autograd.gradcheck(f, tuple(feats), fast_mode=True)


# ------------------------------------------------------------------------------------------------
# Configuration errors and geometry
# ------------------------------------------------------------------------------------------------


def test_lambda_must_divide_window_sizes():
    with pytest.raises(ValueError, match="upscale_lambda=5 does not divide window size 11"):
        TensorMaskHead(small_cfg(mask_head="upscale_aligned", upscale_lambda=5, window_sizes=(11, 15)), 16, 6)
    with pytest.raises(ValueError, match="upscale_lambda=3 does not divide window size 11"):
        TensorMaskHead(small_cfg(mask_head="upscale_natural", upscale_lambda=3, window_sizes=(15, 11)), 16, 6)
    with pytest.raises(ValueError, match="does not divide"):
        baseline_mask_logits(torch.zeros(1, 4, 2, 2), "upscale_aligned", 11, lam=2)
    # λ is irrelevant (and ignored) for the other heads.
    for head in ("simple_natural", "simple_aligned", "bipyramid"):
        TensorMaskHead(small_cfg(mask_head=head, upscale_lambda=5, window_sizes=(11, 15)), 16, 6)


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(mask_head="fancy"), "unknown mask_head"),
        (dict(interpolation="bicubic"), "interpolation"),
        (dict(window_sizes=(15, 15)), "distinct"),
        (dict(window_sizes=()), "positive integers"),
        (dict(mask_head="upscale_aligned", upscale_lambda=0), "positive integer"),
        (dict(prior_prob=0.0), "prior_prob"),
        (dict(norm="BN"), "model.head.norm must be one of none, GN"),
        (dict(norm="GN", gn_groups=3), "gn_groups=3 must divide the tower channels"),
    ],
)
def test_config_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        TensorMaskHead(small_cfg(**kw), 16, 6)


def test_wrong_number_of_levels():
    head = TensorMaskHead(small_cfg(), IN_CHANNELS, NUM_LEVELS)
    with pytest.raises(ValueError, match="expected 6 feature maps"):
        head(pyramid()[:5])
    with pytest.raises(ValueError, match="expected 6 strides"):
        head.window_geometry(STRIDES[:5])


def test_window_geometry_baseline_vs_bipyramid():
    base = TensorMaskHead(small_cfg(mask_head="upscale_aligned", window_sizes=(11, 15)), 16, 6).window_geometry(STRIDES)
    bip = TensorMaskHead(small_cfg(mask_head="bipyramid", window_sizes=(11, 15)), 16, 6).window_geometry(STRIDES)
    for k in range(6):
        for a, v0 in enumerate((11, 15)):
            assert base[k][a] == WindowGeometry(v0 * STRIDES[k], STRIDES[k], v0)
            assert bip[k][a] == WindowGeometry(v0 * STRIDES[k], 4, v0 * 2**k)
    # detectron2's anchors: 44 and 60 px at P2, doubling per level; 480 mask px at P7 for V = 15.
    assert [g.side_px for g in bip[0]] == [44, 60] and bip[5][1].size == 480
    with pytest.raises(ValueError, match="s_0·2\\^k"):
        TensorMaskHead(small_cfg(), 16, 3).window_geometry([4, 8, 12])

