"""Losses of TensorMask (paper §4.2): FL* classification, ℓ1 box regression, weighted BCE mask.

All three are sums over windows divided by the number of positive windows (:func:`normalizer`), as
detectron2. The targets come from label assignment as a :class:`WindowTargets`.

Window order. Every level k has H_k·W_k·A windows (A window sizes); within a level the flat index of
the window at (y, x) with window size a is ``(y·W_k + x)·A + a`` (detectron2's
``permute_to_N_HWA_K``), and levels are concatenated finest first, so the flat index over all R
windows is ``offset_k + (y·W_k + x)·A + a`` with ``offset_k = Σ_{j<k} H_j·W_j·A``
(:func:`flat_window_index`, inverse :func:`window_index_table`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..config import LossConfig
from .heads import HeadOutputs, permute_to_N_HWA_K

IMAGE, LEVEL, WINDOW, Y, X = range(5)  # columns of WindowTargets.pos_index


@dataclass
class WindowTargets:
    """Training targets of all windows of a batch of N images (produced by label assignment).

    Attributes:
        cls_target: ``(N, R)`` int64 over the R windows of an image in flat order (module docstring):
            ``-1`` = ignored (no classification loss), ``K`` (= num_classes) = background (negative),
            ``0..K−1`` = the class of a positive window.
        pos_index: ``(P, 5)`` int64, one row per positive window of the batch, columns
            ``(image, level, window_size_idx, y, x)`` (constants ``IMAGE, LEVEL, WINDOW, Y, X``):
            image in [0, N), level k in [0, L), window size index a in [0, A) (into
            ``HeadConfig.window_sizes``), (y, x) the window's location on level k's H_k × W_k grid.
            Rows may come in any order, but exactly the windows with ``0 ≤ cls_target < K`` must
            appear, each once.
        box_target: ``(P, 4)`` float, row i = the (dx, dy, dw, dh) deltas (``Box2BoxTransform.get_deltas``
            of the window box and its ground-truth box) of the window of ``pos_index[i]``. ``None`` only
            for a model without box head.
        mask_target: ``mask_target[k][a]`` is ``(P_ka, V_ka, U_ka)`` (bool, uint8 or float in {0, 1})
            holding the ground-truth mask crops of the positive windows of level k and window size a,
            on the window's own mask grid (``V_ka = TensorMaskHead.output_size(k, a)``, pixel σ_VU).
            Its rows are the rows of ``pos_index`` with ``level == k`` and ``window_size_idx == a``,
            **in the order in which they appear in pos_index**. ``None`` (or 0 rows) where no window of
            (k, a) is positive. L lists of A entries.
    """

    cls_target: torch.Tensor
    pos_index: torch.Tensor
    box_target: torch.Tensor | None
    mask_target: list[list[torch.Tensor | None]]

    @property
    def num_positive(self) -> int:
        """P, the number of positive windows in the batch."""
        return int(self.pos_index.shape[0])

    def to(self, device: torch.device | str) -> WindowTargets:
        """A copy with every tensor on ``device``."""
        return WindowTargets(
            cls_target=self.cls_target.to(device),
            pos_index=self.pos_index.to(device),
            box_target=None if self.box_target is None else self.box_target.to(device),
            mask_target=[[None if m is None else m.to(device) for m in row] for row in self.mask_target],
        )

    def validate(self, num_classes: int, level_sizes: Sequence[tuple[int, int]], mask_sizes: Sequence[Sequence[int]]) -> None:
        """Check shapes and the consistency of all fields (synchronises with the device; for tests
        and debugging, not for every iteration).

        Args:
            num_classes: K.
            level_sizes: L pairs (H_k, W_k).
            mask_sizes: ``mask_sizes[k][a]`` = V = U of level k and window size a.

        Raises:
            ValueError: naming the first inconsistency found.
        """
        num_levels = len(level_sizes)
        num_windows = len(mask_sizes[0]) if mask_sizes else 0
        if len(mask_sizes) != num_levels or any(len(row) != num_windows for row in mask_sizes):
            raise ValueError("WindowTargets.validate: mask_sizes must be L lists of A sizes")
        r = sum(h * w for h, w in level_sizes) * num_windows
        ct, pi = self.cls_target, self.pos_index
        if ct.dim() != 2 or ct.shape[1] != r or ct.dtype != torch.int64:
            raise ValueError(f"cls_target must be (N, {r}) int64, got {tuple(ct.shape)} {ct.dtype}")
        if ct.numel() and (ct.min() < -1 or ct.max() > num_classes):
            raise ValueError(f"cls_target values must lie in [-1, {num_classes}]")
        if pi.dim() != 2 or pi.shape[1] != 5 or pi.dtype != torch.int64:
            raise ValueError(f"pos_index must be (P, 5) int64, got {tuple(pi.shape)} {pi.dtype}")
        p = pi.shape[0]
        if p:
            hs = torch.tensor([h for h, _ in level_sizes], device=pi.device)
            ws = torch.tensor([w for _, w in level_sizes], device=pi.device)
            if (pi[:, IMAGE] < 0).any() or (pi[:, IMAGE] >= ct.shape[0]).any():
                raise ValueError("pos_index: image index out of range")
            if (pi[:, LEVEL] < 0).any() or (pi[:, LEVEL] >= num_levels).any():
                raise ValueError("pos_index: level out of range")
            if (pi[:, WINDOW] < 0).any() or (pi[:, WINDOW] >= num_windows).any():
                raise ValueError("pos_index: window size index out of range")
            lv = pi[:, LEVEL]
            if (pi[:, Y] < 0).any() or (pi[:, Y] >= hs[lv]).any() or (pi[:, X] < 0).any() or (pi[:, X] >= ws[lv]).any():
                raise ValueError("pos_index: (y, x) outside the level's grid")
        fg = (ct >= 0) & (ct < num_classes)
        flat = pi[:, IMAGE] * r + flat_window_index(pi, level_sizes, num_windows) if p else pi.new_zeros(0)
        if int(fg.sum()) != p or (p and (torch.unique(flat).numel() != p or not fg.view(-1)[flat].all())):
            raise ValueError(
                f"pos_index ({p} rows) must list exactly the {int(fg.sum())} windows with 0 ≤ cls_target < K, once each"
            )
        if self.box_target is not None and tuple(self.box_target.shape) != (p, 4):
            raise ValueError(f"box_target must be ({p}, 4), got {tuple(self.box_target.shape)}")
        if len(self.mask_target) != num_levels or any(len(row) != num_windows for row in self.mask_target):
            raise ValueError(f"mask_target must be {num_levels} lists of {num_windows} entries")
        for k in range(num_levels):
            for a in range(num_windows):
                count = int(((pi[:, LEVEL] == k) & (pi[:, WINDOW] == a)).sum())
                m = self.mask_target[k][a]
                rows = 0 if m is None else m.shape[0]
                if rows != count:
                    raise ValueError(f"mask_target[{k}][{a}] has {rows} rows for {count} positives")
                v = mask_sizes[k][a]
                if m is not None and rows and tuple(m.shape[1:]) != (v, v):
                    raise ValueError(f"mask_target[{k}][{a}] must be (P, {v}, {v}), got {tuple(m.shape)}")


def flat_window_index(pos_index: torch.Tensor, level_sizes: Sequence[tuple[int, int]], num_window_sizes: int) -> torch.Tensor:
    """Flat index in [0, R) of windows given as (·, level, window_size_idx, y, x) rows.

    Args:
        pos_index: ``(P, 5)`` int64 in the layout of :attr:`WindowTargets.pos_index` (the image column
            is ignored).
        level_sizes: L pairs (H_k, W_k).
        num_window_sizes: A.

    Returns:
        ``(P,)`` int64: ``offset_k + (y·W_k + x)·A + a``.
    """
    dev = pos_index.device
    counts = torch.tensor([h * w * num_window_sizes for h, w in level_sizes], dtype=torch.int64, device=dev)
    offsets = torch.cumsum(counts, 0) - counts
    widths = torch.tensor([w for _, w in level_sizes], dtype=torch.int64, device=dev)
    lv = pos_index[:, LEVEL]
    return offsets[lv] + (pos_index[:, Y] * widths[lv] + pos_index[:, X]) * num_window_sizes + pos_index[:, WINDOW]


def window_index_table(
    level_sizes: Sequence[tuple[int, int]], num_window_sizes: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """The (level, window_size_idx, y, x) of every window, in flat order (inverse of
    :func:`flat_window_index`).

    Returns:
        ``(R, 4)`` int64, row r = (level, window_size_idx, y, x) of flat window r.
    """
    rows = []
    for k, (h, w) in enumerate(level_sizes):
        ys, xs, a = torch.meshgrid(
            torch.arange(h, device=device),
            torch.arange(w, device=device),
            torch.arange(num_window_sizes, device=device),
            indexing="ij",
        )
        lv = torch.full_like(ys, k)
        rows.append(torch.stack((lv, a, ys, xs), dim=-1).reshape(-1, 4))
    return torch.cat(rows) if rows else torch.zeros(0, 4, dtype=torch.int64, device=device)


def sigmoid_focal_loss_star(
    logits: torch.Tensor,
    targets: torch.Tensor,
    gamma: float = 3.0,
    alpha: float = 0.3,
    reduction: str = "sum",
) -> torch.Tensor:
    """FL* (RetinaNet paper, appendix), as fvcore's ``sigmoid_focal_loss_star``.

    ``loss = −log σ(γ·x·(2t − 1)) / γ · (α·t + (1 − α)·(1 − t))`` elementwise (the α factor is
    skipped when α < 0).

    Args:
        logits: any shape, raw class scores x.
        targets: same shape, binary targets t in {0, 1} (float).
        gamma: γ > 0.
        alpha: α in [0, 1] weighting positives, or < 0 for no weighting.
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.

    Returns:
        elementwise loss (``"none"``) or a scalar.
    """
    targets = targets.to(logits.dtype)
    loss = -F.logsigmoid(gamma * logits * (2 * targets - 1)) / gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return _reduce(loss, reduction)


def box_l1_loss(pred_deltas: torch.Tensor, target_deltas: torch.Tensor) -> torch.Tensor:
    """Parameter-free ℓ1 loss ``Σ |pred − target|`` (detectron2's smooth-ℓ1 with β = 0).

    Args:
        pred_deltas: ``(P, 4)`` predicted (dx, dy, dw, dh).
        target_deltas: ``(P, 4)`` target deltas.

    Returns:
        scalar, summed over all P·4 entries (0 for P = 0, still connected to ``pred_deltas``).
    """
    if pred_deltas.shape != target_deltas.shape:
        raise ValueError(f"box_l1_loss: shapes {tuple(pred_deltas.shape)} and {tuple(target_deltas.shape)} differ")
    return (pred_deltas - target_deltas.to(pred_deltas.dtype)).abs().sum()


def mask_bce_loss(pred_logits: torch.Tensor, target: torch.Tensor, pos_weight: float = 1.5) -> torch.Tensor:
    """Per-pixel binary cross-entropy with foreground pixels weighted, averaged per window, summed.

    Per pixel: ``−[w·t·log σ(x) + (1 − t)·log(1 − σ(x))]`` with ``w = pos_weight``; each window's loss
    is the mean over its V·U pixels (so windows of the bipyramid's larger levels do not weigh more),
    and the result is the sum over the P windows (the caller divides by the number of positives).

    Args:
        pred_logits: ``(P, V, U)`` mask logits of P windows (σ_VU of their head).
        target: ``(P, V, U)`` ground truth in {0, 1} (bool, integer or float).
        pos_weight: weight of foreground pixels (1.5 in the paper).

    Returns:
        scalar (0 for P = 0, still connected to ``pred_logits``).
    """
    if pred_logits.dim() != 3 or pred_logits.shape != target.shape:
        raise ValueError(
            f"mask_bce_loss: expected two (P, V, U) tensors of the same shape, got {tuple(pred_logits.shape)} "
            f"and {tuple(target.shape)}"
        )
    pw = torch.tensor(pos_weight, dtype=pred_logits.dtype, device=pred_logits.device)
    loss = F.binary_cross_entropy_with_logits(pred_logits, target.to(pred_logits.dtype), pos_weight=pw, reduction="none")
    return loss.mean(dim=(1, 2)).sum()


def normalizer(num_positive: torch.Tensor, average_over_processes: bool = True) -> torch.Tensor:
    """Loss normaliser: the number of positive windows, made independent of the number of processes.

    Without ``torch.distributed`` (or before ``init_process_group``) this is
    ``max(num_positive, 1)``. With it, ``num_positive`` is all-reduced (SUM) over the processes and
    — with ``average_over_processes`` (default) — divided by the world size before clamping to ≥ 1.
    The division is what makes the *gradient* independent of the number of GPUs under
    DistributedDataParallel, which averages gradients over processes: each process's loss is then
    ``local_sum / (global_positives / world_size)`` and the averaged gradient is that of
    ``Σ_all local_sum / global_positives``. Pass ``average_over_processes=False`` for the plain global
    count (right when gradients are summed rather than averaged).

    Args:
        num_positive: scalar tensor (any dtype), this process's number of positive windows.
        average_over_processes: divide the global count by the world size (see above).

    Returns:
        float32 scalar tensor ≥ 1 on ``num_positive``'s device, without gradient.
    """
    n = num_positive.detach().to(torch.float32).reshape(()).clone()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(n, op=dist.ReduceOp.SUM)
        if average_over_processes:
            n = n / dist.get_world_size()
    return n.clamp(min=1.0)


def tensormask_losses(
    outputs: HeadOutputs,
    targets: WindowTargets,
    cfg: LossConfig,
    average_over_processes: bool = True,
    window_mask_logits: Callable[[int, int, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """All TensorMask losses of a batch.

    ``loss_cls = Σ_{windows with cls_target ≥ 0} Σ_K FL*(logit, one-hot) / n``,
    ``loss_box = box_loss_weight · Σ_positives ℓ1 / n``,
    ``loss_mask = mask_loss_weight · Σ_positives mean_pixels BCE / n``,
    with n = :func:`normalizer` (P).

    Args:
        outputs: head outputs: L levels, A window sizes, K = channels / A classes.
        targets: :class:`WindowTargets` of the same batch.
        cfg: ``focal_gamma``, ``focal_alpha``, ``box_loss_weight``, ``mask_loss_weight``,
            ``mask_pos_weight``.
        average_over_processes: see :func:`normalizer`.
        window_mask_logits: ``f(k, a, windows (P, 3) rows (n, y, x)) -> (P, V, U)`` mask logits of
            given windows; used when ``outputs.mask_logits`` is None (sparse training:
            :meth:`TensorMaskHead.window_mask_logits`).

    Returns:
        ``{"loss_cls", "loss_box", "loss_mask"}`` scalars; ``loss_box`` is absent when the model has
        no box head (``outputs.box_deltas is None``).
    """
    num_levels = len(outputs.cls_logits)
    dense = outputs.mask_logits is not None
    if not dense and window_mask_logits is None:
        raise ValueError("tensormask_losses: no dense mask logits and no window_mask_logits function")
    num_windows = len(outputs.mask_logits[0]) if dense else len(targets.mask_target[0])
    if dense and len(outputs.mask_logits) != num_levels:
        raise ValueError(f"{len(outputs.mask_logits)} mask levels for {num_levels} class levels")
    num_classes = outputs.cls_logits[0].shape[1] // num_windows
    level_sizes = [tuple(x.shape[-2:]) for x in outputs.cls_logits]
    for k in range(num_levels if dense else 0):
        for a in range(num_windows):
            if tuple(outputs.mask_logits[k][a].shape[-2:]) != level_sizes[k]:
                raise ValueError(
                    f"mask logits of level {k} are {tuple(outputs.mask_logits[k][a].shape[-2:])} but class logits "
                    f"{level_sizes[k]}: feature sizes must halve exactly (H_k = ⌈H_(k−1)/2⌉)"
                )

    pos_index = targets.pos_index
    p = pos_index.shape[0]
    ref = outputs.cls_logits[0]
    norm = normalizer(torch.tensor(p, device=ref.device), average_over_processes)

    # Classification: FL* over all K outputs of every non-ignored window.
    logits = _at_least_f32(torch.cat([permute_to_N_HWA_K(x, num_classes) for x in outputs.cls_logits], dim=1))  # (N, R, K)
    cls_target = targets.cls_target
    if tuple(cls_target.shape) != tuple(logits.shape[:2]):
        raise ValueError(f"cls_target is {tuple(cls_target.shape)}, the head has {tuple(logits.shape[:2])} windows")
    classes = torch.arange(num_classes, device=cls_target.device)
    onehot = (cls_target[..., None] == classes).to(logits.dtype)  # background (K) and ignored (−1): all 0
    loss = sigmoid_focal_loss_star(logits, onehot, cfg.focal_gamma, cfg.focal_alpha, "none")
    # Masking by `where` rather than boolean indexing: same sum, no device sync.
    valid = (cls_target >= 0)[..., None]
    loss_cls = torch.where(valid, loss, torch.zeros_like(loss)).sum() / norm
    losses = {"loss_cls": loss_cls}

    if outputs.box_deltas is not None:
        if targets.box_target is None:
            raise ValueError("the model has a box head but targets.box_target is None")
        deltas = torch.cat([permute_to_N_HWA_K(x, 4) for x in outputs.box_deltas], dim=1)  # (N, R, 4)
        flat = flat_window_index(pos_index, level_sizes, num_windows)
        pred = _at_least_f32(deltas[pos_index[:, IMAGE], flat])
        losses["loss_box"] = cfg.box_loss_weight * box_l1_loss(pred, targets.box_target) / norm

    # Masks: positives grouped by (level, window size) with a stable sort, so the rows of each group
    # keep their pos_index order; group sizes come from the mask targets' shapes (no device sync).
    num_masks = sum(0 if m is None else m.shape[0] for row in targets.mask_target for m in row)
    if len(targets.mask_target) != num_levels or any(len(row) != num_windows for row in targets.mask_target):
        raise ValueError(f"mask_target must be {num_levels} lists of {num_windows} entries")
    if num_masks != p:
        raise ValueError(f"mask_target holds {num_masks} masks for {p} positive windows")
    order = torch.argsort(pos_index[:, LEVEL] * num_windows + pos_index[:, WINDOW], stable=True)
    start = 0
    loss_mask = _at_least_f32(ref.new_zeros(()))
    for k in range(num_levels):
        for a in range(num_windows):
            m = targets.mask_target[k][a]
            count = 0 if m is None else m.shape[0]
            idx = pos_index[order[start : start + count]]
            start += count
            if dense:
                pred_masks = outputs.mask_logits[k][a]  # (N, V, U, H_k, W_k)
                pred = _at_least_f32(pred_masks[idx[:, IMAGE], :, :, idx[:, Y], idx[:, X]])  # (P_ka, V, U)
            else:  # called for empty groups too, so every mask conv stays in the graph (DDP)
                pred = _at_least_f32(window_mask_logits(k, a, idx[:, [IMAGE, Y, X]]))
            if m is None:
                m = pred.new_zeros(pred.shape)
            loss_mask = loss_mask + mask_bce_loss(pred, m, cfg.mask_pos_weight)
    losses["loss_mask"] = cfg.mask_loss_weight * loss_mask / norm
    return losses


def _at_least_f32(x: torch.Tensor) -> torch.Tensor:
    """Losses are computed in float32 (or float64) even for half-precision predictions."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
