"""Config (de)serialisation: plain dicts, YAML files with ``_base_``, loud errors."""

from __future__ import annotations

import dataclasses
import json

import pytest

from tensormask.config import (
    HeadConfig,
    ModelConfig,
    from_dict,
    load_config,
    merge,
    save_config,
    to_dict,
)


def custom_cfg() -> ModelConfig:
    cfg = ModelConfig()
    return dataclasses.replace(
        cfg,
        backbone=dataclasses.replace(cfg.backbone, depth=101, weights="R-101.pkl"),
        head=dataclasses.replace(cfg.head, num_classes=3, window_sizes=(15,), mask_head="simple_aligned"),
        loss=dataclasses.replace(cfg.loss, bbox_reg_weights=(1.0, 1.0, 1.0, 1.0)),
    )


# --------------------------------------------------------------------------------------------------
# dicts
# --------------------------------------------------------------------------------------------------


def test_to_dict_is_plain_and_json_safe():
    d = to_dict(ModelConfig())
    assert set(d) == {"backbone", "fpn", "head", "assign", "loss", "inference"}
    assert d["head"]["window_sizes"] == [11, 15] and isinstance(d["head"]["window_sizes"], list)
    assert d["backbone"]["pixel_mean"] == [103.530, 116.280, 123.675]
    assert json.loads(json.dumps(d)) == d


def test_to_dict_of_a_section_and_type_error():
    assert to_dict(HeadConfig())["num_classes"] == 80
    with pytest.raises(TypeError, match="dataclass instance"):
        to_dict({"head": {}})
    with pytest.raises(TypeError):
        to_dict(ModelConfig)  # the class, not an instance


@pytest.mark.parametrize("cfg", [ModelConfig(), custom_cfg()], ids=["default", "custom"])
def test_dict_round_trip(cfg):
    back = from_dict(to_dict(cfg))
    assert back == cfg
    assert isinstance(back.head.window_sizes, tuple) and isinstance(back.loss.bbox_reg_weights, tuple)
    assert from_dict(json.loads(json.dumps(to_dict(cfg)))) == cfg


def test_from_dict_partial_and_base():
    cfg = from_dict({"head": {"num_classes": 3}})
    assert cfg.head.num_classes == 3 and cfg.head.window_sizes == (11, 15) and cfg.fpn == ModelConfig().fpn
    on_base = from_dict({"fpn": {"fuse_type": "sum"}}, base=custom_cfg())
    assert on_base.fpn.fuse_type == "sum" and on_base.head.num_classes == 3
    assert from_dict({}) == ModelConfig()


def test_from_dict_unknown_key_names_dotted_key():
    with pytest.raises(KeyError, match=r"head\.num_clases"):
        from_dict({"head": {"num_clases": 3}})
    with pytest.raises(KeyError, match="'heads'"):
        from_dict({"heads": {}})


def test_from_dict_section_given_a_scalar():
    with pytest.raises(TypeError, match="'head' is a section"):
        from_dict({"head": 3})
    with pytest.raises(TypeError, match="mapping"):
        from_dict([("head", {})])


def test_merge_unchanged_by_append():
    # merge keeps its contract (the new functions build on it)
    assert merge(ModelConfig(), {"assign": {"center_thresh": 2.0}}).assign.center_thresh == 2.0


# --------------------------------------------------------------------------------------------------
# YAML
# --------------------------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    for cfg in (ModelConfig(), custom_cfg()):
        path = tmp_path / "cfg.yaml"
        save_config(cfg, path)
        assert load_config(path) == cfg
        assert load_config(str(path)) == cfg


def test_yaml_with_base(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "head:\n  num_classes: 3\n  window_sizes: [15]\nloss:\n  focal_gamma: 2.0\n"
    )
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "child.yaml").write_text(
        "_base_: ../base.yaml\nhead:\n  mask_head: simple_aligned\nloss:\n  focal_gamma: 1.0\n"
    )
    (sub / "grandchild.yaml").write_text("_base_: child.yaml\nfpn:\n  fuse_type: sum\n")
    cfg = load_config(sub / "grandchild.yaml")
    assert cfg.head.num_classes == 3  # from base
    assert cfg.head.window_sizes == (15,)  # list → tuple
    assert cfg.head.mask_head == "simple_aligned"  # from child
    assert cfg.loss.focal_gamma == 1.0  # child overrides base
    assert cfg.fpn.fuse_type == "sum"  # grandchild
    assert cfg.backbone == ModelConfig().backbone  # untouched sections keep the defaults


def test_yaml_unknown_key_names_file_and_dotted_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("fpn:\n  fuse: avg\n")
    with pytest.raises(KeyError, match=r"bad\.yaml.*fpn\.fuse"):
        load_config(path)
    base = tmp_path / "base_bad.yaml"
    base.write_text("inference:\n  nms: 0.5\n")
    child = tmp_path / "child.yaml"
    child.write_text("_base_: base_bad.yaml\n")
    with pytest.raises(KeyError, match=r"base_bad\.yaml.*inference\.nms"):
        load_config(child)


def test_yaml_missing_file_and_missing_base(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.yaml"):
        load_config(tmp_path / "nothere.yaml")
    child = tmp_path / "child.yaml"
    child.write_text("_base_: gone.yaml\n")
    with pytest.raises(FileNotFoundError, match=r"gone\.yaml.*child\.yaml"):
        load_config(child)


def test_yaml_bad_syntax_and_wrong_document(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("head: {num_classes: 3\n")
    with pytest.raises(ValueError, match=r"broken\.yaml.*not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- head\n- fpn\n")
    with pytest.raises(ValueError, match=r"list\.yaml.*mapping"):
        load_config(listy)
    scalar_section = tmp_path / "scalar.yaml"
    scalar_section.write_text("head: 3\n")
    with pytest.raises(TypeError, match=r"scalar\.yaml.*'head' is a section"):
        load_config(scalar_section)
    bad_base = tmp_path / "badbase.yaml"
    bad_base.write_text("_base_: [a.yaml]\n")
    with pytest.raises(ValueError, match="_base_ must be a file name"):
        load_config(bad_base)


def test_yaml_cyclic_base(tmp_path):
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\n")
    with pytest.raises(ValueError, match="cyclic _base_"):
        load_config(tmp_path / "a.yaml")


def test_yaml_empty_file_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing\n")
    assert load_config(path) == ModelConfig()
    assert load_config(path, base=custom_cfg()) == custom_cfg()
