"""The Python inference API: load a model once, run it on images, get detections at each image's size.

Example::

    import tensormask
    model = tensormask.load("demo_out/run")        # a run folder (its last checkpoint), a .pth or a .safetensors
    detections = model.predict("image.png")                        # boxes, scores, names, masks
    tensormask.draw("image.png", detections[detections.scores >= 0.5]).save("overlay.png")

:func:`load` returns a :class:`Predictor`; ``predictor(images)`` / ``predictor.predict(images)``
takes one image or a list (file paths, PIL images, HWC uint8 numpy arrays, CHW uint8 tensors),
applies the model config's test-time resize (the one ``tensormask eval`` applies) and returns one
:class:`Detections` per image at the image's original size. :func:`to_coco` writes COCO result
entries, :func:`draw` overlays (:mod:`tensormask.viz`). ``tensormask predict`` and ``tensormask eval``
run through the same calls (:mod:`tensormask.engine.inference`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import torch

__all__ = ["Detections", "Predictor", "load", "to_coco", "draw", "as_rgb_tensor"]

MASK_FORMATS = ("bitmask", "rle")


@dataclass
class Detections:
    """The detections of one image, by decreasing score, in the image's ORIGINAL pixel coordinates.

    Attributes:
        boxes: float32 ``(N, 4)`` XYXY boxes in original-image pixels (``x2``/``y2`` exclusive edges).
        scores: float32 ``(N,)`` classification scores in [0, 1] (sigmoid), decreasing.
        labels: int64 ``(N,)`` contiguous class ids ``0..K-1``.
        category_ids: int64 ``(N,)`` the dataset's category ids (COCO ``category_id``).
        category_names: ``N`` class names.
        masks: bool ``(N, H, W)`` at the original image size, or — with ``mask_format="rle"`` — ``N``
            COCO compressed RLE dicts ``{"size": [H, W], "counts": str}`` (pycocotools).
        image_size: ``(H, W)`` of the original image.

    Tensors are on the CPU. ``len(d)`` is N; ``d[index]`` (a bool mask, indices or a slice) selects
    detections, e.g. ``d[d.scores >= 0.5]``.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    category_ids: torch.Tensor
    category_names: list[str]
    masks: Union[torch.Tensor, list[dict[str, Any]]]
    image_size: tuple[int, int]

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def __getitem__(self, index) -> "Detections":
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        if isinstance(index, np.ndarray):
            index = torch.from_numpy(index)
        if isinstance(index, slice):
            picked = list(range(len(self)))[index]
        else:
            index = torch.as_tensor(index)
            picked = (torch.nonzero(index).flatten() if index.dtype == torch.bool else index.flatten()).tolist()
        rows = torch.tensor(picked, dtype=torch.int64)
        masks = self.masks[rows] if isinstance(self.masks, torch.Tensor) else [self.masks[i] for i in picked]
        return Detections(self.boxes[rows], self.scores[rows], self.labels[rows], self.category_ids[rows],
                          [self.category_names[i] for i in picked], masks, self.image_size)

    def replace(self, **changes) -> "Detections":
        """A copy with fields replaced (e.g. ``scores=calibrated``)."""
        return dataclasses.replace(self, **changes)

    def bitmasks(self) -> torch.Tensor:
        """bool ``(N, H, W)`` masks (decoded when stored as RLE)."""
        if isinstance(self.masks, torch.Tensor):
            return self.masks
        h, w = self.image_size
        if not self.masks:
            return torch.zeros((0, h, w), dtype=torch.bool)
        from pycocotools import mask as mask_util

        rles = [dict(m, counts=m["counts"].encode() if isinstance(m["counts"], str) else m["counts"]) for m in self.masks]
        return torch.from_numpy(mask_util.decode(rles).astype(bool)).permute(2, 0, 1).contiguous()

    def rle(self) -> list[dict[str, Any]]:
        """``N`` COCO compressed RLE dicts ``{"size": [H, W], "counts": str}`` of the masks."""
        if not isinstance(self.masks, torch.Tensor):
            return list(self.masks)
        from .ops import masks_to_rle

        return masks_to_rle(self.masks) if len(self) else []


ImageLike = Union[str, "os.PathLike[str]", np.ndarray, torch.Tensor, Any]  # Any: a PIL image


def as_rgb_tensor(image: ImageLike, what: str = "image") -> torch.Tensor:
    """uint8 ``(3, H, W)`` RGB tensor on the CPU of one image given as a file path (EXIF orientation
    applied), a PIL image (converted to RGB), an ``(H, W, 3)`` or ``(H, W)`` uint8 numpy array, or a
    ``(3, H, W)`` uint8 tensor. Anything else is a ``TypeError``/``ValueError`` naming ``what``."""
    from PIL import Image

    from .data import load_image
    from .engine.inference import to_chw_uint8

    if isinstance(image, (str, os.PathLike)):
        return to_chw_uint8(load_image(os.fspath(image)))
    if isinstance(image, Image.Image):
        return to_chw_uint8(np.asarray(image.convert("RGB")))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"{what}: numpy images must be uint8 (H, W, 3) RGB, got dtype {image.dtype}")
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{what}: numpy images must be (H, W, 3) RGB, got shape {image.shape}")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"{what}: empty image of shape {image.shape}")
        return to_chw_uint8(image)
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8:
            raise TypeError(f"{what}: tensor images must be uint8 (3, H, W) RGB, got dtype {image.dtype}")
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"{what}: tensor images must be (3, H, W) RGB, got shape {tuple(image.shape)}")
        if image.shape[1] == 0 or image.shape[2] == 0:
            raise ValueError(f"{what}: empty image of shape {tuple(image.shape)}")
        return image.detach().cpu()
    raise TypeError(f"{what}: expected a file path, PIL image, (H, W, 3) uint8 numpy array or (3, H, W) uint8 "
                    f"tensor, got {type(image).__name__}")


def _split_images(images) -> tuple[list, bool]:
    """``(list of images, whether the call gave a batch)``: a list/tuple, or a 4D array/tensor (NHWC
    numpy, NCHW tensor), is a batch; anything else one image."""
    if isinstance(images, (list, tuple)):
        return list(images), True
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        return list(images), True
    return [images], False


class Predictor:
    """A loaded TensorMask model that turns images into :class:`Detections` (made by :func:`load`).

    The model, its config and the test transform are built once; each call costs the test resize,
    the network and the post-processing. Calls may come from inside :func:`torch.inference_mode`.

    Attributes:
        model: the :class:`~tensormask.modeling.tensormask.TensorMask` (eval mode, on ``device``).
        cfg: the full :class:`tensormask.config.Config` in force (test sizes, inference thresholds).
        device: where the network runs.
        amp_dtype: the autocast dtype of the network (``None``: float32).
        category_names: class name of each contiguous label.
        category_ids: the dataset's category id of each contiguous label.
    """

    def __init__(self, model, meta: dict[str, Any], cfg, device: torch.device, amp_dtype: torch.dtype | None = None):
        from .engine.inference import test_transform

        self.model, self.cfg, self.device, self.amp_dtype = model, cfg, device, amp_dtype
        k = cfg.model.head.num_classes
        self.category_names = [str(n) for n in meta.get("category_names") or [f"class_{i}" for i in range(k)]]
        self.category_ids = [int(c) for c in meta.get("contiguous_to_category_id") or range(1, k + 1)]
        if len(self.category_names) != k or len(self.category_ids) != k:
            raise ValueError(f"the weights' category map has {len(self.category_names)} names and "
                             f"{len(self.category_ids)} ids for a model of {k} classes")
        self.transform = test_transform(cfg.data.test_min_size, cfg.data.test_max_size)

    def __repr__(self) -> str:
        inf = self.cfg.model.inference
        return (f"Predictor({self.cfg.model.head.mask_head}, {len(self.category_names)} classes, device={self.device}, "
                f"dtype={self.amp_dtype or torch.float32}, channels_last={inf.channels_last}, "
                f"test size {self.cfg.data.test_min_size}/{self.cfg.data.test_max_size}, "
                f"score_thresh={inf.score_thresh})")

    def predict(self, images, mask_format: str = "bitmask", batch_size: int = 1):
        """Detections of one image or a list of images, each at its original size.

        Args:
            images: one image — a file path, a PIL image, an ``(H, W, 3)`` uint8 RGB numpy array or a
                ``(3, H, W)`` uint8 RGB tensor — or a list of them (sizes may differ; a 4D ``NHWC``
                array or ``NCHW`` tensor is a list too).
            mask_format: ``"bitmask"`` (bool ``(N, H, W)`` tensors) or ``"rle"`` (COCO RLE dicts).
            batch_size: images per network call. 1 (default) makes each image's detections independent
                of the others in the call; larger batches pad images to a common size, which changes
                the GroupNorm statistics of GN heads slightly (and can be faster on a GPU).

        Returns:
            a :class:`Detections` for one image, a list (same order) for a list.
        """
        from .engine.inference import detect, resize_for_test

        if mask_format not in MASK_FORMATS:
            raise ValueError(f"mask_format must be one of {', '.join(MASK_FORMATS)}; got {mask_format!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        items, batched = _split_images(images)
        results: list[Detections] = []
        for start in range(0, len(items), batch_size):
            chunk = [as_rgb_tensor(im, f"image {start + j}" if batched else "image")
                     for j, im in enumerate(items[start:start + batch_size])]
            sizes = [(int(im.shape[1]), int(im.shape[2])) for im in chunk]
            resized = [resize_for_test(im, self.transform).to(self.device) for im in chunk]
            for det, size in zip(detect(self.model, resized, sizes, self.amp_dtype), sizes):
                results.append(self._detections(det, size, mask_format))
        return results if batched else results[0]

    __call__ = predict

    def _detections(self, det: dict[str, torch.Tensor], size: tuple[int, int], mask_format: str) -> Detections:
        labels = det["labels"].cpu()
        ids = torch.tensor(self.category_ids, dtype=torch.int64)[labels]
        out = Detections(det["boxes"].float().cpu(), det["scores"].float().cpu(), labels, ids,
                         [self.category_names[i] for i in labels.tolist()], det["masks"].cpu(), size)
        return out.replace(masks=out.rle()) if mask_format == "rle" else out

    def evaluate(self, json_path: str, image_root: str, output_dir: str, progress: bool = True) -> dict[str, dict[str, float]]:
        """COCO mask and box AP on a COCO-format dataset (``tensormask eval``): writes
        ``coco_results.json`` and ``metrics.json`` to ``output_dir`` and returns
        ``{"segm": {"AP", "AP50", ...}, "bbox": {...}}`` in percent (``{}`` on non-main processes
        under ``torchrun``)."""
        from .engine.evaluator import evaluate

        return evaluate(self.model, json_path, image_root, output_dir, self.cfg.data.test_min_size,
                        self.cfg.data.test_max_size, self.device, progress=progress,
                        on_error=self.cfg.data.on_error, amp_dtype=self.amp_dtype)


def _device(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available (torch {torch.__version__})")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:i]', got {device!r}")
    return dev


def load(path: str, device: str | torch.device = "auto", *, dtype: str | torch.dtype = "float32",
         channels_last: bool | None = True, score_threshold: float | None = None, config=None,
         overrides: Sequence[str] | dict[str, Any] | None = None) -> Predictor:
    """Load a TensorMask model for inference.

    Args:
        path: a training checkpoint (``model_*.pth``: weights, config, category names), a training
            run's output folder (its newest checkpoint) or a TensorMask ``.safetensors`` file
            (``tensormask export`` or ``tensormask convert-detectron2``).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:i"``.
        dtype: ``"float32"`` (default), ``"bfloat16"`` (the network under bf16 autocast: on CUDA and on
            CPUs with AVX-512 BF16 / AMX, else float32 with a warning) or ``"float16"`` (CUDA).
            Post-processing is float32 either way.
        channels_last: run the network on NHWC tensors (default: faster oneDNN/cuDNN convolutions,
            the same detections up to float rounding); ``None`` keeps the file's
            ``model.inference.channels_last``.
        score_threshold: drop detections scoring below this before NMS (default: the config's
            ``model.inference.score_thresh``, 0.05 — what COCO evaluation wants; for pictures, 0.5
            is typical, or filter afterwards: ``d[d.scores >= 0.5]``, the same detections).
        config: a :class:`tensormask.config.Config` to build the model from instead of the file's.
        overrides: config overrides of inference fields, as ``["model.inference.nms_thresh=0.6",
            "data.test_min_size=640"]`` or a nested dict; the model's architecture cannot change.

    Returns:
        a :class:`Predictor`.

    Raises:
        FileNotFoundError, ValueError: missing or unreadable weights, a weights file that does not
        match its config, an invalid option — with the file and the problem in the message.
    """
    from .config import merge, parse_overrides, to_dict
    from .engine.checkpoint import latest_checkpoint, load_inference_model
    from .engine.inference import autocast_dtype

    path = os.fspath(path)
    if os.path.isdir(path):  # a training run's folder: its newest checkpoint
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"weights not found: the folder {path} has no checkpoint (model_*.pth)")
        path = found
    dev = _device(device)
    amp = autocast_dtype(dtype, dev)
    model, meta, cfg = load_inference_model(path, dev, config)
    before = to_dict(cfg.model)
    if overrides:
        cfg = merge(cfg, parse_overrides(list(overrides)) if not isinstance(overrides, dict) else overrides)
    inference: dict[str, Any] = {}
    if channels_last is not None:
        inference["channels_last"] = bool(channels_last)
    if score_threshold is not None:
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        inference["score_thresh"] = float(score_threshold)
    cfg = merge(cfg, {"model": {"inference": inference}})
    after = to_dict(cfg.model)
    changed = sorted(k for k in after if k != "inference" and after[k] != before[k])
    if changed:
        raise ValueError(f"overrides cannot change the architecture of the model in {path} "
                         f"(model.{', model.'.join(changed)}); at inference only model.inference.* and data.test_* apply")
    # the network keeps the architecture it was built with; the inference settings are the config's
    model.cfg = merge(model.cfg, {"inference": after["inference"]})
    return Predictor(model, meta, cfg, dev, amp)


def to_coco(detections: Detections, image_id: int) -> list[dict[str, Any]]:
    """COCO result entries of one image's detections (what ``COCO.loadRes`` and ``COCOeval`` read).

    Returns:
        one dict per detection: ``image_id``, ``category_id`` (the dataset's id), ``bbox``
        ``[x, y, w, h]`` (float, original pixels), ``score``, ``segmentation`` (compressed RLE with
        ``counts`` as str).
    """
    rles = detections.rle()
    out = []
    for box, score, cat, rle in zip(detections.boxes.double().tolist(), detections.scores.double().tolist(),
                                    detections.category_ids.tolist(), rles):
        x1, y1, x2, y2 = box
        out.append({"image_id": int(image_id), "category_id": int(cat), "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(score), "segmentation": rle})
    return out


def draw(image: ImageLike, detections: Detections, score_threshold: float = 0.0, alpha: float = 0.5):
    """The image with the detections scoring ≥ ``score_threshold`` drawn over it (colour masks,
    boxes, class names and scores; :func:`tensormask.viz.draw_detections`).

    Args:
        image: the image the detections are of, in any form :meth:`Predictor.predict` accepts.
        detections: its :class:`Detections` (its ``image_size`` must be the image's).
        score_threshold: draw only detections with ``scores >= score_threshold``.
        alpha: mask opacity.

    Returns:
        a ``PIL.Image.Image`` (RGB, the image's size).
    """
    from .viz import draw_detections

    rgb = as_rgb_tensor(image).permute(1, 2, 0).numpy()
    if tuple(rgb.shape[:2]) != tuple(detections.image_size):
        raise ValueError(f"draw: the image is {rgb.shape[0]}x{rgb.shape[1]} but the detections are of a "
                         f"{detections.image_size[0]}x{detections.image_size[1]} image")
    shown = detections[detections.scores >= score_threshold] if score_threshold > 0 else detections
    return draw_detections(rgb, shown.boxes.numpy(), shown.scores.numpy(), shown.labels.numpy(),
                           shown.bitmasks().numpy(), _names_by_label(shown), alpha=alpha)


def _names_by_label(d: Detections) -> list[str]:
    """Names indexed by contiguous label (what :func:`tensormask.viz.draw_detections` looks up)."""
    names: dict[int, str] = dict(zip(d.labels.tolist(), d.category_names))
    return [names.get(i, str(i)) for i in range(max(names, default=-1) + 1)]
