"""Tests of the TensorMask losses (§4.2) against plain-math references evaluated with explicit loops."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tensormask.config import LossConfig
from tensormask.modeling.heads import HeadOutputs, permute_to_N_HWA_K
from tensormask.modeling.losses import (
    WindowTargets,
    box_l1_loss,
    flat_window_index,
    mask_bce_loss,
    normalizer,
    sigmoid_focal_loss_star,
    tensormask_losses,
    window_index_table,
)

# ------------------------------------------------------------------------------------------------
# Plain-math references
# ------------------------------------------------------------------------------------------------


def fl_star_ref(x: float, t: float, gamma: float, alpha: float) -> float:
    """FL* (RetinaNet appendix): −log σ(γ·x_t)/γ with x_t = x for t = 1 and −x for t = 0, times α_t."""
    xt = x if t == 1 else -x
    loss = math.log1p(math.exp(-gamma * xt)) / gamma  # −log σ(z) = log(1 + e^{−z})
    if alpha >= 0:
        loss *= alpha if t == 1 else 1 - alpha
    return loss


def bce_ref(x: float, t: float, pos_weight: float) -> float:
    p = 1.0 / (1.0 + math.exp(-x))
    return -(pos_weight * t * math.log(p) + (1 - t) * math.log(1 - p))


def window_bce_ref(x: np.ndarray, t: np.ndarray, pos_weight: float) -> float:
    """Mean over the V·U pixels of one window."""
    total = 0.0
    for v in range(x.shape[0]):
        for u in range(x.shape[1]):
            total += bce_ref(float(x[v, u]), float(t[v, u]), pos_weight)
    return total / x.size


# ------------------------------------------------------------------------------------------------
# Elementary losses
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma,alpha", [(3.0, 0.3), (2.0, 0.25), (1.0, -1.0)])
def test_focal_loss_star_against_formula(gamma, alpha):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 5, generator=g, dtype=torch.float64) * 3
    t = (torch.rand(7, 5, generator=g) < 0.3).double()
    out = sigmoid_focal_loss_star(x, t, gamma, alpha, reduction="none")
    expected = np.array([[fl_star_ref(x[i, j].item(), t[i, j].item(), gamma, alpha) for j in range(5)] for i in range(7)])
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-14)
    assert sigmoid_focal_loss_star(x, t, gamma, alpha).item() == pytest.approx(expected.sum(), rel=1e-12)
    assert sigmoid_focal_loss_star(x, t, gamma, alpha, "mean").item() == pytest.approx(expected.mean(), rel=1e-12)
    with pytest.raises(ValueError):
        sigmoid_focal_loss_star(x, t, reduction="max")


def test_focal_loss_star_defaults_are_the_papers():
    x, t = torch.tensor([0.7, -1.2], dtype=torch.float64), torch.tensor([1.0, 0.0], dtype=torch.float64)
    cfg = LossConfig()
    assert (cfg.focal_gamma, cfg.focal_alpha) == (3.0, 0.3)
    expected = fl_star_ref(0.7, 1, 3.0, 0.3) + fl_star_ref(-1.2, 0, 3.0, 0.3)
    assert sigmoid_focal_loss_star(x, t).item() == pytest.approx(expected, rel=1e-12)


def test_box_l1_loss():
    g = torch.Generator().manual_seed(1)
    p, t = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randn(6, 4, generator=g, dtype=torch.float64)
    expected = sum(abs(p[i, j].item() - t[i, j].item()) for i in range(6) for j in range(4))
    assert box_l1_loss(p, t).item() == pytest.approx(expected, rel=1e-12)
    empty = torch.zeros(0, 4, requires_grad=True)
    loss = box_l1_loss(empty, torch.zeros(0, 4))
    assert loss.item() == 0.0
    loss.backward()
    with pytest.raises(ValueError):
        box_l1_loss(p, t[:3])


@pytest.mark.parametrize("pos_weight", [1.5, 1.0])
def test_mask_bce_loss_against_formula(pos_weight):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, 5, generator=g, dtype=torch.float64) * 2
    t = torch.rand(4, 3, 5, generator=g) < 0.4
    expected = sum(window_bce_ref(x[i].numpy(), t[i].double().numpy(), pos_weight) for i in range(4))
    assert mask_bce_loss(x, t, pos_weight).item() == pytest.approx(expected, rel=1e-12)
    assert mask_bce_loss(x, t.float(), pos_weight).item() == pytest.approx(expected, rel=1e-12)


def test_mask_bce_foreground_weight():
    x = torch.randn(2, 4, 4, dtype=torch.float64)
    ones, zeros = torch.ones_like(x), torch.zeros_like(x)
    assert mask_bce_loss(x, ones, 1.5).item() == pytest.approx(1.5 * mask_bce_loss(x, ones, 1.0).item())
    assert mask_bce_loss(x, zeros, 1.5).item() == pytest.approx(mask_bce_loss(x, zeros, 1.0).item())


def test_mask_bce_averages_over_pixels_per_window():
    """A window with 4× more pixels and the same per-pixel loss contributes the same."""
    small = mask_bce_loss(torch.full((1, 2, 2), 0.3), torch.ones(1, 2, 2))
    large = mask_bce_loss(torch.full((1, 4, 4), 0.3), torch.ones(1, 4, 4))
    assert small.item() == pytest.approx(large.item(), rel=1e-6)
    assert small.item() == pytest.approx(bce_ref(0.3, 1, 1.5), rel=1e-6)
    two = mask_bce_loss(torch.full((2, 2, 2), 0.3), torch.ones(2, 2, 2))
    assert two.item() == pytest.approx(2 * small.item(), rel=1e-6)  # summed over windows


def test_mask_bce_empty_and_errors():
    x = torch.zeros(0, 3, 3, requires_grad=True)
    loss = mask_bce_loss(x, torch.zeros(0, 3, 3))
    assert loss.item() == 0.0
    loss.backward()
    with pytest.raises(ValueError):
        mask_bce_loss(torch.zeros(2, 3, 3), torch.zeros(2, 3, 4))


# ------------------------------------------------------------------------------------------------
# Normaliser
# ------------------------------------------------------------------------------------------------


def test_normalizer_single_process():
    assert not (dist.is_available() and dist.is_initialized())
    for n, expected in [(0, 1.0), (1, 1.0), (7, 7.0)]:
        out = normalizer(torch.tensor(n))
        assert out.dtype == torch.float32 and out.shape == () and out.item() == expected
    x = torch.tensor(3.0, requires_grad=True)
    assert not normalizer(x).requires_grad


def _normalizer_worker(rank: int, world: int, init_file: str, counts: list[int], out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        n = torch.tensor(counts[rank])
        mean = normalizer(n).item()
        total = normalizer(n, average_over_processes=False).item()
        zero = normalizer(torch.tensor(0)).item()
        with open(os.path.join(out_dir, f"{rank}.txt"), "w") as f:
            f.write(f"{mean} {total} {zero}")
    finally:
        dist.destroy_process_group()


def test_normalizer_two_processes(tmp_path):
    """Counts 3 and 0 on two gloo processes: global sum 3, per-process mean 1.5; all zero → 1."""
    mp.spawn(_normalizer_worker, args=(2, str(tmp_path / "init"), [3, 0], str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        mean, total, zero = map(float, (tmp_path / f"{rank}.txt").read_text().split())
        assert (mean, total, zero) == (1.5, 3.0, 1.0)


# ------------------------------------------------------------------------------------------------
# Window indexing
# ------------------------------------------------------------------------------------------------

LEVELS = [(3, 4), (2, 2)]
A, K = 2, 3


def test_flat_window_index_is_the_permute_order():
    table = window_index_table(LEVELS, A)
    r = sum(h * w for h, w in LEVELS) * A
    assert table.shape == (r, 4)
    pos = torch.cat([torch.zeros(r, 1, dtype=torch.int64), table], dim=1)  # (image, level, a, y, x)
    assert torch.equal(flat_window_index(pos, LEVELS, A), torch.arange(r))
    cls = [torch.randn(1, A * K, h, w) for h, w in LEVELS]
    flat = torch.cat([permute_to_N_HWA_K(x, K) for x in cls], dim=1)[0]
    for row, (lv, a, y, x) in enumerate(table.tolist()):
        assert torch.equal(flat[row], cls[lv][0, a * K : (a + 1) * K, y, x])


# ------------------------------------------------------------------------------------------------
# Combined losses
# ------------------------------------------------------------------------------------------------

MASK_SIZES = [[2, 3], [4, 6]]  # bipyramid-like: level 1 has 2× the mask pixels


def make_batch(seed=0, n=2, p_pos=0.3, p_ign=0.15, box=True, shuffle=True):
    """Random head outputs and consistent random targets (float64)."""
    g = torch.Generator().manual_seed(seed)
    cls = [torch.randn(n, A * K, h, w, generator=g, dtype=torch.float64).requires_grad_() for h, w in LEVELS]
    boxes = [torch.randn(n, A * 4, h, w, generator=g, dtype=torch.float64).requires_grad_() for h, w in LEVELS] if box else None
    masks = [
        [torch.randn(n, v, v, h, w, generator=g, dtype=torch.float64).requires_grad_() for v in MASK_SIZES[k]]
        for k, (h, w) in enumerate(LEVELS)
    ]
    r = sum(h * w for h, w in LEVELS) * A
    u = torch.rand(n, r, generator=g)
    cls_target = torch.full((n, r), K, dtype=torch.int64)
    cls_target[u < p_pos + p_ign] = -1
    pos = u < p_pos
    cls_target[pos] = torch.randint(0, K, (int(pos.sum()),), generator=g)
    table = window_index_table(LEVELS, A)
    img, flat = torch.nonzero(pos, as_tuple=True)
    pos_index = torch.cat([img[:, None], table[flat]], dim=1)
    if shuffle:
        pos_index = pos_index[torch.randperm(len(pos_index), generator=g)]
    p = len(pos_index)
    box_target = torch.randn(p, 4, generator=g, dtype=torch.float64)
    mask_target = []
    for k in range(len(LEVELS)):
        row = []
        for a in range(A):
            cnt = int(((pos_index[:, 1] == k) & (pos_index[:, 2] == a)).sum())
            v = MASK_SIZES[k][a]
            row.append(torch.rand(cnt, v, v, generator=g) < 0.5 if cnt else None)
        mask_target.append(row)
    return HeadOutputs(cls, boxes, masks), WindowTargets(cls_target, pos_index, box_target, mask_target)


def losses_ref(outputs: HeadOutputs, targets: WindowTargets, cfg: LossConfig) -> dict[str, float]:
    """Explicit loops over images, levels, locations and window sizes."""
    pos_rows = {tuple(row): i for i, row in enumerate(targets.pos_index.tolist())}
    mask_rows = {}  # (image, level, a, y, x) → row of mask_target[level][a]
    for k in range(len(LEVELS)):
        for a in range(A):
            j = 0
            for row in targets.pos_index.tolist():
                if row[1] == k and row[2] == a:
                    mask_rows[tuple(row)] = j
                    j += 1
    n_img = targets.cls_target.shape[0]
    l_cls = l_box = l_mask = 0.0
    num_pos = 0
    for n in range(n_img):
        r = 0
        for k, (h, w) in enumerate(LEVELS):
            for y in range(h):
                for x in range(w):
                    for a in range(A):
                        t = int(targets.cls_target[n, r])
                        r += 1
                        if t < 0:
                            continue
                        for c in range(K):
                            logit = outputs.cls_logits[k][n, a * K + c, y, x].item()
                            l_cls += fl_star_ref(logit, 1.0 if c == t else 0.0, cfg.focal_gamma, cfg.focal_alpha)
                        if t == K:
                            continue
                        num_pos += 1
                        key = (n, k, a, y, x)
                        if outputs.box_deltas is not None:
                            i = pos_rows[key]
                            for j in range(4):
                                d = outputs.box_deltas[k][n, a * 4 + j, y, x].item()
                                l_box += abs(d - targets.box_target[i, j].item())
                        pred = outputs.mask_logits[k][a][n, :, :, y, x].detach().numpy()
                        gt = targets.mask_target[k][a][mask_rows[key]].double().numpy()
                        l_mask += window_bce_ref(pred, gt, cfg.mask_pos_weight)
    assert num_pos == len(pos_rows)
    norm = max(num_pos, 1)
    out = {"loss_cls": l_cls / norm, "loss_mask": cfg.mask_loss_weight * l_mask / norm}
    if outputs.box_deltas is not None:
        out["loss_box"] = cfg.box_loss_weight * l_box / norm
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_tensormask_losses_against_loops(seed):
    cfg = LossConfig(box_loss_weight=1.3, mask_loss_weight=2.0)
    outputs, targets = make_batch(seed)
    assert targets.num_positive > 0
    targets.validate(K, LEVELS, MASK_SIZES)
    got = tensormask_losses(outputs, targets, cfg)
    expected = losses_ref(outputs, targets, cfg)
    assert set(got) == {"loss_cls", "loss_box", "loss_mask"}
    for key, value in expected.items():
        assert got[key].item() == pytest.approx(value, rel=1e-10), key
    sum(got.values()).backward()
    for t in outputs.cls_logits + outputs.box_deltas + [m for row in outputs.mask_logits for m in row]:
        assert t.grad is not None


def test_ignored_windows_do_not_contribute():
    cfg = LossConfig()
    outputs, targets = make_batch(3)
    loss = tensormask_losses(outputs, targets, cfg)["loss_cls"]
    loss.backward()
    flat_grad = torch.cat([permute_to_N_HWA_K(x.grad, K) for x in outputs.cls_logits], dim=1)
    ignored = targets.cls_target == -1
    assert ignored.any()
    assert (flat_grad[ignored] == 0).all()
    assert (flat_grad[~ignored].abs().sum(-1) > 0).all()
    # Changing the logits of ignored windows changes nothing.
    with torch.no_grad():
        for x in outputs.cls_logits:
            x.add_(100 * torch.randn_like(x) * (x.grad == 0))
    assert tensormask_losses(outputs, targets, cfg)["loss_cls"].item() == pytest.approx(loss.item(), rel=1e-12)


def test_positive_order_does_not_matter():
    cfg = LossConfig()
    outputs, targets = make_batch(4, shuffle=False)
    ref = tensormask_losses(outputs, targets, cfg)
    perm = torch.randperm(targets.num_positive, generator=torch.Generator().manual_seed(0))
    pos_index = targets.pos_index[perm]
    mask_target = []
    for k in range(len(LEVELS)):
        row = []
        for a in range(A):
            sel = (targets.pos_index[:, 1] == k) & (targets.pos_index[:, 2] == a)
            rank = torch.full((targets.num_positive,), -1, dtype=torch.int64)
            rank[sel] = torch.arange(int(sel.sum()))  # row of each positive in the old group
            new_rows = rank[perm][sel[perm]]  # the group's rows in the new pos_index order
            row.append(None if targets.mask_target[k][a] is None else targets.mask_target[k][a][new_rows])
        mask_target.append(row)
    shuffled = WindowTargets(targets.cls_target, pos_index, targets.box_target[perm], mask_target)
    shuffled.validate(K, LEVELS, MASK_SIZES)
    got = tensormask_losses(outputs, shuffled, cfg)
    for key in ref:
        assert got[key].item() == pytest.approx(ref[key].item(), rel=1e-12), key


def test_no_positives():
    outputs, targets = make_batch(5, p_pos=0.0)
    assert targets.num_positive == 0
    targets = WindowTargets(targets.cls_target, targets.pos_index, torch.zeros(0, 4, dtype=torch.float64), targets.mask_target)
    targets.validate(K, LEVELS, MASK_SIZES)
    got = tensormask_losses(outputs, targets, LossConfig())
    assert got["loss_box"].item() == 0.0 and got["loss_mask"].item() == 0.0
    assert got["loss_cls"].item() == pytest.approx(losses_ref(outputs, targets, LossConfig())["loss_cls"], rel=1e-10)
    sum(got.values()).backward()  # every output stays in the graph (DDP needs all parameters used)
    assert all(m.grad is not None and (m.grad == 0).all() for row in outputs.mask_logits for m in row)


def test_box_head_free():
    cfg = LossConfig()
    outputs, targets = make_batch(6, box=False)
    targets = WindowTargets(targets.cls_target, targets.pos_index, None, targets.mask_target)
    got = tensormask_losses(outputs, targets, cfg)
    assert set(got) == {"loss_cls", "loss_mask"}
    expected = losses_ref(outputs, targets, cfg)
    for key in got:
        assert got[key].item() == pytest.approx(expected[key], rel=1e-10)


def test_inconsistent_targets_are_rejected():
    outputs, targets = make_batch(7)
    p = targets.num_positive
    cfg = LossConfig()
    # box head without box targets
    with pytest.raises(ValueError, match="box_target"):
        tensormask_losses(outputs, WindowTargets(targets.cls_target, targets.pos_index, None, targets.mask_target), cfg)
    # more positives than masks
    extra = torch.cat([targets.pos_index, targets.pos_index[:1]])
    with pytest.raises(ValueError, match="masks for"):
        tensormask_losses(outputs, WindowTargets(targets.cls_target, extra, torch.zeros(p + 1, 4), targets.mask_target), cfg)
    with pytest.raises(ValueError, match="once each"):
        WindowTargets(targets.cls_target, extra, None, targets.mask_target).validate(K, LEVELS, MASK_SIZES)
    # a positive window missing from cls_target
    ct = targets.cls_target.clone()
    n, rr = int(targets.pos_index[0, 0]), int(flat_window_index(targets.pos_index[:1], LEVELS, A))
    ct[n, rr] = K
    with pytest.raises(ValueError, match="once each"):
        WindowTargets(ct, targets.pos_index, targets.box_target, targets.mask_target).validate(K, LEVELS, MASK_SIZES)
    # wrong mask size
    bad = [list(row) for row in targets.mask_target]
    k, a = next((k, a) for k in range(2) for a in range(2) if bad[k][a] is not None)
    bad[k][a] = torch.zeros(bad[k][a].shape[0], 5, 5)
    with pytest.raises(ValueError, match="must be"):
        WindowTargets(targets.cls_target, targets.pos_index, targets.box_target, bad).validate(K, LEVELS, MASK_SIZES)
    # wrong number of windows
    with pytest.raises(ValueError, match="windows"):
        short = WindowTargets(targets.cls_target[:, :-1], targets.pos_index, targets.box_target, targets.mask_target)
        tensormask_losses(outputs, short, cfg)
    # mask logits whose spatial size differs from the class logits
    masks = [list(row) for row in outputs.mask_logits]
    masks[1][0] = masks[1][0][..., :1]
    with pytest.raises(ValueError, match="halve"):
        tensormask_losses(HeadOutputs(outputs.cls_logits, outputs.box_deltas, masks), targets, cfg)


def test_window_targets_to():
    _, targets = make_batch(8)
    moved = targets.to("cpu")
    assert torch.equal(moved.pos_index, targets.pos_index) and moved.num_positive == targets.num_positive


def test_half_precision_predictions_give_float32_losses():
    outputs, targets = make_batch(9)
    half = HeadOutputs(
        [x.detach().half() for x in outputs.cls_logits],
        [x.detach().half() for x in outputs.box_deltas],
        [[m.detach().half() for m in row] for row in outputs.mask_logits],
    )
    got = tensormask_losses(half, targets, LossConfig())
    expected = losses_ref(outputs, targets, LossConfig())
    for key in got:
        assert got[key].dtype == torch.float32
        assert got[key].item() == pytest.approx(expected[key], rel=2e-3), key
