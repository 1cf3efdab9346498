"""RetinaNet-style FPN (P2–P7, average fusion): shapes, strides, names, numerics, gradients, freezing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from tensormask.config import BackboneConfig, FPNConfig
from tensormask.modeling.backbone import FrozenBatchNorm2d, ResNet
from tensormask.modeling.fpn import BackboneWithFPN, build_backbone_fpn


def tiny_fpn(norm: str = "FrozenBN", freeze_at: int = 0, **fpn_kw) -> BackboneWithFPN:
    return BackboneWithFPN(ResNet(0, norm=norm, freeze_at=freeze_at, gn_groups=8), out_channels=16, **fpn_kw)


def test_default_levels_shapes_and_strides():
    m = build_backbone_fpn(BackboneConfig(depth=0), FPNConfig(out_channels=32))
    assert m.strides == [4, 8, 16, 32, 64, 128]
    assert m.out_features == ["p2", "p3", "p4", "p5", "p6", "p7"]
    assert m.out_channels == 32 and m.size_divisibility == 32  # detectron2: the res5 stride
    out = m(torch.randn(2, 3, 128, 256))
    assert list(out) == m.out_features
    for name, stride in zip(m.out_features, m.strides):
        assert out[name].shape == (2, 32, 128 // stride, 256 // stride), name


def test_levels_above_p5_round_up_on_32_divisible_inputs():
    # 96×160 divides by 32 but not by 64/128: res5 is 3×5; the stride-2 3×3 convs (padding 1) give
    # P6 = ⌊(3 + 2 − 3) / 2⌋ + 1 = 2 by ⌊(5 + 2 − 3) / 2⌋ + 1 = 3, P7 = 1×2 (= ⌈96/64⌉, ⌈160/128⌉ …).
    m = tiny_fpn()
    out = m(torch.randn(1, 3, 96, 160))
    assert [tuple(v.shape[-2:]) for v in out.values()] == [(24, 40), (12, 20), (6, 10), (3, 5), (2, 3), (1, 2)]


def test_indivisible_input_raises():
    m = tiny_fpn()
    with pytest.raises(ValueError, match="size_divisibility=32"):
        m(torch.randn(1, 3, 128, 200))
    with pytest.raises(ValueError, match="not divisible"):
        m(torch.randn(1, 3, 80, 128))
    m = tiny_fpn(size_divisibility=128)  # still allowed (the old padding)
    with pytest.raises(ValueError, match="size_divisibility=128"):
        m(torch.randn(1, 3, 96, 128))


def test_parameter_names_mirror_detectron2():
    m = tiny_fpn()
    names = dict(m.named_parameters())
    for key in ["bottom_up.stem.conv1.weight", "bottom_up.res2.0.conv1.weight", "fpn_lateral2.weight",
                "fpn_lateral2.bias", "fpn_output5.weight", "fpn_output5.bias", "top_block.p6.weight",
                "top_block.p6.bias", "top_block.p7.weight", "top_block.p7.bias"]:
        assert key in names, key
    assert not any(k.startswith(("fpn_lateral6", "fpn_output6", "fpn_lateral1")) for k in names)
    assert names["fpn_lateral3.weight"].shape == (16, 32, 1, 1)  # tiny res3 has 32 channels
    assert names["fpn_output3.weight"].shape == (16, 16, 3, 3)
    assert names["top_block.p6.weight"].shape == (16, 128, 3, 3)  # P6 from C5 (RetinaNet), not P5
    assert names["top_block.p7.weight"].shape == (16, 16, 3, 3)


def test_c2_xavier_init():
    m = tiny_fpn()
    for name in ["fpn_lateral2", "fpn_output4", "top_block.p6", "top_block.p7"]:
        conv = m.get_submodule(name)
        fan_in = conv.weight[0].numel()
        assert conv.weight.abs().max() <= math.sqrt(3.0 / fan_in) + 1e-6  # kaiming_uniform_(a=1)
        assert torch.count_nonzero(conv.bias) == 0


def test_resnet50_fpn_channels():
    m = build_backbone_fpn(BackboneConfig(depth=50), FPNConfig())
    assert [m.get_submodule(f"fpn_lateral{k}").in_channels for k in range(2, 6)] == [256, 512, 1024, 2048]
    assert m.top_block.p6.in_channels == 2048
    assert m.get_submodule("fpn_output3").out_channels == 256
    assert m.bottom_up.res3[0].conv1.stride == (2, 2)  # msra default


def test_level_range_options():
    m = tiny_fpn(min_level=3)
    assert m.strides == [8, 16, 32, 64, 128] and not hasattr(m, "fpn_lateral2")
    out = m(torch.randn(1, 3, 128, 128))
    assert list(out) == ["p3", "p4", "p5", "p6", "p7"] and out["p3"].shape == (1, 16, 16, 16)
    m = tiny_fpn(max_level=5, size_divisibility=32)
    assert m.top_block is None and m.strides == [4, 8, 16, 32]
    assert list(m(torch.randn(1, 3, 64, 32))) == ["p2", "p3", "p4", "p5"]


@pytest.mark.parametrize("kw,match", [
    ({"fuse_type": "max"}, "fuse_type"), ({"min_level": 1}, "min_level"), ({"max_level": 4}, "max_level"),
    ({"size_divisibility": 16}, "size_divisibility"), ({"size_divisibility": 48}, "size_divisibility"),
    ({"size_divisibility": 0}, "size_divisibility"),
])
def test_invalid_options(kw, match):
    with pytest.raises(ValueError, match=match):
        tiny_fpn(**kw)


class FixedBottomUp(nn.Module):
    """Returns given single-channel res2..res5 maps whatever the input."""

    strides = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
    out_channels = {"res2": 1, "res3": 1, "res4": 1, "res5": 1}

    def __init__(self, feats: dict[str, np.ndarray]):
        super().__init__()
        self.feats = {k: torch.from_numpy(v)[None, None] for k, v in feats.items()}

    def forward(self, x):
        return self.feats


def _up2(a: np.ndarray) -> np.ndarray:
    return np.kron(a, np.ones((2, 2)))  # nearest-neighbour x2


def _conv3x3_s2_ones(a: np.ndarray) -> np.ndarray:
    """3x3 all-ones kernel, stride 2, zero padding 1."""
    p = np.pad(a, 1)
    h, w = (a.shape[0] + 1) // 2, (a.shape[1] + 1) // 2
    return np.array([[p[2 * i:2 * i + 3, 2 * j:2 * j + 3].sum() for j in range(w)] for i in range(h)])


@pytest.mark.parametrize("fuse_type", ["avg", "sum"])
def test_fusion_numerics_hand_constructed(fuse_type):
    rng = np.random.default_rng(0)
    size = 128  # input 128x128 -> res2 32x32 ... res5 4x4
    feats = {f"res{k}": rng.normal(size=(size >> k, size >> k)) for k in range(2, 6)}
    m = BackboneWithFPN(FixedBottomUp(feats), out_channels=1, fuse_type=fuse_type).double()
    scale = {2: 0.5, 3: 2.0, 4: -1.0, 5: 3.0}  # a different lateral per level, bias 0.25
    with torch.no_grad():
        for k in range(2, 6):
            m.get_submodule(f"fpn_lateral{k}").weight.fill_(scale[k])
            m.get_submodule(f"fpn_lateral{k}").bias.fill_(0.25)
            out_conv = m.get_submodule(f"fpn_output{k}")  # identity 3x3, bias -k
            out_conv.weight.zero_()
            out_conv.weight[0, 0, 1, 1] = 1.0
            out_conv.bias.fill_(-k)
        m.top_block.p6.weight.fill_(1.0)
        m.top_block.p6.bias.zero_()
        m.top_block.p7.weight.zero_()
        m.top_block.p7.weight[0, 0, 1, 1] = 1.0
        m.top_block.p7.bias.fill_(0.5)
    out = {k: v[0, 0].detach().numpy() for k, v in m(torch.zeros(1, 3, size, size, dtype=torch.float64)).items()}

    lateral = {k: scale[k] * feats[f"res{k}"] + 0.25 for k in range(2, 6)}
    merged = {5: lateral[5]}
    for k in (4, 3, 2):
        s = lateral[k] + _up2(merged[k + 1])
        merged[k] = s / 2 if fuse_type == "avg" else s
    for k in range(2, 6):
        np.testing.assert_allclose(out[f"p{k}"], merged[k] - k, rtol=1e-12, atol=1e-12)
    p6 = _conv3x3_s2_ones(feats["res5"])  # from C5, not P5
    np.testing.assert_allclose(out["p6"], p6, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out["p7"], np.maximum(p6, 0)[::2, ::2] + 0.5, rtol=1e-12, atol=1e-12)


def test_avg_is_half_of_sum_at_the_first_fusion():
    torch.manual_seed(0)
    a, s = tiny_fpn(fuse_type="avg"), tiny_fpn(fuse_type="sum")
    s.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 128, 128)
    oa, os_ = a(x), s(x)
    torch.testing.assert_close(oa["p5"], os_["p5"])  # no fusion at the top
    torch.testing.assert_close(oa["p6"], os_["p6"])
    b4 = a.fpn_output4.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(oa["p4"] - b4, (os_["p4"] - b4) / 2)  # linear output conv


@pytest.mark.parametrize("norm", ["FrozenBN", "BN", "GN", "none"])
def test_gradients_flow_for_every_norm(norm):
    m = tiny_fpn(norm).train()
    x = torch.randn(2, 3, 128, 128, requires_grad=True)
    out = m(x)
    sum((t ** 2).mean() for t in out.values()).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert m.bottom_up.stem.conv1.weight.grad.abs().sum() > 0
    assert m.top_block.p7.weight.grad.abs().sum() > 0


def test_freezing_inside_the_fpn_model():
    m = tiny_fpn("BN", freeze_at=2)
    assert isinstance(m.bottom_up.res2[0].conv1.norm, FrozenBatchNorm2d)
    out = m(torch.randn(2, 3, 128, 128))
    sum(t.sum() for t in out.values()).backward()
    for name, p in m.named_parameters():
        frozen = name.startswith(("bottom_up.stem.", "bottom_up.res2."))
        assert p.requires_grad != frozen, name
        assert (p.grad is None) == frozen, name
