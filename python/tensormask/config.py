"""Model configuration as dataclasses. Every number of the paper (and of detectron2's TensorMask, the
authors' implementation) is named once here; YAML files under ``configs/`` override fields.

Units: window sizes are in window pixels at level 0 (σ_VU = the level-0 stride, 4 image pixels for
FPN P2), sizes and strides are in image pixels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# ImageNet statistics: detectron2/MSRA-style weights take BGR 0–255 images minus the mean (std 1);
# torchvision-style weights take RGB images scaled to [0, 1] and normalised.
MSRA_PIXEL_MEAN = (103.530, 116.280, 123.675)
MSRA_PIXEL_STD = (1.0, 1.0, 1.0)
TORCHVISION_PIXEL_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
TORCHVISION_PIXEL_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


@dataclass
class BackboneConfig:
    """ResNet backbone (res2–res5)."""

    depth: int = 50  # 18, 34, 50, 101; 0 = the "tiny" ResNet of the CPU demo
    style: str = "msra"  # "msra": BGR 0-255, stride in the 1x1 conv; "torchvision": RGB, stride in the 3x3
    norm: str = "FrozenBN"  # "FrozenBN" (pretrained), "BN", "GN" (from scratch), "none"
    freeze_at: int = 2  # 0: train all; 1: freeze stem; 2: freeze stem + res2 (detectron2 default)
    stem_channels: int = 64  # depth >= 18; the tiny ResNet's stem has tiny_channels[0] channels
    tiny_channels: tuple[int, int, int, int] = (16, 32, 64, 128)  # res2..res5 widths of the tiny ResNet
    gn_groups: int = 32
    weights: str | None = None  # torchvision .pth or detectron2 .pkl; nothing is downloaded
    pixel_mean: tuple[float, float, float] = MSRA_PIXEL_MEAN
    pixel_std: tuple[float, float, float] = MSRA_PIXEL_STD
    input_format: str = "BGR"  # channel order the backbone expects


@dataclass
class FPNConfig:
    """RetinaNet-style FPN P2–P7 with average top-down fusion (paper §4.1)."""

    out_channels: int = 256
    fuse_type: str = "avg"  # "avg" (paper) or "sum" (original FPN)
    min_level: int = 2
    max_level: int = 7  # P6/P7 from res5 by stride-2 convs, as RetinaNet
    size_divisibility: int = 32  # input padding: a multiple of res5's stride 32 (detectron2); P6/P7 round up


@dataclass
class HeadConfig:
    """Class, box and mask heads; weights shared across levels, not between tasks (§4.1)."""

    num_classes: int = 80
    num_convs: int = 4
    cls_channels: int = 256
    bbox_channels: int = 128
    mask_channels: int = 128
    prior_prob: float = 0.01  # class bias initialisation (RetinaNet)
    # Tower normalisation: "none" (paper, detectron2) or "GN" (GroupNorm after every tower conv, as in
    # FCOS; for heads trained from scratch: the CPU demo's mask AP +5.7 at equal time)
    norm: str = "none"
    gn_groups: int = 32
    init: str = "normal"  # conv trunks: "normal" = N(0, 0.01) (detectron2) or "kaiming" (He-normal)
    box_head: bool = True  # False: the box-head-free model of §A.4
    # Mask head (Fig. 6, Fig. 7): "simple_natural", "simple_aligned", "upscale_natural",
    # "upscale_aligned", "bipyramid"
    mask_head: str = "bipyramid"
    upscale_lambda: int = 1  # λ of the upscale heads (Tab. 2a/b)
    interpolation: str = "bilinear"  # "nearest" = the unaligned head (Tab. 2b, §A.2)
    # Window sizes V = U at level 0, in level-0 units. detectron2 derives them from anchor sizes
    # (44, 60) // stride 4 = (11, 15); the paper names them 15×15 and 11×11 (§4.3).
    window_sizes: tuple[int, ...] = (11, 15)
    mask_pad_val: float = -6.0  # logit outside the input of (swap/up_)align2nat


@dataclass
class AssignConfig:
    """DeepMask-style window labelling (§4.2)."""

    scale_thresh: float = 2.0  # window longer side <= scale_thresh × mask longer side (containment (i))
    center_thresh: float = 1.0  # centrality (ii): ℓ2 distance in units of the level stride
    deduct_unit: bool = True  # detectron2: window side − stride in the size test (grid sampling)
    uniqueness: bool = True  # (iii): windows matching several masks are negative
    fallback: bool = True  # masks below the minimum assignable size go to the smallest windows


@dataclass
class LossConfig:
    """Losses (§4.2): FL* classification, ℓ1 box, weighted BCE mask."""

    focal_gamma: float = 3.0
    focal_alpha: float = 0.3
    box_loss_weight: float = 1.0
    mask_loss_weight: float = 2.0
    mask_pos_weight: float = 1.5  # weight of foreground mask pixels in the BCE
    bbox_reg_weights: tuple[float, float, float, float] = (1.5, 1.5, 0.75, 0.75)  # (dx, dy, dw, dh)


@dataclass
class InferenceConfig:
    """Inference (§4.3)."""

    score_thresh: float = 0.05
    topk_candidates: int = 6000
    nms_thresh: float = 0.5
    nms_on: str = "box"  # "box": regressed boxes; "mask_box": bounding boxes of the masks (§A.4)
    detections_per_image: int = 100
    mask_threshold: float = 0.5
    # Inference input in channels_last (NHWC) memory format: faster oneDNN/cuDNN convolutions, the same
    # numbers up to float rounding (benchmarks/bench_e2e.py --channels-last measures it).
    channels_last: bool = False


@dataclass
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    fpn: FPNConfig = field(default_factory=FPNConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    assign: AssignConfig = field(default_factory=AssignConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)


@dataclass
class DataConfig:
    """Datasets (COCO format) and input transforms."""

    train_json: str = ""
    train_images: str = ""
    val_json: str = ""
    val_images: str = ""
    # scale jitter: the shorter side is sampled uniformly in [min, max] (paper: 640–800), longer side capped
    train_min_size: tuple[int, int] = (640, 800)
    train_max_size: int = 1333
    test_min_size: int = 800  # single test scale (§4.3)
    test_max_size: int = 1333
    flip_prob: float = 0.5
    num_workers: int = 2
    on_error: str = "skip"  # bad images/annotations: "skip" (counted, logged) or "raise"
    cache_train_images: bool = False  # decode each training image and its masks once, keep them in memory


@dataclass
class SolverConfig:
    """SGD schedule (§4.2 "Training"; detectron2's 6× schedule)."""

    optimizer: str = "sgd"  # "sgd" (paper) or "adamw" (converges faster for small models from scratch)
    ims_per_batch: int = 16  # total over all processes (paper: 16 images on 8 GPUs)
    base_lr: float = 0.02  # at reference_batch images; linear scaling rule for other batch sizes
    reference_batch: int = 16
    momentum: float = 0.9
    weight_decay: float = 1e-4
    weight_decay_norm: float = 0.0  # no weight decay on normalisation parameters (detectron2)
    max_iter: int = 540_000  # 6× ≈ 72 epochs of COCO at 16 images/iteration
    steps: tuple[int, ...] = (480_000, 520_000)
    gamma: float = 0.1
    warmup_iters: int = 1000
    warmup_factor: float = 0.001
    # LR decay after warm-up: "step" (paper: × gamma at each of ``steps``), "linear" (to 0 at max_iter,
    # recommended for fixed iteration budgets by Li et al., "Budgeted Training", ICLR 2020; not better
    # for the CPU demo, see its YAML) or "cosine" (to 0 at max_iter); ``steps``/``gamma``: "step" only
    lr_schedule: str = "step"
    clip_grad_norm: float = 0.0  # 0 = off
    # autocast: "bf16" on CUDA and on CPUs whose oneDNN runs bf16 (AVX-512 or AMX; float32 elsewhere),
    # "fp16" on CUDA only (with a gradient scaler)
    amp: str = "none"
    checkpoint_period: int = 5000
    keep_last: int = 3
    log_period: int = 20
    eval_period: int = 0  # 0 = evaluate at the end only (when a val set is given)


@dataclass
class Config:
    """Everything a training run needs; saved inside every checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    output_dir: str = "output"
    seed: int = 0
    device: str = "auto"  # "auto" (CUDA when available), "cpu" or "cuda"


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["solver.max_iter=100", "model.head.num_classes=3"]`` → nested dict; values are parsed as
    YAML scalars/lists (``100`` → int, ``[1, 2]`` → list, ``bf16`` → str)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} must look like section.key=value")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r} conflicts with another override of {part!r}")
        node[parts[-1]] = yaml.safe_load(value)
    return out


def merge(cfg: Any, overrides: dict[str, Any], prefix: str = "") -> Any:
    """Return a copy of dataclass ``cfg`` with nested ``overrides`` applied.

    Unknown keys raise ``KeyError`` naming the full dotted key, so typos in YAML files or on the
    command line fail loudly.
    """
    if not dataclasses.is_dataclass(cfg):
        raise TypeError(f"{prefix or 'config'} is not a config section")
    known = {f.name: f for f in dataclasses.fields(cfg)}
    changes = {}
    for key, value in overrides.items():
        dotted = f"{prefix}{key}"
        if key not in known:
            raise KeyError(f"unknown config key '{dotted}' (known: {', '.join(sorted(known))})")
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise TypeError(f"config key '{dotted}' is a section; give a mapping, got {value!r}")
            changes[key] = merge(current, value, prefix=f"{dotted}.")
        else:
            _check_value_type(dotted, current, value)
            changes[key] = tuple(value) if isinstance(current, tuple) and isinstance(value, list) else value
    return dataclasses.replace(cfg, **changes)


def _check_value_type(dotted: str, current: Any, value: Any) -> None:
    """A TypeError naming the key when ``value`` cannot replace ``current`` (a bool, int, float, str or
    sequence default); keys whose default is None accept anything."""
    if current is None or value is None and isinstance(current, str):
        return
    if isinstance(current, bool):
        ok = isinstance(value, bool)
    elif isinstance(current, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(current, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(current, str):
        ok = isinstance(value, str)
    elif isinstance(current, (list, tuple)):
        ok = isinstance(value, (list, tuple))
    else:
        return
    if not ok:
        raise TypeError(f"config key '{dotted}' must be of type {type(current).__name__} (default "
                        f"{current!r}), got {value!r}")


# --------------------------------------------------------------------------------------------------
# (De)serialisation: plain dicts, YAML files
# --------------------------------------------------------------------------------------------------

import os  # noqa: E402 (this section was appended to the module)

BASE_KEY = "_base_"  # YAML key naming a base config file, relative to the file that names it


def _plain(value: Any) -> Any:
    """Tuples (and lists) → lists, dicts recursively; scalars unchanged."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config (``ModelConfig`` or any section) as nested plain dicts; tuples become lists, so the
    result is JSON/YAML-safe. ``from_dict(to_dict(cfg)) == cfg``."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"to_dict expects a config dataclass instance, got {type(cfg).__name__}")
    return _plain(dataclasses.asdict(cfg))


def from_dict(d: dict[str, Any], base: ModelConfig | None = None) -> ModelConfig:
    """``base`` (default: ``ModelConfig()``) with the nested overrides ``d`` applied via :func:`merge`.

    Keys absent from ``d`` keep their ``base`` values; unknown keys raise ``KeyError`` naming the
    dotted key (``head.foo``); a scalar given for a section raises ``TypeError``.
    """
    if not isinstance(d, dict):
        raise TypeError(f"from_dict expects a mapping of config sections, got {type(d).__name__}")
    return merge(base if base is not None else ModelConfig(), d)


def _read_yaml(path: str) -> dict[str, Any]:
    import yaml  # a dependency of the package, imported only when a file is read

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {path!r} does not exist") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"config file {path!r} is not valid YAML: {e}") from None
    except RecursionError:
        raise ValueError(f"config file {path!r} is not usable YAML: nested too deeply") from None
    if data is None:  # an empty file: no overrides
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path!r} must hold a mapping of config sections, got {type(data).__name__}")
    return data


def load_config(path: str | os.PathLike, base: ModelConfig | None = None) -> ModelConfig:
    """Read a YAML config file: nested sections overriding ``base`` (default ``ModelConfig()``).

    A file may name another file with ``_base_: other.yaml`` (relative to its own directory); that
    file is loaded first (recursively) and this file's sections override it. Errors name the file:
    ``FileNotFoundError`` (missing file), ``ValueError`` (invalid YAML, a non-mapping document,
    cyclic ``_base_``), ``KeyError`` (unknown key, with its dotted name), ``TypeError`` (a scalar
    where a section is expected).
    """
    return _load_config(os.path.abspath(os.fspath(path)), base, ())


def _load_config(path: str, base: ModelConfig | None, seen: tuple[str, ...]) -> ModelConfig:
    if path in seen:
        chain = " -> ".join(seen + (path,))
        raise ValueError(f"config file {path!r}: cyclic {BASE_KEY}: {chain}")
    data = _read_yaml(path)
    parent = data.pop(BASE_KEY, None)
    if parent is not None:
        if not isinstance(parent, str) or not parent:
            raise ValueError(f"config file {path!r}: {BASE_KEY} must be a file name, got {parent!r}")
        parent_path = os.path.normpath(os.path.join(os.path.dirname(path), os.path.expanduser(parent)))
        if not os.path.isfile(parent_path):
            raise FileNotFoundError(
                f"config file {parent_path!r} (the {BASE_KEY} of {path!r}) does not exist"
            )
        base = _load_config(parent_path, base, seen + (path,))
    try:
        return from_dict(data, base)
    except KeyError as e:
        raise KeyError(f"config file {path!r}: {e.args[0]}") from None
    except TypeError as e:
        raise TypeError(f"config file {path!r}: {e}") from None


def save_config(cfg: ModelConfig, path: str | os.PathLike) -> None:
    """Write ``cfg`` as a complete YAML file (every field, in declaration order); ``load_config``
    reads it back equal."""
    import yaml

    with open(os.fspath(path), "w", encoding="utf-8") as f:
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False, default_flow_style=None)
