"""The assembled TensorMask on CUDA equals the same model on the CPU, for every mask head: training
losses and gradients (label assignment and the sparse mask path on the GPU), and inference
detections (candidates, NMS, sparse decoding, pasting). Float64 on both, so the only differences are
summation orders. Skipped without a GPU."""

from __future__ import annotations

import copy

import pytest
import torch

from tensormask.modeling.targets import InstanceTargets

from .test_model import HEADS, scene, tiny_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")


def flipped(gt: InstanceTargets, width: int) -> InstanceTargets:
    b = gt.boxes
    boxes = torch.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], 1)
    return InstanceTargets(gt.masks.flip(-1), boxes, gt.labels)


def losses_and_grads(model, images, targets):
    """The losses, and the gradients of the float64 losses (class + mask) and of the box loss apart:
    box targets are float32 by design (``build_targets``), where the GPU's ``log`` rounds otherwise."""
    losses = model(images, targets)
    params = [p for p in model.parameters() if p.requires_grad]

    def grads(loss):
        gs = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
        return [None if g is None else g.cpu() for g in gs]

    g64 = grads(losses["loss_cls"] + losses["loss_mask"])
    return {k: v.detach().cpu() for k, v in losses.items()}, g64, grads(losses["loss_box"])


def assert_grads_close(a, b, **tol):
    for i, (x, y) in enumerate(zip(a, b)):
        assert (x is None) == (y is None), i
        if x is not None:
            torch.testing.assert_close(x, y, **tol, msg=lambda m, i=i: f"parameter {i}: {m}")


@pytest.mark.parametrize("mask_head,extra", HEADS)
def test_cuda_training_losses_and_gradients_equal_cpu(mask_head, extra):
    cpu = tiny_model(mask_head, **extra).train()
    gpu = copy.deepcopy(cpu).cuda()
    image, gt = scene()
    images, targets = [image, image.flip(-1)], [gt, flipped(gt, image.shape[-1])]
    lc, gc, bc = losses_and_grads(cpu, images, targets)
    lg, gg, bg = losses_and_grads(gpu, images, targets)
    assert lc.keys() == lg.keys()
    assert lc["loss_mask"] > 0
    for key in lc:
        tol = dict(rtol=1e-5, atol=1e-9) if key == "loss_box" else dict(rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(lg[key], lc[key], **tol, msg=lambda m, key=key: f"{key}: {m}")
    assert_grads_close(gg, gc, rtol=1e-7, atol=1e-10)
    assert_grads_close(bg, bc, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("mask_head,extra", HEADS)
def test_cuda_inference_equals_cpu(mask_head, extra):
    cpu = tiny_model(mask_head, **extra).eval()
    cpu.cfg.inference.score_thresh = 0.0
    gpu = copy.deepcopy(cpu).cuda()
    image, _ = scene()
    with torch.inference_mode():
        (dc,) = cpu([image], output_sizes=[(192, 256)])
        (dg,) = gpu([image], output_sizes=[(192, 256)])
    dg = {k: v.cpu() for k, v in dg.items()}
    assert dg["boxes"].shape[0] == dc["boxes"].shape[0] > 0
    assert torch.equal(dg["labels"], dc["labels"])
    torch.testing.assert_close(dg["scores"], dc["scores"], rtol=1e-9, atol=1e-12)
    # Boxes come out in float32 on both devices: the GPU's fused multiply-adds round differently.
    assert dg["boxes"].dtype == dc["boxes"].dtype == torch.float32
    torch.testing.assert_close(dg["boxes"], dc["boxes"], rtol=2e-6, atol=1e-5)
    assert dg["masks"].dtype == torch.bool and dg["masks"].shape == dc["masks"].shape
    # Pasting thresholds an interpolated probability at 0.5: a pixel whose value sits within rounding
    # of 0.5 may flip; nothing else may differ.
    assert (dg["masks"] != dc["masks"]).sum() <= dc["masks"].numel() * 1e-4
