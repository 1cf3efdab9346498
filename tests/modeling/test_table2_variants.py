"""The Tab. 2a/2b representation variants differ only in how the mask tensor is represented: the same
windows, the same targets, the same output grid — the checks behind docs/ablations.md's reading of the
converged study (a head ordering that does not hold is not explained by a difference in supervision)."""

from __future__ import annotations

import pytest
import torch

from tensormask.modeling.targets import build_targets

from .test_model import scene, tiny_model

LAM, V = 5, 15  # the paper's Tab. 2a/2b setting: λ = 5, V×U = 15×15 → a 3×3 coarse mask per window
VARIANTS = {
    "upscale_natural_l5": ("upscale_natural", {}),
    "upscale_aligned_l5": ("upscale_aligned", {}),
    "upscale_unaligned_l5": ("upscale_aligned", {"interpolation": "nearest"}),
}


def _model(name):
    head, extra = VARIANTS[name]
    return tiny_model(head, upscale_lambda=LAM, window_sizes=(V,), **extra)


def _targets(model, image, gt):
    batch, _ = model.preprocess([image])
    out = model.run_heads(batch, dense_masks=True)
    sizes = [tuple(x.shape[-2:]) for x in out.cls_logits]
    t = build_targets([gt.to(model.device)], sizes, model.strides, model.head.window_sizes,
                      model.head.window_geometry(model.strides), model.head.num_classes, model.cfg.assign,
                      model.box_coder)
    return out, t


def test_natural_aligned_and_nearest_heads_get_identical_targets():
    image, gt = scene()
    results = {name: _targets(_model(name), image, gt) for name in VARIANTS}
    ref_out, ref = results["upscale_natural_l5"]
    assert ref.num_positive > 0
    for name, (out, t) in results.items():
        assert torch.equal(t.cls_target, ref.cls_target), name
        assert torch.equal(t.pos_index, ref.pos_index), name
        assert torch.equal(t.box_target, ref.box_target), name
        for k, per_level in enumerate(ref.mask_target):
            for a, m in enumerate(per_level):
                if m is None:
                    assert t.mask_target[k][a] is None or t.mask_target[k][a].numel() == 0
                else:
                    assert torch.equal(t.mask_target[k][a], m), (name, k, a)
        # every head predicts λ²-times fewer mask channels and outputs the same natural V×U grid per window
        coarse = V // LAM
        pred = getattr(_model(name).head, _model(name).head.mask_pred_name(V))
        assert pred.out_channels == coarse * coarse == 9
        for k, (level, ref_level) in enumerate(zip(out.mask_logits, ref_out.mask_logits)):
            n, h, w = out.cls_logits[k].shape[0], *out.cls_logits[k].shape[-2:]
            assert level[0].shape == ref_level[0].shape == (n, V, V, h, w)


def test_window_geometry_is_the_papers():
    """After upscaling by λ every upscale head has σ_VU = σ_HW = s_k (one mask pixel per feature-map
    pixel of its level, Fig. 6c/d) and V×U = 15×15 mask pixels per window: the window covers 15·s_k
    image pixels, for the natural, aligned and nearest heads alike."""
    for name in VARIANTS:
        model = _model(name)
        geo = model.head.window_geometry(model.strides)
        for k, stride in enumerate(model.strides):
            (g,) = geo[k]
            assert g.size == V and g.sigma_vu_px == pytest.approx(stride) and g.side_px == pytest.approx(V * stride)
