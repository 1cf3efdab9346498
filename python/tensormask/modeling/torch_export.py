"""``torch.export`` of the TensorMask inference network (for AOTInductor, ExecuTorch-style runtimes).

What exports is the dense, tensor-only part of inference: backbone + FPN + heads on a preprocessed
batch, with dynamic batch size and image size (multiples of ``fpn.size_divisibility``). The custom
ops (``swap_align2nat``, ``up_align2nat``) stay in the graph as ``torch.ops.tensormask.*`` calls
(they have fake kernels), so a runtime needs libtensormask loaded.

Post-processing (§4.3: thresholding, top-k, NMS, sparse mask decoding, pasting) is per-image Python
with data-dependent sizes and stays outside the graph: :func:`detections_from_exported` runs it on the
exported program's outputs and gives exactly the eager model's detections.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .heads import HeadOutputs
from .tensormask import TensorMask


class InferenceNetwork(nn.Module):
    """``batch (N, 3, H, W)`` float, preprocessed (:meth:`TensorMask.preprocess`) → the fields of
    :class:`HeadOutputs` as a plain tuple ``(cls_logits, box_deltas, mask_logits, mask_features)``
    (a plain tuple so that a saved program needs no registered output type).

    With ``dense_masks=False`` (inference) the outputs are the class logits, box deltas and mask
    features that post-processing decodes sparsely; with ``dense_masks=True`` also the dense natural
    mask logits ``(N, V, U, H_k, W_k)`` of every level and window size.
    """

    def __init__(self, model: TensorMask, dense_masks: bool = False):
        super().__init__()
        self.model = model
        self.dense_masks = dense_masks

    def forward(self, batch: torch.Tensor) -> tuple:
        return tuple(self.model.run_heads(batch, dense_masks=self.dense_masks))


def export_network(model: TensorMask, batch: torch.Tensor, dense_masks: bool = False,
                   dynamic: bool = True) -> torch.export.ExportedProgram:
    """``torch.export.export`` of :class:`InferenceNetwork` (the model is put in eval mode).

    Args:
        model: the TensorMask model.
        batch: example input ``(N, 3, H, W)``, H and W multiples of ``model.backbone.size_divisibility``.
        dense_masks: also output the dense mask logits (see :class:`InferenceNetwork`).
        dynamic: export N, H and W as dynamic dimensions (H, W stay multiples of the divisibility);
            else the program is specialised to ``batch.shape``. torch.export specialises sizes of 1:
            export at N ≥ 2 and H, W > 2^max_level (every level ≥ 2, P6/P7 are ⌈H / 2^k⌉), and the
            program then takes such inputs.

    Returns:
        the exported program; ``HeadOutputs(*program.module()(batch))`` are the head outputs.
    """
    div = model.backbone.size_divisibility
    if batch.dim() != 4 or batch.shape[1] != 3 or batch.shape[2] % div or batch.shape[3] % div:
        raise ValueError(f"export_network: batch must be (N, 3, H, W) with H, W multiples of {div}, "
                         f"got {tuple(batch.shape)}")
    model.eval()
    dynamic_shapes = None
    if dynamic:
        h, w = torch.export.Dim("h_blocks", min=1), torch.export.Dim("w_blocks", min=1)
        dynamic_shapes = {"batch": {0: torch.export.Dim("n", min=1), 2: div * h, 3: div * w}}
    with torch.no_grad():
        return torch.export.export(InferenceNetwork(model, dense_masks), (batch,), dynamic_shapes=dynamic_shapes)


def detections_from_exported(model: TensorMask, program: torch.export.ExportedProgram,
                             images: Sequence[torch.Tensor],
                             output_sizes: Sequence[tuple[int, int]] | None = None) -> list[dict[str, torch.Tensor]]:
    """Detections of ``images`` with the network part run by an exported program.

    Equal to ``model.eval()(images, output_sizes=output_sizes)``: preprocess, ``program`` (from
    :func:`export_network` with ``dense_masks=False``), then :func:`~tensormask.modeling.postprocess.postprocess`.

    Args:
        model: the model the program was exported from (preprocessing and post-processing settings).
        program: the exported network.
        images: N uint8 RGB tensors ``(3, H_i, W_i)``.
        output_sizes: N sizes to report detections at; default the input sizes.

    Returns:
        per image ``{"boxes", "scores", "labels", "masks"}`` as :meth:`TensorMask.forward`.
    """
    from .postprocess import postprocess

    batch, sizes = model.preprocess(images)
    with torch.no_grad():
        outputs = program.module()(batch)
    return postprocess(model, HeadOutputs(*outputs), sizes, output_sizes)
