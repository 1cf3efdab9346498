"""TensorMask: dense sliding-window instance segmentation (Chen, Girshick, He, Dollár, ICCV 2019).

Importing the package loads the native library, which registers the 4D tensor ops in the PyTorch
dispatcher as ``torch.ops.tensormask.*``; :mod:`tensormask.ops` holds their typed Python wrappers.
``TENSORMASK_NATIVE_DIR`` loads the native library from another build folder (``make sanitize``).

Inference from Python (:mod:`tensormask.api`, imported on first use so ``import tensormask`` stays cheap)::

    model = tensormask.load("model_final.pth")          # or .safetensors; device="auto"|"cpu"|"cuda"
    detections = model.predict("image.png")             # boxes, scores, category names, masks
    tensormask.draw("image.png", detections).save("overlay.png")
"""

import torch  # noqa: F401  (loads libtorch before the native library)

from ._native import load as _load_native

_C = _load_native()

from . import ops  # noqa: E402

__version__ = _C.__version__

_API = ("load", "Predictor", "Detections", "to_coco", "draw")

__all__ = ["ops", "__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'tensormask' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
