"""Tests of the tensor bipyramid mask head (§3.6, Fig. 7b, Fig. 8)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tensormask.config import HeadConfig
from tensormask.modeling.bipyramid import (
    bipyramid_mask_logits,
    build_mask_fuse,
    fuse_to_finest,
    upsample_to_finest,
)
from tensormask.modeling.heads import TensorMaskHead

_spec = importlib.util.spec_from_file_location("ops_reference", Path(__file__).parents[1] / "ops" / "reference.py")
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

STRIDES = [4 * 2**k for k in range(6)]


def cfg(**kw) -> HeadConfig:
    base = dict(num_classes=3, num_convs=2, cls_channels=8, bbox_channels=8, mask_channels=8, mask_head="bipyramid")
    base.update(kw)
    return HeadConfig(**base)


def level_sizes(h0: int, w0: int, num_levels: int):
    """FPN level sizes: H_k = ⌈H_(k−1)/2⌉ (stride-2 convs with padding 1 / ResNet strides)."""
    sizes = [(h0, w0)]
    for _ in range(num_levels - 1):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


def pyramid(sizes, channels=16, n=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, channels, h, w, generator=g).requires_grad_() for h, w in sizes]


def _bilinear_up_1d(n_in: int, f: int) -> np.ndarray:
    """(f·n_in, n_in) matrix of bilinear upsampling by f with align_corners=False."""
    m = np.zeros((f * n_in, n_in))
    for i in range(f * n_in):
        s = max((i + 0.5) / f - 0.5, 0.0)
        i0 = min(int(np.floor(s)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        m[i, i0] += 1 - (s - i0)
        m[i, i1] += s - i0
    return m


def test_upsample_to_finest_against_formula():
    """Fig. 8 (without the conv): up_{2^k}(P_k) cropped to P2's size, plus P2 — also for k = 0."""
    sizes = level_sizes(10, 13, 4)  # 10×13, 5×7, 3×4, 2×2: the upsampled maps exceed 10×13 and are cropped
    feats = [f.detach().double() for f in pyramid(sizes, channels=2)]
    out = upsample_to_finest(feats)
    assert len(out) == 4
    for k, (f, o) in enumerate(zip(feats, out)):
        assert o.shape == (1, 2, 10, 13)
        mh = _bilinear_up_1d(f.shape[-2], 2**k)[:10]
        mw = _bilinear_up_1d(f.shape[-1], 2**k)[:13]
        expected = np.einsum("iy,jx,ncyx->ncij", mh, mw, f.numpy()) + feats[0].numpy()
        np.testing.assert_allclose(o.numpy(), expected, atol=1e-12)
    torch.testing.assert_close(out[0], 2 * feats[0])


def test_upsample_matches_detectron2_scale_factor():
    """detectron2 calls F.interpolate(scale_factor=2^k); the explicit output size gives the same values."""
    feats = pyramid(level_sizes(16, 16, 5), channels=3)
    out = upsample_to_finest([f.detach() for f in feats])
    for k in range(1, 5):
        d2 = F.interpolate(feats[k].detach(), scale_factor=2.0**k, mode="bilinear", align_corners=False)
        torch.testing.assert_close(out[k], d2[:, :, :16, :16] + feats[0].detach())


def test_upsample_rejects_too_small_levels():
    with pytest.raises(ValueError, match="smaller than the finest level"):
        upsample_to_finest([torch.zeros(1, 1, 9, 9), torch.zeros(1, 1, 4, 4)])


def test_fuse_is_shared_conv_relu():
    fuse = build_mask_fuse(4)
    assert [n for n, _ in fuse.named_parameters()] == ["0.weight", "0.bias"]
    feats = [f.detach() for f in pyramid(level_sizes(8, 8, 3), channels=4)]
    out = fuse_to_finest(feats, fuse)
    for o, u in zip(out, upsample_to_finest(feats)):
        torch.testing.assert_close(o, torch.relu(F.conv2d(u, fuse[0].weight, fuse[0].bias, padding=1)))


@pytest.mark.parametrize("level", [0, 1, 2])
def test_bipyramid_mask_logits_is_swap_align2nat(level):
    """conv+reshape to the aligned (V, U, H_0, W_0) tensor, then swap_align2nat with λ = 2^k (eq. of
    Fig. 5, via the project's float64 reference)."""
    v = 3
    x = torch.randn(1, v * v, 8, 6, dtype=torch.float64)
    out = bipyramid_mask_logits(x, v, level, pad_val=-6.0)
    lam = 2**level
    assert out.shape == (1, lam * v, lam * v, -(-8 // lam), -(-6 // lam))
    expected = ref.swap_align2nat_ref(x.reshape(1, v, v, 8, 6), lam, "bilinear", -6.0)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-10)
    with pytest.raises(ValueError, match="channels"):
        bipyramid_mask_logits(x, 4, level)


def test_head_forward_backward_shapes():
    """6 levels of a 128×128 image; level k gives (N, 2^k V, 2^k U, H_k, W_k) for V ∈ {11, 15}."""
    sizes = [(128 // s, 128 // s) for s in STRIDES]
    head = TensorMaskHead(cfg(window_sizes=(11, 15)), 16, 6)
    feats = pyramid(sizes)
    out = head(feats)
    geom = head.window_geometry(STRIDES)
    for k, (h, w) in enumerate(sizes):
        for a, v0 in enumerate((11, 15)):
            v = v0 * 2**k
            assert out.mask_logits[k][a].shape == (1, v, v, h, w)
            assert (geom[k][a].size, geom[k][a].sigma_vu_px, geom[k][a].side_px) == (v, 4, v0 * STRIDES[k])
    # The total size of every level is the same: V·U·H·W (§3.6).
    assert len({m.numel() for row in out.mask_logits for m in row[1:]}) == 1
    loss = sum((m * torch.randn_like(m)).sum() for row in out.mask_logits for m in row)
    loss.backward()
    for name in ["mask_subnet.0.weight", "mask_subnet.2.weight", "mask_fuse.0.weight", "mask_pred_11.weight", "mask_pred_15.weight"]:
        grad = head.get_parameter(name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    for f in feats:  # every level feeds its own mask logits
        assert f.grad is not None and f.grad.abs().sum() > 0


def test_head_batch_is_per_image():
    sizes = level_sizes(8, 8, 3)
    head = TensorMaskHead(cfg(window_sizes=(3, 5)), 16, 3)
    feats = [f.detach() for f in pyramid(sizes, n=2)]
    with torch.no_grad():
        both = head(feats)
        for n in range(2):
            one = head([f[n : n + 1] for f in feats])
            for k in range(3):
                for a in range(2):
                    torch.testing.assert_close(both.mask_logits[k][a][n : n + 1], one.mask_logits[k][a])


def test_head_non_square_odd_sizes():
    """Sizes that do not halve evenly: ⌈H_0/2^k⌉ equals FPN's nested ⌈·/2⌉, so masks and classes align."""
    sizes = level_sizes(25, 38, 5)
    head = TensorMaskHead(cfg(window_sizes=(3,)), 16, 5)
    out = head(pyramid(sizes))
    for k, (h, w) in enumerate(sizes):
        assert out.cls_logits[k].shape[-2:] == (h, w)
        assert out.mask_logits[k][0].shape == (1, 3 * 2**k, 3 * 2**k, h, w)


def test_head_wiring_against_manual_computation():
    """trunk per level → upsample + P2 trunk → mask_fuse → mask_pred_XX → swap_align2nat(2^k)."""
    sizes = level_sizes(16, 16, 3)
    head = TensorMaskHead(cfg(window_sizes=(5, 7), mask_pad_val=-4.0), 16, 3)
    feats = pyramid(sizes)
    with torch.no_grad():
        out = head(feats)
        trunk = [head.mask_subnet(f) for f in feats]
        for k in range(3):
            up = trunk[k] if k == 0 else F.interpolate(trunk[k], scale_factor=2**k, mode="bilinear")[:, :, :16, :16]
            fused = head.mask_fuse(up + trunk[0])
            for a, v in enumerate((5, 7)):
                conv = getattr(head, f"mask_pred_{v:02d}")(fused)
                expected = bipyramid_mask_logits(conv, v, k, -4.0)
                torch.testing.assert_close(out.mask_logits[k][a], expected)


def test_gradcheck_bipyramid():
    """float64 gradcheck of the bipyramid mask logits w.r.t. all input levels (tiny sizes)."""
    head = TensorMaskHead(cfg(num_convs=1, mask_channels=2, window_sizes=(3,)), 2, 3).double()
    with torch.no_grad():
        for p in head.parameters():
            p.normal_()
    feats = tuple(torch.randn(1, 2, h, w, dtype=torch.float64, requires_grad=True) for h, w in level_sizes(6, 6, 3))

    def f(*xs):
        return tuple(row[0] for row in head(list(xs)).mask_logits)

    assert torch.autograd.gradcheck(f, feats, fast_mode=True)
