"""Typed Python wrappers over the native ops ``torch.ops.tensormask.*``.

Each wrapper documents tensor shapes and units; the fake (meta) kernels used by ``torch.compile`` and
``torch.export`` are registered next to the wrapper of their op, with the same argument checks as the
native kernels.
"""

from .align2nat import align2nat, nat2align
from .swap_align2nat import swap_align2nat, swap_align2nat_windows, up_align2nat

__all__ = ["align2nat", "nat2align", "up_align2nat", "swap_align2nat", "swap_align2nat_windows"]

from .assign import assign_windows, crop_windows, num_windows  # noqa: E402

__all__ += ["assign_windows", "crop_windows", "num_windows"]

from .decode import decode_windows, gather_natural_windows, upscale_natural_windows  # noqa: E402

__all__ += ["decode_windows", "gather_natural_windows", "upscale_natural_windows"]

from .nms import batched_nms  # noqa: E402
from .paste_masks import masks_to_rle, paste_masks  # noqa: E402

__all__ += ["batched_nms", "paste_masks", "masks_to_rle"]

from .crop_polygons import crop_polygons  # noqa: E402

__all__ += ["crop_polygons"]
