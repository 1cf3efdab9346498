"""TensorMask: dense sliding-window instance segmentation (Chen, Girshick, He, Dollár, ICCV 2019).

Importing the package loads the native library, which registers the 4D tensor ops in the PyTorch
dispatcher as ``torch.ops.tensormask.*``; :mod:`tensormask.ops` holds their typed Python wrappers.
"""

import torch  # noqa: F401  (loads libtorch before the native library)

from . import _C
from . import ops

__version__ = _C.__version__

__all__ = ["ops", "__version__"]
