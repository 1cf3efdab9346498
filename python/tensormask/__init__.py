"""TensorMask: dense sliding-window instance segmentation (Chen, Girshick, He, Dollár, ICCV 2019).

Importing the package loads the native library, which registers the 4D tensor ops in the PyTorch
dispatcher as ``torch.ops.tensormask.*``; :mod:`tensormask.ops` holds their typed Python wrappers.
``TENSORMASK_NATIVE_DIR`` loads the native library from another build folder (``make sanitize``).
"""

import torch  # noqa: F401  (loads libtorch before the native library)

from ._native import load as _load_native

_C = _load_native()

from . import ops  # noqa: E402

__version__ = _C.__version__

__all__ = ["ops", "__version__"]
