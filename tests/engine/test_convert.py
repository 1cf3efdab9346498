"""detectron2 → TensorMask checkpoint conversion.

The synthetic detectron2 checkpoint is generated from detectron2's ``projects/TensorMask`` R50-FPN
architecture written out below — independently of our modules — so a naming or shape divergence of
our model from detectron2's fails these tests.
"""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch

from tensormask import cli
from tensormask.config import MSRA_PIXEL_MEAN, TORCHVISION_PIXEL_MEAN, ModelConfig, to_dict
from tensormask.engine.convert import (
    ConversionError,
    ConversionReport,
    convert_detectron2,
    convert_state_dict,
    infer_config,
    load_model,
    main,
    read_metadata,
)
from tensormask.modeling.weights import ForbiddenGlobalError

safetensors_torch = pytest.importorskip("safetensors.torch")

# --------------------------------------------------------------------------------------------------
# detectron2's TensorMask R50-FPN, spelled out
# --------------------------------------------------------------------------------------------------

NUM_CLASSES = 80
ANCHOR_SIZES_P2 = (44, 60)  # MODEL.ANCHOR_GENERATOR.SIZES[0]; window sizes = size // stride 4
MASK_SIZES = tuple(s // 4 for s in ANCHOR_SIZES_P2)  # (11, 15)
A = len(MASK_SIZES)


def detectron2_tensormask_shapes(res4_blocks: int = 6, bipyramid: bool = True) -> dict[str, tuple[int, ...]]:
    """Names and shapes of detectron2's TensorMask (R50-FPN unless ``res4_blocks`` = 23) state dict."""
    shapes: dict[str, tuple[int, ...]] = {}
    bu = "backbone.bottom_up"

    def conv_norm(prefix: str, cout: int, cin: int, k: int) -> None:  # Conv2d(bias=False, norm=FrozenBN)
        shapes[f"{prefix}.weight"] = (cout, cin, k, k)
        for f in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.norm.{f}"] = (cout,)

    def conv(prefix: str, cout: int, cin: int, k: int) -> None:  # nn.Conv2d with bias
        shapes[f"{prefix}.weight"] = (cout, cin, k, k)
        shapes[f"{prefix}.bias"] = (cout,)

    conv_norm(f"{bu}.stem.conv1", 64, 3, 7)
    cin = 64
    for stage, blocks, width, cout in zip((2, 3, 4, 5), (3, 4, res4_blocks, 3), (64, 128, 256, 512),
                                           (256, 512, 1024, 2048)):
        for b in range(blocks):
            p = f"{bu}.res{stage}.{b}"
            if b == 0:
                conv_norm(f"{p}.shortcut", cout, cin, 1)
            conv_norm(f"{p}.conv1", width, cin, 1)
            conv_norm(f"{p}.conv2", width, width, 3)
            conv_norm(f"{p}.conv3", cout, width, 1)
            cin = cout
    for k, c in zip((2, 3, 4, 5), (256, 512, 1024, 2048)):
        conv(f"backbone.fpn_lateral{k}", 256, c, 1)
        conv(f"backbone.fpn_output{k}", 256, 256, 3)
    conv("backbone.top_block.p6", 256, 2048, 3)
    conv("backbone.top_block.p7", 256, 256, 3)
    for task, ch in (("cls", 256), ("bbox", 128), ("mask", 128)):
        for i in range(4):
            conv(f"head.{task}_subnet.{2 * i}", ch, 256 if i == 0 else ch, 3)
    conv("head.cls_score", A * NUM_CLASSES, 256, 3)
    conv("head.bbox_pred", A * 4, 128, 3)
    for m in MASK_SIZES:
        conv("head.mask_pred_%02d" % m, m * m, 128, 1)
    if bipyramid:
        conv("head.mask_fuse.0", 128, 128, 3)
    return shapes


def random_state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 values with sane scales (positive variances, fan-in scaled conv weights)."""
    rng = np.random.default_rng(seed)
    state = {}
    for name, shape in shapes.items():
        if name.endswith("running_var"):
            value = rng.uniform(0.5, 1.5, shape)
        elif name.endswith("norm.weight"):
            value = rng.uniform(0.5, 1.0, shape)
        elif len(shape) == 4:
            value = rng.standard_normal(shape, dtype=np.float32) * (1.0 / np.prod(shape[1:])) ** 0.5
        else:
            value = rng.standard_normal(shape, dtype=np.float32) * 0.1
        state[name] = np.asarray(value, dtype=np.float32)
    state["pixel_mean"] = np.array(MSRA_PIXEL_MEAN, dtype=np.float32).reshape(3, 1, 1)
    state["pixel_std"] = np.ones((3, 1, 1), dtype=np.float32)
    return state


def write_pkl(path, model: dict, author: str = "Detectron2 Model Zoo") -> None:
    with open(path, "wb") as f:
        pickle.dump({"model": model, "__author__": author}, f)


SPOT_CHECKS = [
    "backbone.bottom_up.stem.conv1.weight",
    "backbone.bottom_up.res2.0.shortcut.norm.running_mean",
    "backbone.bottom_up.res4.5.conv3.norm.running_var",  # FrozenBN statistics
    "backbone.bottom_up.res5.2.conv2.weight",
    "backbone.fpn_lateral3.bias",
    "backbone.fpn_output5.weight",
    "backbone.top_block.p6.weight",
    "backbone.top_block.p7.bias",
    "head.cls_subnet.6.weight",
    "head.cls_score.bias",
    "head.bbox_pred.weight",
    "head.mask_pred_11.weight",
    "head.mask_pred_15.bias",
    "head.mask_fuse.0.weight",
]


# --------------------------------------------------------------------------------------------------
# fixtures (module scope: an R50 TensorMask has ~37M parameters)
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def d2_state():
    return random_state(detectron2_tensormask_shapes())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("convert")


@pytest.fixture(scope="module")
def pkl_path(d2_state, workdir):
    path = workdir / "model_final_d2.pkl"
    write_pkl(path, d2_state)
    return path


@pytest.fixture(scope="module")
def converted(pkl_path, workdir):
    dst = workdir / "tensormask_R_50_FPN.safetensors"
    report = convert_detectron2(pkl_path, dst)
    return report, dst


@pytest.fixture(scope="module")
def loaded(converted):
    return load_model(converted[1])


# --------------------------------------------------------------------------------------------------
# successful conversion
# --------------------------------------------------------------------------------------------------


def test_pkl_conversion_report(converted, d2_state):
    report, dst = converted
    assert isinstance(report, ConversionReport)
    assert report.source_format == "pkl" and report.author == "Detectron2 Model Zoo"
    assert sorted(k for k, _ in report.dropped) == ["pixel_mean", "pixel_std"]
    assert len(report.converted) == len(d2_state) - 2
    assert set(report.converted) == set(d2_state) - {"pixel_mean", "pixel_std"}
    assert report.num_values == sum(v.size for k, v in d2_state.items() if not k.startswith("pixel_"))
    assert os.path.isfile(dst)
    assert [p for p in os.listdir(dst.parent) if p.endswith(".tmp")] == []  # atomic write left nothing
    text = str(report)
    assert "0 left over" in text and "dropped pixel_mean" in text and "window sizes (11, 15)" in text


def test_inferred_config(converted):
    cfg = converted[0].config
    b, f, h = cfg.backbone, cfg.fpn, cfg.head
    assert (b.depth, b.style, b.norm, b.input_format) == (50, "msra", "FrozenBN", "BGR")
    assert b.freeze_at == 2 and b.weights is None
    assert b.pixel_mean == MSRA_PIXEL_MEAN and b.pixel_std == (1.0, 1.0, 1.0)
    assert (f.min_level, f.max_level, f.out_channels, f.fuse_type, f.size_divisibility) == (2, 7, 256, "avg", 32)
    assert h.num_classes == 80 and h.window_sizes == (11, 15) and h.mask_head == "bipyramid"
    assert (h.num_convs, h.cls_channels, h.bbox_channels, h.mask_channels, h.box_head) == (4, 256, 128, 128, True)
    # what the weights cannot tell keeps detectron2's values (our defaults)
    assert cfg.loss == ModelConfig().loss and cfg.assign == ModelConfig().assign
    assert cfg.loss.bbox_reg_weights == (1.5, 1.5, 0.75, 0.75)


def test_loaded_state_equals_source(loaded, d2_state):
    state = loaded.state_dict()
    assert set(state) == set(d2_state) - {"pixel_mean", "pixel_std"}
    for key in SPOT_CHECKS:
        assert torch.equal(state[key], torch.from_numpy(d2_state[key])), key
    for key, value in state.items():  # and everything else
        assert torch.equal(value, torch.from_numpy(d2_state[key])), key
    assert not loaded.training


def test_safetensors_metadata(converted):
    report, dst = converted
    metadata, cfg = read_metadata(dst)
    assert metadata["format"] == "tensormask" and metadata["source"] == "detectron2"
    assert metadata["source_file"] == "model_final_d2.pkl"
    assert json.loads(metadata["config"]) == to_dict(report.config)
    assert cfg == report.config


def test_run_heads_of_loaded_model(loaded):
    with torch.no_grad():
        out = loaded.run_heads(torch.zeros(1, 3, 128, 128))
    assert len(out.cls_logits) == 6 and len(out.box_deltas) == 6 and len(out.mask_logits) == 6
    for k in range(6):
        side = 128 // 4 // 2**k
        assert out.cls_logits[k].shape == (1, A * NUM_CLASSES, side, side)
        assert out.box_deltas[k].shape == (1, A * 4, side, side)
        for a, v0 in enumerate(MASK_SIZES):
            v = v0 * 2**k  # tensor bipyramid: σ_VU = level-0 stride
            assert out.mask_logits[k][a].shape == (1, v, v, side, side)
        assert torch.isfinite(out.cls_logits[k]).all()


def test_pth_conversion_matches_pkl(d2_state, converted, workdir):
    model = {k: torch.from_numpy(v) for k, v in d2_state.items()}
    model["backbone.bottom_up.res2.0.conv1.norm.num_batches_tracked"] = torch.tensor(0)  # from a BN run
    src = workdir / "model_final.pth"
    torch.save({"model": model, "iteration": 89999, "optimizer": {"state": {}, "param_groups": []}}, src)
    report = convert_detectron2(src, workdir / "from_pth.safetensors")
    assert report.source_format == "pth" and report.config == converted[0].config
    assert sorted(k for k, _ in report.dropped) == [
        "backbone.bottom_up.res2.0.conv1.norm.num_batches_tracked", "pixel_mean", "pixel_std"]
    a = safetensors_torch.load_file(workdir / "from_pth.safetensors")
    b = safetensors_torch.load_file(converted[1])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------------------------------
# inference of the architecture
# --------------------------------------------------------------------------------------------------


def zeros_like_shapes(shapes):
    return {k: np.zeros(s, dtype=np.float32) for k, s in shapes.items()}  # calloc: cheap


def test_infer_r101():
    cfg, notes = infer_config(zeros_like_shapes(detectron2_tensormask_shapes(res4_blocks=23)))
    assert cfg.backbone.depth == 101 and any("res4 has 23" in n for n in notes)


def test_infer_unsupported_depth():
    with pytest.raises(ConversionError, match="res4 has 4 blocks"):
        infer_config(zeros_like_shapes(detectron2_tensormask_shapes(res4_blocks=4)))


def test_not_a_tensormask_checkpoint():
    shapes = {k: s for k, s in detectron2_tensormask_shapes().items() if "mask_" not in k}  # a RetinaNet
    with pytest.raises(ConversionError, match="mask_pred"):
        infer_config(zeros_like_shapes(shapes))
    with pytest.raises(ConversionError, match="not a detectron2 TensorMask checkpoint"):
        infer_config({"conv1.weight": np.zeros((64, 3, 7, 7), np.float32)})


def test_window_size_order_from_anchor_buffers(d2_state):
    state = dict(d2_state)
    half = np.array(ANCHOR_SIZES_P2[::-1], dtype=np.float32) / 2  # anchors (60, 44): mask sizes (15, 11)
    state["anchor_generator.cell_anchors.0"] = np.stack([-half, -half, half, half], axis=1)
    cfg, _ = infer_config(state)
    assert cfg.head.window_sizes == (15, 11)
    state["anchor_generator.cell_anchors.0"] = np.array([[-16, -16, 16, 16.0], [-30, -30, 30, 30]], np.float32)
    with pytest.raises(ConversionError, match=r"anchor_generator\.cell_anchors\.0 gives window sizes \(8, 15\)"):
        infer_config(state)


def test_mask_head_required_without_bipyramid():
    state = zeros_like_shapes(detectron2_tensormask_shapes(bipyramid=False))
    with pytest.raises(ConversionError, match="mask_head='simple_aligned'"):
        infer_config(state)
    with pytest.raises(ConversionError, match="does not fit"):
        infer_config(state, mask_head="bipyramid")
    cfg, _ = infer_config(state, mask_head="simple_aligned")
    assert cfg.head.mask_head == "simple_aligned"
    with pytest.raises(ConversionError, match="contradicts"):
        infer_config(zeros_like_shapes(detectron2_tensormask_shapes()), mask_head="simple_natural")


def test_non_bipyramid_conversion():
    state = random_state(detectron2_tensormask_shapes(bipyramid=False), seed=1)
    cfg, converted, dropped, _ = convert_state_dict(state, mask_head="simple_natural")
    assert cfg.head.mask_head == "simple_natural" and "head.mask_fuse.0.weight" not in converted
    assert len(converted) == len(state) - 2


def test_pixel_mean_of_another_convention_is_refused(d2_state):
    state = dict(d2_state)
    state["pixel_mean"] = np.array(TORCHVISION_PIXEL_MEAN, np.float32).reshape(3, 1, 1)
    with pytest.raises(ConversionError, match="pixel_mean"):
        infer_config(state)


# --------------------------------------------------------------------------------------------------
# failures: every key accounted for
# --------------------------------------------------------------------------------------------------


def test_extra_key_fails_naming_it(d2_state):
    state = dict(d2_state)
    state["head.extra_conv.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    with pytest.raises(ConversionError, match=r"left over.*head\.extra_conv\.weight"):
        convert_state_dict(state)


def test_missing_key_fails_naming_it(d2_state):
    state = dict(d2_state)
    del state["backbone.bottom_up.res3.2.conv2.norm.running_var"]
    with pytest.raises(ConversionError, match=r"missing.*backbone\.bottom_up\.res3\.2\.conv2\.norm\.running_var"):
        convert_state_dict(state)


def test_wrong_shape_fails_naming_key_and_shapes(d2_state):
    state = dict(d2_state)
    state["head.mask_fuse.0.weight"] = np.zeros((128, 128, 1, 1), np.float32)
    with pytest.raises(ConversionError, match=r"head\.mask_fuse\.0\.weight: checkpoint \(128, 128, 1, 1\) "
                                              r"vs model \(128, 128, 3, 3\)"):
        convert_state_dict(state)
    state = dict(d2_state)
    state["head.cls_score.weight"] = np.zeros((A * 81, 256, 3, 3), np.float32)  # K=81, bias still K=80
    with pytest.raises(ConversionError, match=r"head\.cls_score\.bias: checkpoint \(160,\) vs model \(162,\)"):
        convert_state_dict(state)


def test_file_failure_writes_nothing(d2_state, workdir):
    state = dict(d2_state)
    state["roi_heads.box_predictor.cls_score.weight"] = np.zeros((81, 1024), np.float32)
    src = workdir / "with_extra.pkl"
    write_pkl(src, state)
    dst = workdir / "never.safetensors"
    with pytest.raises(ConversionError, match=r"with_extra\.pkl.*roi_heads\.box_predictor\.cls_score\.weight"):
        convert_detectron2(src, dst)
    assert not dst.exists() and not [p for p in os.listdir(workdir) if p.endswith(".tmp")]
    src.unlink()


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    src = tmp_path / "evil.pkl"
    src.write_bytes(pickle.dumps({"model": {"head.cls_score.weight": Evil()}, "__author__": "x"}))
    with pytest.raises(ForbiddenGlobalError, match="system"):
        convert_detectron2(src, tmp_path / "out.safetensors")
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()
    assert main([str(src), str(tmp_path / "out.safetensors")]) == 1
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------
# loading and the command line
# --------------------------------------------------------------------------------------------------


def test_load_model_refuses_foreign_files(tmp_path):
    plain = tmp_path / "plain.safetensors"
    safetensors_torch.save_file({"x": torch.zeros(2)}, plain, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="not a TensorMask model"):
        load_model(plain)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_model(junk)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "nothere.safetensors")


def test_cli_success(pkl_path, workdir, capsys):
    dst = workdir / "cli.safetensors"
    assert cli.main(["convert-detectron2", str(pkl_path), str(dst)]) == 0
    out = capsys.readouterr().out
    assert "0 left over" in out and "R50-FPN" in out and "mask head bipyramid" in out and "K=80" in out
    assert dst.is_file()
    dst.unlink()


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "missing.pkl"), str(tmp_path / "out.safetensors")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err and "missing.pkl" in err and "Traceback" not in err
    with pytest.raises(FileNotFoundError):
        main([str(tmp_path / "missing.pkl"), str(tmp_path / "out.safetensors"), "--debug"])
