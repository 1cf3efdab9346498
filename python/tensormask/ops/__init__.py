"""Typed Python wrappers over the native ops ``torch.ops.tensormask.*``.

Each wrapper documents tensor shapes and units; the fake (meta) kernels used by ``torch.compile`` and
``torch.export`` are registered next to the wrapper of their op, with the same argument checks as the
native kernels.
"""

from .align2nat import align2nat, nat2align
from .swap_align2nat import swap_align2nat, up_align2nat

__all__ = ["align2nat", "nat2align", "up_align2nat", "swap_align2nat"]
