"""Loading torchvision .pth and detectron2 .pkl ResNet checkpoints (no torchvision, no network).

torchvision's resnet state-dict layout is produced by ``torchvision_state_dict`` below from our model
(its own renaming, independent of the loader) and pinned by a hard-coded list of known keys/shapes.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import struct
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tensormask.config import TORCHVISION_PIXEL_MEAN, TORCHVISION_PIXEL_STD, BackboneConfig
from tensormask.modeling.backbone import ResNet, build_backbone
from tensormask.modeling.fpn import BackboneWithFPN
from tensormask.modeling.weights import (
    ForbiddenGlobalError,
    LoadReport,
    WeightFileError,
    load_backbone_weights,
    restricted_pickle_load,
)

# --------------------------------------------------------------------------------------------------
# helpers: torchvision / detectron2 / Caffe2 layouts generated from our architecture
# --------------------------------------------------------------------------------------------------

# Keys and shapes of torchvision.models.resnet50().state_dict() (320 entries).
KNOWN_TORCHVISION_RESNET50 = {
    "conv1.weight": (64, 3, 7, 7),
    "bn1.weight": (64,),
    "bn1.running_mean": (64,),
    "bn1.num_batches_tracked": (),
    "layer1.0.conv1.weight": (64, 64, 1, 1),
    "layer1.0.conv2.weight": (64, 64, 3, 3),
    "layer1.0.conv3.weight": (256, 64, 1, 1),
    "layer1.0.bn3.bias": (256,),
    "layer1.0.downsample.0.weight": (256, 64, 1, 1),
    "layer1.0.downsample.1.running_var": (256,),
    "layer2.0.conv1.weight": (128, 256, 1, 1),
    "layer2.0.conv2.weight": (128, 128, 3, 3),
    "layer2.0.downsample.0.weight": (512, 256, 1, 1),
    "layer3.5.bn3.weight": (1024,),
    "layer4.0.downsample.0.weight": (2048, 1024, 1, 1),
    "layer4.2.conv3.weight": (2048, 512, 1, 1),
    "layer4.2.bn3.running_var": (2048,),
    "fc.weight": (1000, 2048),
    "fc.bias": (1000,),
}


def _tv_name(ours: str) -> str:
    tv = re.sub(r"^stem\.conv1\.norm\.", "bn1.", ours)
    tv = re.sub(r"^stem\.conv1\.", "conv1.", tv)
    tv = re.sub(r"^res(\d)\.", lambda m: f"layer{int(m[1]) - 1}.", tv)
    tv = tv.replace(".shortcut.norm.", ".downsample.1.").replace(".shortcut.", ".downsample.0.")
    return re.sub(r"\.conv(\d)\.norm\.", r".bn\1.", tv)


def torchvision_state_dict(model: ResNet, seed: int = 0) -> dict[str, torch.Tensor]:
    """A torchvision-layout state dict (incl. num_batches_tracked and the fc layer) with random values."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for ours, t in model.state_dict().items():
        if ours.endswith("running_var") or ours.endswith("norm.weight"):
            value = torch.rand(t.shape, generator=g) * 0.5 + 0.75
        elif ours.endswith("running_mean") or ours.endswith("norm.bias"):
            value = torch.randn(t.shape, generator=g) * 0.1
        else:  # conv weights, kaiming-like scale
            value = torch.randn(t.shape, generator=g) * (2.0 / t[0].numel()) ** 0.5
        sd[_tv_name(ours)] = value
        if ours.endswith("running_var"):
            sd[_tv_name(ours).replace("running_var", "num_batches_tracked")] = torch.tensor(1234)
    width = model.out_channels["res5"]
    sd["fc.weight"] = torch.randn(1000, width, generator=g)
    sd["fc.bias"] = torch.randn(1000, generator=g)
    return sd


def _c2_name(ours: str) -> str | None:
    """Caffe2/Detectron (MSRA R-50.pkl) name; None for running statistics (absent there)."""
    if ours.endswith(("running_mean", "running_var")):
        return None
    m = re.match(r"^stem\.conv1\.(norm\.)?(weight|bias)$", ours)
    if m:
        return "conv1_w" if not m[1] else f"res_conv1_bn_{'s' if m[2] == 'weight' else 'b'}"
    m = re.match(r"^res(\d)\.(\d+)\.(conv1|conv2|conv3|shortcut)\.(norm\.)?(weight|bias)$", ours)
    branch = {"shortcut": "branch1", "conv1": "branch2a", "conv2": "branch2b", "conv3": "branch2c"}[m[3]]
    leaf = ("bn_s" if m[5] == "weight" else "bn_b") if m[4] else ("w" if m[5] == "weight" else "b")
    return f"res{m[1]}_{m[2]}_{branch}_{leaf}"


def numpy_state(sd: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.numpy().copy() for k, v in sd.items()}


def write_pkl(path, obj, protocol=pickle.HIGHEST_PROTOCOL):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


def torchvision_forward(sd: dict[str, torch.Tensor], x: torch.Tensor, blocks=(3, 4, 6, 3)) -> list[torch.Tensor]:
    """torchvision's ResNet-50 (v1.5: stride in the 3x3), eval mode, straight from the state dict."""

    def bn(y, p):
        return F.batch_norm(y, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                            training=False, eps=1e-5)

    x = F.max_pool2d(F.relu(bn(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), "bn1")), 3, 2, 1)
    outs = []
    for layer, n in enumerate(blocks, start=1):
        for b in range(n):
            p, stride = f"layer{layer}.{b}", (2 if b == 0 and layer > 1 else 1)
            y = F.relu(bn(F.conv2d(x, sd[f"{p}.conv1.weight"]), f"{p}.bn1"))
            y = F.relu(bn(F.conv2d(y, sd[f"{p}.conv2.weight"], stride=stride, padding=1), f"{p}.bn2"))
            y = bn(F.conv2d(y, sd[f"{p}.conv3.weight"]), f"{p}.bn3")
            if f"{p}.downsample.0.weight" in sd:
                x = bn(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=stride), f"{p}.downsample.1")
            x = F.relu(y + x)
        outs.append(x)
    return outs


@pytest.fixture(scope="module")
def r50_tv_file(tmp_path_factory):
    sd = torchvision_state_dict(ResNet(50, style="torchvision"))
    path = tmp_path_factory.mktemp("w") / "resnet50.pth"
    torch.save(sd, path)
    return path, sd


# --------------------------------------------------------------------------------------------------
# torchvision .pth
# --------------------------------------------------------------------------------------------------


def test_generated_torchvision_layout_matches_known_keys(r50_tv_file):
    _, sd = r50_tv_file
    assert len(sd) == 320  # len(torchvision.models.resnet50().state_dict())
    for key, shape in KNOWN_TORCHVISION_RESNET50.items():
        assert tuple(sd[key].shape) == shape, key
    assert not any(k.startswith(("stem", "res")) for k in sd)


def test_load_torchvision_pth(r50_tv_file):
    path, sd = r50_tv_file
    model = ResNet(50, style="torchvision")
    report = load_backbone_weights(model, path)  # style defaults to model.style
    assert isinstance(report, LoadReport)
    assert report.missing == [] and report.unexpected == [] and report.filled == []
    assert len(report.loaded) == 265 and report.ok
    assert report.scheme == "torchvision" and report.file_style == "torchvision"
    assert any(i.startswith("fc.weight") for i in report.ignored)
    assert sum("num_batches_tracked" in i for i in report.ignored) == 53  # FrozenBN keeps no counter
    ours = model.state_dict()
    for tv, mine in [("conv1.weight", "stem.conv1.weight"), ("bn1.running_var", "stem.conv1.norm.running_var"),
                     ("layer1.0.downsample.0.weight", "res2.0.shortcut.weight"),
                     ("layer1.0.downsample.1.bias", "res2.0.shortcut.norm.bias"),
                     ("layer3.4.bn2.weight", "res4.4.conv2.norm.weight"),
                     ("layer4.2.conv3.weight", "res5.2.conv3.weight"),
                     ("layer4.2.bn3.running_mean", "res5.2.conv3.norm.running_mean")]:
        torch.testing.assert_close(ours[mine], sd[tv], rtol=0, atol=0)
    text = str(report)
    assert "265 tensors loaded" in text and "missing (kept their initial values): none" in text


def test_loaded_model_computes_torchvision_resnet50(r50_tv_file):
    path, sd = r50_tv_file
    model = ResNet(50, style="torchvision").eval()
    load_backbone_weights(model, path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours = model(x)
        ref = torchvision_forward(sd, x)
    for name, r in zip(["res2", "res3", "res4", "res5"], ref):
        torch.testing.assert_close(ours[name], r, rtol=1e-4, atol=1e-5 * r.abs().max().item())
    # the same tensors in an msra-style net compute something else: why the style check exists
    msra = ResNet(50, style="msra").eval()
    msra.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert not torch.allclose(msra(x)["res5"], ours["res5"], rtol=1e-2, atol=1e-2 * ref[-1].abs().max().item())


def test_torchvision_into_msra_backbone_raises(r50_tv_file):
    path, _ = r50_tv_file
    model = ResNet(50, style="msra")
    before = model.stem.conv1.weight.clone()
    with pytest.raises(ValueError, match=r"torchvision-style .*style='msra'.*backbone\.style: torchvision"):
        load_backbone_weights(model, path, "msra")
    torch.testing.assert_close(model.stem.conv1.weight, before, rtol=0, atol=0)


def test_shape_mismatch_names_key_and_shapes(r50_tv_file):
    path, _ = r50_tv_file
    model = ResNet(18, style="torchvision")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"res2\.0\.conv1\.weight.*layer1\.0\.conv1\.weight.*\(64, 64, 1, 1\).*"
                                         r"\(64, 64, 3, 3\)"):
        load_backbone_weights(model, path)
    for k, v in model.state_dict().items():  # nothing was loaded
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_missing_and_unexpected_are_reported(tmp_path):
    r18 = tmp_path / "r18.pth"
    torch.save(torchvision_state_dict(ResNet(18, style="torchvision")), r18)
    r34 = ResNet(34, style="torchvision")
    report = load_backbone_weights(r34, r18)  # fewer blocks in the file
    assert "res2.2.conv1.weight" in report.missing and report.unexpected == [] and not report.ok
    assert "missing (kept their initial values): " in str(report) and "res2.2.conv1.weight" in str(report)
    with pytest.raises(ValueError, match="strict"):
        load_backbone_weights(ResNet(34, style="torchvision"), r18, strict=True)

    r34_file = tmp_path / "r34.pth"
    torch.save(torchvision_state_dict(ResNet(34, style="torchvision")), r34_file)
    report = load_backbone_weights(ResNet(18, style="torchvision"), r34_file)
    assert report.missing == [] and "layer1.2.conv1.weight -> res2.2.conv1.weight" in report.unexpected


def test_bn_and_gn_backbones(r50_tv_file):
    path, sd = r50_tv_file
    bn = ResNet(50, style="torchvision", norm="BN", freeze_at=0)
    report = load_backbone_weights(bn, path)
    assert report.ok and "res2.0.conv1.norm.num_batches_tracked" in report.loaded
    assert bn.res2[0].conv1.norm.num_batches_tracked.item() == 1234
    gn = ResNet(50, style="torchvision", norm="GN", freeze_at=0)
    report = load_backbone_weights(gn, path)
    assert any("running_mean" in u for u in report.unexpected)  # BN statistics have no place in GN
    torch.testing.assert_close(gn.res3[0].conv2.norm.weight, sd["layer2.0.bn2.weight"])


def test_load_into_fpn_wrapper_and_build_backbone(r50_tv_file):
    path, sd = r50_tv_file
    wrapper = BackboneWithFPN(ResNet(50, style="torchvision"))
    assert load_backbone_weights(wrapper, path).ok
    torch.testing.assert_close(wrapper.bottom_up.res4[2].conv1.weight, sd["layer3.2.conv1.weight"])

    cfg = BackboneConfig(depth=50, style="torchvision", weights=str(path), pixel_mean=TORCHVISION_PIXEL_MEAN,
                         pixel_std=TORCHVISION_PIXEL_STD, input_format="RGB")
    model = build_backbone(cfg)
    torch.testing.assert_close(model.res5[0].shortcut.weight, sd["layer4.0.downsample.0.weight"])
    assert not model.res2[0].conv1.weight.requires_grad  # freezing still applies
    # torchvision weights with the MSRA pixel defaults would see wrongly normalised images
    with pytest.raises(ValueError, match="pixel_mean"):
        build_backbone(BackboneConfig(depth=50, style="torchvision", weights=str(path)))


# --------------------------------------------------------------------------------------------------
# detectron2 .pkl
# --------------------------------------------------------------------------------------------------


def _random_state(model: ResNet, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.rand(v.shape, generator=g) + 0.5 for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def msra_sd():
    return _random_state(ResNet(50, style="msra"), seed=1)


def test_load_detectron2_pkl_bare_names(tmp_path, msra_sd):
    sd = msra_sd
    path = write_pkl(tmp_path / "R-50.pkl", {"model": numpy_state(sd), "__author__": "MSRA"})
    model = ResNet(50, style="msra")
    report = load_backbone_weights(model, path, "msra")
    assert report.ok and len(report.loaded) == 265 and report.file_style == "msra" and report.scheme == "detectron2"
    for key in ["stem.conv1.weight", "res2.0.conv1.norm.weight", "res4.3.conv2.norm.running_var", "res5.2.conv3.weight"]:
        torch.testing.assert_close(model.state_dict()[key], sd[key], rtol=0, atol=0)


def test_load_detectron2_pkl_prefixed_model(tmp_path, msra_sd):
    sd = msra_sd
    state = {f"backbone.bottom_up.{k}": v for k, v in numpy_state(sd).items()}
    state["backbone.fpn_lateral2.weight"] = np.zeros((256, 256, 1, 1), np.float32)
    state["backbone.top_block.p6.bias"] = np.zeros(256, np.float32)
    state["head.cls_logits.weight"] = np.zeros((80, 256, 3, 3), np.float32)
    path = write_pkl(tmp_path / "model_final.pkl", {"model": state, "__author__": "Detectron2 Model Zoo"})
    model = ResNet(50, style="msra")
    report = load_backbone_weights(model, path, "msra")
    assert report.ok and len(report.loaded) == 265 and len(report.ignored) == 3
    torch.testing.assert_close(model.res3[1].conv2.weight, sd["res3.1.conv2.weight"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="backbone.style: msra"):
        load_backbone_weights(ResNet(50, style="torchvision"), path, "torchvision")


def test_torchvision_converted_pkl_is_torchvision_style(tmp_path):
    state = numpy_state(_random_state(ResNet(18), seed=2))  # detectron2 names, from convert-torchvision-to-d2
    path = write_pkl(tmp_path / "tv.pkl", {"model": state, "__author__": "torchvision", "matching_heuristics": True})
    with pytest.raises(ValueError, match="torchvision-style"):
        load_backbone_weights(ResNet(18, style="msra"), path)
    assert load_backbone_weights(ResNet(18, style="torchvision"), path).ok


def test_caffe2_msra_imagenet_pkl(tmp_path, msra_sd):
    """MSRA's ImageNet R-50.pkl: flat dict, Caffe2 names, affine-only norms (no running stats)."""
    sd = msra_sd
    blobs = {_c2_name(k): v for k, v in numpy_state(sd).items() if _c2_name(k) is not None}
    assert "res_conv1_bn_s" in blobs and "res2_0_branch2a_w" in blobs and "res5_2_branch2c_bn_b" in blobs
    blobs["fc1000_w"] = np.zeros((1000, 2048), np.float32)
    blobs["res2_0_branch2a_w_momentum"] = np.zeros((64, 64, 1, 1), np.float32)
    path = write_pkl(tmp_path / "R-50.pkl", blobs)
    model = ResNet(50, style="msra")
    report = load_backbone_weights(model, path, "msra")
    assert report.scheme == "caffe2" and report.file_style == "msra"
    assert report.missing == [] and report.unexpected == [] and len(report.filled) == 106
    norm = model.res3[0].conv2.norm
    torch.testing.assert_close(norm.weight, sd["res3.0.conv2.norm.weight"], rtol=0, atol=0)
    x = torch.randn(2, norm.num_features, 3, 3)
    # the filled statistics make FrozenBN the stored affine transform x * s + b
    torch.testing.assert_close(norm(x), x * norm.weight.view(1, -1, 1, 1) + norm.bias.view(1, -1, 1, 1))
    with pytest.raises(ValueError, match="msra-style"):
        load_backbone_weights(ResNet(50, style="torchvision"), path)


class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` (BINSTRING) like Detectron's Python 2 pickles."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        n = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj if n < 256 else pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def test_python2_pickle_needs_latin1(tmp_path):
    model = ResNet(0)
    sd = {k: v.numpy().copy() - 1.5 for k, v in model.state_dict().items()}  # bytes >= 0x80 in the data
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump({"model": sd})
    # numpy 1.x / Python 2 module names, as in the original Detectron pickles
    data = buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in data
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(data)  # the default ASCII decoding fails: latin1 is required
    path = tmp_path / "py2.pkl"
    path.write_bytes(data)
    fresh = ResNet(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy.core deprecation warnings either
        assert load_backbone_weights(fresh, path, "msra").ok
    np.testing.assert_array_equal(fresh.res3[0].conv1.weight.detach().numpy(), sd["res3.0.conv1.weight"])


# --------------------------------------------------------------------------------------------------
# restricted unpickling, corrupt and foreign files
# --------------------------------------------------------------------------------------------------


class _Evil:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


def test_restricted_unpickler_refuses_os_system(tmp_path):
    marker = tmp_path / "pwned"
    # protocol 0, hand-written: GLOBAL 'os system', then call it
    raw = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    with pytest.raises(pickle.UnpicklingError, match=r"os\.system"):
        restricted_pickle_load(raw)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": {"conv1.weight": _Evil(f"touch {marker}")}}))
    with pytest.raises(ForbiddenGlobalError, match=r"refusing to load .*evil\.pkl: it references '(posix|os|nt)\.system'"):
        load_backbone_weights(ResNet(0), path, "msra")
    assert not marker.exists()
    for forbidden in (b"cbuiltins\neval\n(S'1'\ntR.", b"c__builtin__\neval\n(S'1'\ntR.",
                      pickle.dumps(torch.nn.Linear), pickle.dumps(np.random.default_rng)):
        with pytest.raises(ForbiddenGlobalError):
            restricted_pickle_load(forbidden)


def test_restricted_unpickler_accepts_arrays_and_containers():
    obj = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": [np.float64(2.5), (1, 2)], "c": {3, 4}}
    for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
        out = restricted_pickle_load(pickle.dumps(obj, protocol=protocol))
        np.testing.assert_array_equal(out["a"], obj["a"])
        assert out["b"][0] == 2.5 and out["c"] == {3, 4}


def test_corrupt_files_give_clear_errors(tmp_path, r50_tv_file):
    rng = np.random.default_rng(0)
    for name in ("garbage.pkl", "garbage.pth"):
        path = tmp_path / name
        path.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
        with pytest.raises(WeightFileError, match=re.escape(name)):
            load_backbone_weights(ResNet(0), path, "msra")
    good = pickle.dumps({"model": numpy_state(ResNet(0).state_dict())})
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(WeightFileError, match="could not read .* as a pickle"):
        load_backbone_weights(ResNet(0), truncated, "msra")
    tv_path, _ = r50_tv_file
    cut = tmp_path / "cut.pth"
    cut.write_bytes(tv_path.read_bytes()[:10000])
    with pytest.raises(WeightFileError, match="torch.save"):
        load_backbone_weights(ResNet(50, style="torchvision"), cut)
    with pytest.raises(WeightFileError, match="unsupported"):
        (tmp_path / "w.h5").write_bytes(b"x")
        load_backbone_weights(ResNet(0), tmp_path / "w.h5", "msra")
    with pytest.raises(FileNotFoundError):
        load_backbone_weights(ResNet(0), tmp_path / "nope.pth", "msra")


def test_not_a_resnet_checkpoint(tmp_path):
    path = write_pkl(tmp_path / "other.pkl", {"model": {"encoder.weight": np.zeros(3, np.float32)}})
    with pytest.raises(ValueError, match="does not look like a ResNet checkpoint"):
        load_backbone_weights(ResNet(0), path, "msra")
    pth = tmp_path / "other.pth"
    torch.save({"linear.weight": torch.zeros(2, 2)}, pth)
    with pytest.raises(ValueError, match="does not look like a ResNet checkpoint"):
        load_backbone_weights(ResNet(0), pth, "msra")
    lst = write_pkl(tmp_path / "list.pkl", [1, 2, 3])
    with pytest.raises(ValueError, match="does not look like a ResNet checkpoint"):
        load_backbone_weights(ResNet(0), lst, "msra")


def test_our_own_names_in_a_pth_have_unknown_style(tmp_path):
    src = BackboneWithFPN(ResNet(0, style="torchvision"), out_channels=8)
    path = tmp_path / "ours.pth"
    torch.save({"model": src.state_dict(), "iteration": 7}, path)  # bottom_up.* and fpn_* names
    model = ResNet(0, style="msra")
    report = load_backbone_weights(model, path)
    assert report.ok and report.file_style is None and "unknown" in str(report)
    assert any(i.startswith("fpn_lateral2.weight") for i in report.ignored)
    torch.testing.assert_close(model.res5[0].conv2.weight, src.bottom_up.res5[0].conv2.weight)
