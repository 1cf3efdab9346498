"""Inference on images: the test-time resize and the one model call shared by the Python API
(:func:`tensormask.load`), ``tensormask predict`` and ``tensormask eval``.

A user image goes through exactly what an evaluation image goes through: the dataset's test
transform (:func:`tensormask.data.transforms.build_transforms` with ``train=False``, shorter side
``data.test_min_size``, longer side ≤ ``data.test_max_size``), then :func:`detect`, which runs the
network (optionally under autocast) and the §4.3 post-processing at the image's original size.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from ..data import Sample
from ..data.transforms import Compose, build_transforms

log = logging.getLogger("tensormask.inference")

# ``dtype`` names accepted by :func:`autocast_dtype` (also torch dtypes); None = float32, no autocast.
INFERENCE_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def autocast_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for running the network in ``dtype`` on ``device``; ``None`` = float32.

    ``"bfloat16"`` runs on CUDA and on CPUs whose oneDNN has bf16 kernels (AVX-512 BF16 / AMX); on
    other CPUs it would be emulated (slower than float32), so inference stays float32 with a warning.
    ``"float16"`` is CUDA only (ValueError on the CPU). Post-processing always runs in float32.
    """
    if dtype is None or dtype == torch.float32:
        return None
    if isinstance(dtype, torch.dtype):
        names = {v: k for k, v in INFERENCE_DTYPES.items() if v is not None}
        if dtype not in names:
            raise ValueError(f"inference dtype must be one of {', '.join(INFERENCE_DTYPES)}; got {dtype}")
        dtype = names[dtype]
    if dtype not in INFERENCE_DTYPES:
        raise ValueError(f"inference dtype must be one of {', '.join(INFERENCE_DTYPES)}; got {dtype!r}")
    target = INFERENCE_DTYPES[dtype]
    if target is None or device.type == "cuda":
        return target
    if target == torch.float16:
        raise ValueError("float16 inference needs a CUDA device; use bfloat16 or float32 on the CPU")
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return target
    log.warning("bfloat16 inference: this CPU has no native bf16 kernels (AVX-512 BF16 / AMX), running in float32")
    return None


def test_transform(min_size: int, max_size: int) -> Compose:
    """The single-scale test transform (§4.3): shorter side ``min_size``, longer at most ``max_size``."""
    return build_transforms(False, min_size_test=min_size, max_size=max_size)


def image_sample(image: torch.Tensor, name: str = "") -> Sample:
    """A :class:`Sample` without ground truth around a uint8 ``(3, H, W)`` RGB image (CPU)."""
    h, w = int(image.shape[1]), int(image.shape[2])
    return Sample(image=image, masks=torch.zeros((0, h, w), dtype=torch.bool),
                  boxes=torch.zeros((0, 4), dtype=torch.float32), labels=torch.zeros(0, dtype=torch.int64),
                  crowd_masks=torch.zeros((0, h, w), dtype=torch.bool), image_id=0, file_name=name,
                  orig_size=(h, w))


def resize_for_test(image: torch.Tensor, transform: Compose, name: str = "") -> torch.Tensor:
    """``image`` (uint8 ``(3, H, W)`` RGB, CPU) resized by the test ``transform``: uint8 ``(3, h, w)``."""
    return transform(image_sample(image, name)).image


def to_chw_uint8(array: np.ndarray) -> torch.Tensor:
    """uint8 ``(3, H, W)`` tensor of an HWC uint8 RGB array (a copy: the caller's array is not kept)."""
    if not array.flags.writeable:  # torch.from_numpy wants writable memory (the result is a copy anyway)
        array = array.copy()
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).contiguous()


def _to_float(outputs):
    """Head outputs (a NamedTuple of lists of tensors, or None) cast to float32."""
    def cast(x):
        if x is None:
            return None
        if isinstance(x, torch.Tensor):
            return x.float()
        return [cast(v) for v in x]

    return type(outputs)(*(cast(field) for field in outputs))


def detect(model, images: Sequence[torch.Tensor], output_sizes: Sequence[tuple[int, int]],
           amp_dtype: torch.dtype | None = None) -> list[dict[str, torch.Tensor]]:
    """Detections of a batch of (already resized) images, at ``output_sizes``.

    What :meth:`TensorMask.forward` does in eval mode: the network (backbone, FPN, heads) under
    :func:`torch.inference_mode`, optionally under autocast to ``amp_dtype``, and the post-processing
    in float32 under :func:`torch.no_grad`. The batch is NHWC when ``model.cfg.inference.channels_last``.

    Args:
        model: a :class:`~tensormask.modeling.tensormask.TensorMask` in eval mode.
        images: N uint8 ``(3, h_i, w_i)`` RGB tensors at the test size (any device).
        output_sizes: N ``(H_i, W_i)``: the sizes to report boxes and masks at (the original sizes).
        amp_dtype: ``None`` (float32), ``torch.bfloat16`` or ``torch.float16`` (see :func:`autocast_dtype`).

    Returns:
        per image ``{"boxes": (D, 4) float32 XYXY px, "scores": (D,) float32, "labels": (D,) int64,
        "masks": (D, H_i, W_i) bool}`` on the model's device, by decreasing score.
    """
    from ..modeling.postprocess import postprocess

    if model.training:
        raise ValueError("detect: the model is in training mode (call model.eval())")
    with torch.inference_mode():
        batch, sizes = model.preprocess(images)
        if model.cfg.inference.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.autocast(batch.device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
            outputs = model.run_heads(batch, dense_masks=False)
        if amp_dtype is not None:
            outputs = _to_float(outputs)
    # Post-processing outside inference mode (gradients still off): the detections are ordinary
    # tensors that callers may modify in place (inference tensors refuse that outside the mode).
    with torch.no_grad():
        return postprocess(model, outputs, sizes, list(output_sizes))
