"""ResNet backbone: shapes, strides, names, styles, norms and freezing (detectron2 semantics)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tensormask.config import BackboneConfig
from tensormask.modeling.backbone import (
    FrozenBatchNorm2d,
    ResNet,
    build_backbone,
    freeze_module,
)

NORMS = ["FrozenBN", "BN", "GN", "none"]


def tiny(norm: str = "FrozenBN", freeze_at: int = 0, **kw) -> ResNet:
    return ResNet(0, norm=norm, freeze_at=freeze_at, gn_groups=8, **kw)


def test_tiny_shapes_strides_channels():
    m = tiny(tiny_channels=(8, 16, 24, 32))
    assert m.strides == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
    assert m.out_channels == {"res2": 8, "res3": 16, "res4": 24, "res5": 32}
    assert m.stem.conv1.out_channels == 8  # the tiny stem follows tiny_channels[0]
    out = m(torch.randn(2, 3, 64, 96))
    assert list(out) == ["res2", "res3", "res4", "res5"]
    for name, t in out.items():
        s = m.strides[name]
        assert t.shape == (2, m.out_channels[name], 64 // s, 96 // s)
    assert len(m.res2) == len(m.res5) == 1  # one basic block per stage


def test_odd_input_sizes_round_up():
    out = tiny()(torch.randn(1, 3, 65, 33))
    # stem: 7x7/2 p3 -> 33x17, maxpool 3x3/2 p1 -> 17x9; then 3x3/2 p1 stages
    assert out["res2"].shape[-2:] == (17, 9)
    assert out["res5"].shape[-2:] == (3, 2)


# Parameter counts of torchvision's resnet{18,34,50,101} minus the 1000-way fc layer.
@pytest.mark.parametrize("depth,params", [(18, 11_176_512), (34, 21_284_672), (50, 23_508_032), (101, 42_500_160)])
def test_parameter_count_matches_torchvision(depth, params):
    m = ResNet(depth, norm="BN", freeze_at=0)
    assert sum(p.numel() for p in m.parameters()) == params


def test_resnet50_names_and_channels():
    m = ResNet(50)
    sd = m.state_dict()
    assert len(sd) == 265  # 53 convs + 53 FrozenBN x 4 buffers
    for key, shape in {
        "stem.conv1.weight": (64, 3, 7, 7),
        "stem.conv1.norm.running_var": (64,),
        "res2.0.shortcut.weight": (256, 64, 1, 1),
        "res2.0.shortcut.norm.weight": (256,),
        "res2.0.conv1.weight": (64, 64, 1, 1),
        "res2.0.conv2.weight": (64, 64, 3, 3),
        "res2.0.conv3.norm.bias": (256,),
        "res4.5.conv3.weight": (1024, 256, 1, 1),
        "res5.2.conv3.norm.running_mean": (2048,),
    }.items():
        assert tuple(sd[key].shape) == shape, key
    assert "res2.1.shortcut.weight" not in sd and "res4.6.conv1.weight" not in sd
    assert m.out_channels == {"res2": 256, "res3": 512, "res4": 1024, "res5": 2048}
    assert all(c.bias is None for c in m.modules() if isinstance(c, nn.Conv2d))  # norm follows every conv


def test_resnet18_names():
    sd = ResNet(18).state_dict()
    assert "res2.0.shortcut.weight" not in sd  # 64 -> 64, stride 1: identity
    assert tuple(sd["res3.0.shortcut.weight"].shape) == (128, 64, 1, 1)
    assert tuple(sd["res5.1.conv2.weight"].shape) == (512, 512, 3, 3)
    assert not any(".conv3." in k for k in sd)
    assert len(ResNet(101).res4) == 23


def test_style_moves_the_stride():
    msra, tv = ResNet(50, style="msra"), ResNet(50, style="torchvision")
    for stage in ("res3", "res4", "res5"):
        a, b = getattr(msra, stage)[0], getattr(tv, stage)[0]
        assert a.conv1.stride == (2, 2) and a.conv2.stride == (1, 1)
        assert b.conv1.stride == (1, 1) and b.conv2.stride == (2, 2)
        assert a.shortcut.stride == b.shortcut.stride == (2, 2)
    assert msra.res2[0].conv1.stride == tv.res2[0].conv2.stride == (1, 1)
    # basic blocks: the stride is in the first 3x3 in both styles
    assert ResNet(18, style="msra").res3[0].conv1.stride == ResNet(18, style="torchvision").res3[0].conv1.stride == (2, 2)


def test_resnet50_small_forward_shapes():
    m = ResNet(50).eval()
    with torch.no_grad():
        out = m(torch.randn(1, 3, 64, 64))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "res2": (1, 256, 16, 16), "res3": (1, 512, 8, 8), "res4": (1, 1024, 4, 4), "res5": (1, 2048, 2, 2)}


@pytest.mark.parametrize("norm", NORMS)
def test_norm_layers(norm):
    m = tiny(norm)
    conv = m.res3[0].conv1
    expected = {"FrozenBN": FrozenBatchNorm2d, "BN": nn.BatchNorm2d, "GN": nn.GroupNorm, "none": type(None)}[norm]
    assert type(conv.norm) is expected
    assert (conv.bias is None) == (norm != "none")
    if norm == "GN":
        assert conv.norm.num_groups == 8


def test_gn_groups_must_divide_widths():
    with pytest.raises(ValueError, match="gn_groups=32"):
        ResNet(0, norm="GN", gn_groups=32)  # tiny widths start at 16


@pytest.mark.parametrize("kw,match", [({"depth": 42}, "depth"), ({"style": "caffe"}, "style"),
                                      ({"norm": "SyncBN"}, "norm"), ({"freeze_at": 6}, "freeze_at")])
def test_invalid_options(kw, match):
    args = {"depth": 0, **kw}
    depth = args.pop("depth")
    with pytest.raises(ValueError, match=match):
        ResNet(depth, **args)


def test_input_must_be_rgb_images():
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        tiny()(torch.randn(1, 1, 32, 32))


def test_frozen_bn_matches_eval_bn_and_never_updates():
    bn = nn.BatchNorm2d(5)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
    frozen = FrozenBatchNorm2d.convert_frozen_batchnorm(bn)
    assert isinstance(frozen, FrozenBatchNorm2d) and frozen.eps == 1e-5
    assert list(frozen.parameters()) == []
    assert sorted(dict(frozen.named_buffers())) == ["bias", "running_mean", "running_var", "weight"]
    x = torch.randn(3, 5, 4, 4)
    torch.testing.assert_close(frozen.train()(x), bn.eval()(x))
    before = frozen.running_mean.clone()
    frozen.train()(x * 10 + 3)
    torch.testing.assert_close(frozen.running_mean, before)
    # a BatchNorm2d state dict (with its step counter) loads into FrozenBatchNorm2d
    fresh = FrozenBatchNorm2d(5)
    fresh.load_state_dict(bn.state_dict())
    torch.testing.assert_close(fresh(x), bn.eval()(x))
    # default: identity
    torch.testing.assert_close(FrozenBatchNorm2d(5)(x), x)


def _trainable(module: nn.Module) -> set[str]:
    return {n for n, p in module.named_parameters() if p.requires_grad}


def test_freeze_at_with_bn():
    m0 = tiny("BN", freeze_at=0)
    assert _trainable(m0) == {n for n, _ in m0.named_parameters()}

    m1 = tiny("BN", freeze_at=1)
    assert isinstance(m1.stem.conv1.norm, FrozenBatchNorm2d)  # detectron2 converts frozen BNs
    assert not m1.stem.conv1.weight.requires_grad
    assert isinstance(m1.res2[0].conv1.norm, nn.BatchNorm2d) and m1.res2[0].conv1.weight.requires_grad

    m2 = tiny("BN", freeze_at=2)
    assert isinstance(m2.res2[0].conv2.norm, FrozenBatchNorm2d)
    assert not any(n.startswith(("stem.", "res2.")) for n in _trainable(m2))
    assert all(n.startswith(("res3.", "res4.", "res5.")) for n in _trainable(m2))
    assert isinstance(m2.res3[0].conv1.norm, nn.BatchNorm2d)
    # frozen statistics stay put in train mode while the trainable stages update theirs
    frozen_mean = m2.res2[0].conv1.norm.running_mean.clone()
    live_mean = m2.res3[0].conv1.norm.running_mean.clone()
    m2.train()(torch.randn(2, 3, 64, 64))
    torch.testing.assert_close(m2.res2[0].conv1.norm.running_mean, frozen_mean)
    assert not torch.equal(m2.res3[0].conv1.norm.running_mean, live_mean)

    m5 = tiny("BN", freeze_at=5)
    assert _trainable(m5) == set()


def test_freeze_at_with_frozen_bn_and_gn():
    m = tiny("FrozenBN", freeze_at=2)
    assert not any(n.startswith(("stem.", "res2.")) for n in _trainable(m))
    assert "res3.0.conv1.weight" in _trainable(m)
    assert not any(".norm." in n for n, _ in m.named_parameters())  # FrozenBN: buffers only
    g = tiny("GN", freeze_at=2)
    assert isinstance(g.res2[0].conv1.norm, nn.GroupNorm)  # GN is kept, just frozen
    assert not g.res2[0].conv1.norm.weight.requires_grad
    assert g.res3[0].conv1.norm.weight.requires_grad


def test_frozen_stages_get_no_gradient():
    m = tiny("BN", freeze_at=2)
    out = m(torch.randn(2, 3, 64, 64))
    sum(t.sum() for t in out.values()).backward()
    assert m.stem.conv1.weight.grad is None and m.res2[0].conv1.weight.grad is None
    assert m.res3[0].conv1.weight.grad is not None


@pytest.mark.parametrize("norm", NORMS)
def test_gradients_flow_for_every_norm(norm):
    m = tiny(norm, freeze_at=0).train()
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    out = m(x)
    sum((t ** 2).mean() for t in out.values()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in m.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert m.stem.conv1.weight.grad.abs().sum() > 0


def test_freeze_module_on_a_bare_bn():
    assert isinstance(freeze_module(nn.BatchNorm2d(4)), FrozenBatchNorm2d)


def test_build_backbone_from_config():
    m = build_backbone(BackboneConfig(depth=0, norm="GN", gn_groups=16, freeze_at=1, tiny_channels=(16, 32, 48, 64)))
    assert m.out_channels["res4"] == 48 and m.norm == "GN" and m.style == "msra"
    assert not m.stem.conv1.weight.requires_grad and m.res2[0].conv1.weight.requires_grad
    r50 = build_backbone(BackboneConfig(style="torchvision"))
    assert r50.res3[0].conv2.stride == (2, 2)
    assert not r50.res2[0].conv1.weight.requires_grad  # default freeze_at=2
