"""torch.export of the inference network: the exported program (custom ops kept as
torch.ops.tensormask.* calls) gives the eager outputs at the export shape and at other shapes
(dynamic N, H, W), and post-processing on its outputs gives the eager model's detections."""

from __future__ import annotations

import pytest
import torch

from tensormask.modeling.heads import HeadOutputs
from tensormask.modeling.torch_export import detections_from_exported, export_network

from .test_model import HEADS, scene, tiny_model


def flat(outputs) -> list[torch.Tensor]:
    leaves, _ = torch.utils._pytree.tree_flatten(outputs)
    return [x for x in leaves if x is not None]


def custom_ops(program: torch.export.ExportedProgram) -> set[str]:
    return {str(node.target) for node in program.graph.nodes
            if node.op == "call_function" and str(node.target).startswith("tensormask.")}


# The tensor bipyramid (swap_align2nat with λ = 2^k) and one baseline head of each op kind.
@pytest.mark.parametrize("mask_head,extra,op", [
    (*HEADS[0], "tensormask.swap_align2nat.default"),
    (*HEADS[2], "tensormask.swap_align2nat.default"),
    (*HEADS[4], "tensormask.up_align2nat.default"),
])
def test_exported_dense_outputs_equal_eager(mask_head, extra, op):
    model = tiny_model(mask_head, **extra).eval()
    example = torch.randn(2, 3, 96, 128, dtype=torch.float64)
    program = export_network(model, example, dense_masks=True)
    assert op in custom_ops(program)
    for batch in (example, torch.randn(1, 3, 64, 160, dtype=torch.float64)):  # dynamic N, H, W
        got = HeadOutputs(*program.module()(batch))
        with torch.no_grad():
            want = model.run_heads(batch, dense_masks=True)
        levels, sizes = len(model.strides), len(model.head.window_sizes)
        # class logits, box deltas, mask features per level + mask logits per (level, window size)
        assert len(flat(got)) == len(flat(want)) == 3 * levels + levels * sizes
        for g, w in zip(flat(got), flat(want)):
            assert g.shape == w.shape
            torch.testing.assert_close(g, w, rtol=0, atol=1e-12)


def test_postprocess_of_exported_network_equals_eager(tmp_path):
    model = tiny_model("bipyramid").float().eval()
    model.cfg.inference.score_thresh = 0.0  # many candidates: NMS and sparse decoding really run
    image, _ = scene()
    images = [image, image[:, :70, :100].flip(-1)]
    batch, _ = model.preprocess(images)
    program = export_network(model, batch)
    # What a deployment does: save the program, load it in a fresh process (ops registered by
    # `import tensormask`).
    torch.export.save(program, tmp_path / "tensormask.pt2")
    program = torch.export.load(tmp_path / "tensormask.pt2")

    with torch.no_grad():
        want = model(images, output_sizes=[(192, 256), (70, 100)])
    got = detections_from_exported(model, program, images, output_sizes=[(192, 256), (70, 100)])
    assert len(got) == 2
    for g, w in zip(got, want):
        assert g.keys() == w.keys() and w["boxes"].shape[0] > 0
        for key in w:
            torch.testing.assert_close(g[key], w[key], rtol=0, atol=1e-5)


def test_export_rejects_a_batch_not_divisible():
    model = tiny_model("bipyramid").eval()
    with pytest.raises(ValueError, match="multiples of 32"):
        export_network(model, torch.zeros(1, 3, 100, 128, dtype=torch.float64))
