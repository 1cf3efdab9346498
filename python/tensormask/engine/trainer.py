"""Training loop: SGD with warm-up and step decay, AMP (CUDA, and bf16 on CPUs that run it natively),
gradient clipping, tqdm progress, ``metrics.jsonl`` (and TensorBoard event files when installed), atomic
checkpoints with bit-identical resume on CPU, and DDP under ``torchrun``.

Determinism. The batches are a pure function of (seed, iteration): the image stream is a sequence of
per-epoch permutations seeded by (seed, epoch), image j of iteration i goes to rank
``j // (batch / world)``, and each image's augmentation draws from a generator seeded by
(seed, i, j). So a resumed run sees exactly the batches the uninterrupted run would have seen,
whatever the number of DataLoader workers.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..config import Config, merge, save_config, to_dict
from ..data import CocoDataset, Sample
from ..data.transforms import build_transforms
from ..modeling.targets import InstanceTargets
from ..modeling.tensormask import TensorMask
from . import distributed as dist_utils
from .budget import TimeLimit
from .checkpoint import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .event_log import EventLog

log = logging.getLogger("tensormask.train")


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (splitmix64 steps): independent streams per (seed, i, j)."""
    x = 0x9E3779B97F4A7C15
    for v in values:
        x = (x ^ (v & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
    return x & 0x7FFFFFFFFFFFFFFF


class IterationBatchSampler(Sampler):
    """Yields, for iterations ``start_iter..max_iter-1``, this rank's share of the global batch as a
    list of ``(dataset index, augmentation seed)``."""

    def __init__(self, size: int, batch: int, seed: int, start_iter: int, max_iter: int, rank: int = 0, world: int = 1):
        if batch % world != 0:
            raise ValueError(f"solver.ims_per_batch={batch} must be divisible by the number of processes ({world})")
        if size == 0:
            raise ValueError("the training dataset is empty")
        self.size, self.batch, self.seed = size, batch, seed
        self.start_iter, self.max_iter, self.rank, self.per_rank = start_iter, max_iter, rank, batch // world
        self._perm_epoch, self._perm = -1, None

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, self.size)
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(_mix(self.seed, epoch))
            self._perm, self._perm_epoch = torch.randperm(self.size, generator=g), epoch
        return int(self._perm[offset])

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for it in range(self.start_iter, self.max_iter):
            first = it * self.batch + self.rank * self.per_rank
            yield [(self._index(first + j), _mix(self.seed, it, self.rank * self.per_rank + j)) for j in range(self.per_rank)]

    def __len__(self) -> int:
        return self.max_iter - self.start_iter


class AugmentedSamples(Dataset):
    """``dataset[(index, seed)]`` = the image at ``index`` (or the next loadable one) augmented with a
    generator seeded by ``seed``."""

    def __init__(self, dataset: CocoDataset, transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> Sample:
        index, seed = item
        for attempt in range(len(self.dataset)):
            sample = self.dataset.load((index + attempt) % len(self.dataset))
            if sample is not None:
                return self.transform(sample, generator=torch.Generator().manual_seed(seed))
        raise RuntimeError(f"no loadable image in {self.dataset.json_path} (skipped: {dict(self.dataset.skipped)})")


def to_model_inputs(samples: list[Sample]) -> tuple[list[torch.Tensor], list[InstanceTargets]]:
    """Images and ground truth of a batch of samples for :class:`TensorMask`."""
    images, targets = [], []
    for s in samples:
        crowd = s.crowd_masks.any(dim=0) if s.crowd_masks.shape[0] > 0 else None
        images.append(s.image)
        targets.append(InstanceTargets(s.masks, s.boxes, s.labels, crowd, s.polygons))
    return images, targets


LR_SCHEDULES = ("step", "linear", "cosine")


def check_lr_schedule(cfg) -> None:
    """Raise ``ValueError`` for an unknown ``solver.lr_schedule``."""
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"solver.lr_schedule must be one of {', '.join(LR_SCHEDULES)}; got {cfg.lr_schedule!r}")


def lr_factor(it: int, cfg) -> float:
    """The LR multiplier at iteration ``it`` of ``cfg`` (a :class:`~tensormask.config.SolverConfig`):
    linear warm-up from ``warmup_factor`` over ``warmup_iters``, times the decay of ``lr_schedule`` —
    ``gamma`` per passed step (``step``), ``1 − it/max_iter`` (``linear``) or
    ``(1 + cos(π·it/max_iter)) / 2`` (``cosine``)."""
    warm = 1.0
    if it < cfg.warmup_iters:
        alpha = it / cfg.warmup_iters
        warm = cfg.warmup_factor * (1 - alpha) + alpha
    if cfg.lr_schedule == "step":
        return warm * cfg.gamma ** bisect.bisect_right(list(cfg.steps), it)
    check_lr_schedule(cfg)
    progress = min(1.0, it / max(1, cfg.max_iter))
    if cfg.lr_schedule == "linear":
        return warm * (1.0 - progress)
    return warm * 0.5 * (1.0 + math.cos(math.pi * progress))


AMP_MODES = ("none", "bf16", "fp16")


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``solver.amp`` on ``device``; ``None`` = float32.

    bf16 runs on CUDA and on CPUs where oneDNN has bf16 kernels (AVX-512/AMX; the demo's tiny model
    trains ~1.35× faster there); on other CPUs it would be emulated, slower than float32, so training
    stays float32 with a warning. fp16 is CUDA only (a CPU run of an fp16 config trains in float32).
    """
    if amp not in AMP_MODES:
        raise ValueError(f"solver.amp must be one of {', '.join(AMP_MODES)}; got {amp!r}")
    if amp == "none":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if amp == "bf16" else torch.float16
    if amp == "bf16" and device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    log.warning("solver.amp=%s: not supported on this %s, training in float32", amp, device.type)
    return None


def build_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """SGD with momentum (or AdamW); the learning rate follows the linear scaling rule
    (``base_lr · ims_per_batch / reference_batch``); no weight decay on normalisation parameters."""
    s = cfg.solver
    lr = s.base_lr * s.ims_per_batch / s.reference_batch
    norm_types = (torch.nn.BatchNorm2d, torch.nn.GroupNorm, torch.nn.LayerNorm)
    decay, no_decay = [], []
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if p.requires_grad:
                (no_decay if isinstance(module, norm_types) else decay).append(p)
    groups = [{"params": decay, "weight_decay": s.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": s.weight_decay_norm})
    if s.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=s.momentum)
    if s.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"solver.optimizer must be 'sgd' or 'adamw', got {s.optimizer!r}")


class MetricsWriter:
    """Appends one JSON object per logged iteration to ``metrics.jsonl`` (main process only) and the
    same scalars to TensorBoard event files in that folder when ``tensorboard`` is installed
    (:class:`~tensormask.engine.event_log.EventLog`; ``purge_step``: the first iteration of a resumed run)."""

    def __init__(self, path: str, enabled: bool, purge_step: int | None = None):
        self.path, self.enabled = path, enabled
        self.events = EventLog(os.path.dirname(os.path.abspath(path)), enabled, purge_step)

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
            self.events.write(record)

    def close(self) -> None:
        self.events.close()


def _check_resume_config(saved: dict[str, Any], cfg: Config, path: str) -> None:
    if saved.get("model") != to_dict(cfg.model):
        raise ValueError(
            f"cannot resume from {path}: it was trained with a different model config "
            "(compare its 'config' entry with yours, or start a new output_dir)"
        )


def train(cfg: Config, resume: bool = False, progress: bool = True, time_limit_s: float | None = None) -> str:
    """Train ``cfg`` and return the path of the final checkpoint.

    Args:
        cfg: the run's config; ``cfg.output_dir`` receives checkpoints, ``metrics.jsonl``,
            ``config.yaml`` and ``loss_curve.png``.
        resume: continue from the newest checkpoint in ``output_dir`` (bit-identical on CPU).
        progress: show a tqdm progress bar (main process).
        time_limit_s: end training within this many seconds (single process): timed as it trains, the
            schedule is shortened, LR steps scaled, when ``solver.max_iter`` does not fit
            (:class:`tensormask.engine.budget.TimeLimit`); the saved config records the schedule run.
    """
    from tqdm import tqdm

    device = dist_utils.init_from_env(cfg.device)
    if time_limit_s is not None and dist_utils.is_distributed():
        raise ValueError("a training time limit is for single-process runs (ranks would disagree on the schedule)")
    limit = TimeLimit(time_limit_s, cfg.solver) if time_limit_s is not None else None
    main = dist_utils.is_main_process()
    s = cfg.solver
    check_lr_schedule(s)
    out = cfg.output_dir
    os.makedirs(out, exist_ok=True)
    if not cfg.data.train_json:
        raise ValueError("data.train_json is not set: give a COCO-format annotation file")
    dataset = CocoDataset(cfg.data.train_json, cfg.data.train_images, on_error=cfg.data.on_error,
                          cache=cfg.data.cache_train_images)
    if dataset.num_classes != cfg.model.head.num_classes:
        raise ValueError(
            f"model.head.num_classes={cfg.model.head.num_classes} but {cfg.data.train_json} has "
            f"{dataset.num_classes} categories; set model.head.num_classes={dataset.num_classes}"
        )
    transform = build_transforms(
        True, tuple(cfg.data.train_min_size), cfg.data.train_max_size, flip_prob=cfg.data.flip_prob
    )

    torch.manual_seed(cfg.seed)
    model = TensorMask(cfg.model).to(device)
    optimizer = build_optimizer(model, cfg)
    # reads ``s`` when called: a time limit may shorten the schedule during the run
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, s))
    amp_dtype = autocast_dtype(s.amp, device)
    use_amp = amp_dtype is not None
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    start_iter = 0
    if resume:
        path = latest_checkpoint(out)
        if path is None:
            log.warning("--resume: no checkpoint in %s, starting from scratch", out)
        else:
            state = load_checkpoint(path, map_location=device)
            _check_resume_config(state.get("config", {}), cfg, path)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])
            start_iter = int(state["iteration"])
            if main:
                print(f"resumed from {path} at iteration {start_iter}")

    ddp_model = model
    if dist_utils.is_distributed():
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    sampler = IterationBatchSampler(
        len(dataset), s.ims_per_batch, cfg.seed, start_iter, s.max_iter, dist_utils.rank(), dist_utils.world_size()
    )
    loader = DataLoader(
        AugmentedSamples(dataset, transform),
        batch_sampler=sampler,
        num_workers=cfg.data.num_workers,
        collate_fn=list,
        persistent_workers=False,
    )

    if main:
        save_config(cfg, os.path.join(out, "config.yaml"))
    writer = MetricsWriter(os.path.join(out, "metrics.jsonl"), main, purge_step=start_iter or None)
    meta = {
        "category_names": list(dataset.category_names),
        "contiguous_to_category_id": [int(c) for c in dataset.contiguous_to_category_id],
    }

    def checkpoint(iteration: int) -> str | None:
        if not main:
            return None
        bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
        if bad:  # never replace a good checkpoint with diverged weights
            raise FloatingPointError(
                f"non-finite weights after iteration {iteration} ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}): "
                f"checkpoint not written; the last good one is {latest_checkpoint(out) or 'none'}"
            )
        return save_checkpoint(
            out,
            iteration,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": rng_state(),
                "iteration": iteration,
                "config": to_dict(cfg),
                "dataset": meta,
            },
            keep_last=s.keep_last,
        )

    ddp_model.train()
    bar = tqdm(total=s.max_iter, initial=start_iter, disable=not (main and progress), desc="train", dynamic_ncols=True)
    last_path = None
    t_start = time.perf_counter()
    it = start_iter
    for it, samples in enumerate(loader, start=start_iter):
        images, targets = to_model_inputs(samples)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
            losses = ddp_model(images, targets)
        total = sum(losses.values())
        if not torch.isfinite(total):
            raise FloatingPointError(
                f"non-finite loss at iteration {it}: " + ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        if s.clip_grad_norm > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        done = it + 1
        if done % s.log_period == 0 or done == s.max_iter:
            values = {k: v.item() for k, v in losses.items()}
            values["loss"] = total.item()
            values = dist_utils.all_reduce_mean(values, device)
            record = {"iteration": done, "lr": optimizer.param_groups[0]["lr"], **values,
                      "time": round(time.perf_counter() - t_start, 3)}
            writer.write(record)
            bar.set_postfix({k: f"{v:.3f}" for k, v in values.items() if k.startswith("loss")}, refresh=False)
        bar.update(1)
        refit = limit.after_iteration(done, s) if limit is not None else None
        if refit is not None:
            cfg = merge(cfg, {"solver": refit})
            s = cfg.solver
            bar.total = s.max_iter
            save_config(cfg, os.path.join(out, "config.yaml"))
            if s.max_iter == done:
                bar.write(f"      time limit reached: training ends at iteration {done}")
        if limit is not None and done == limit.measure_to:  # single process: this is the main one
            how = (f"LR steps scaled to {list(s.steps)}" if s.lr_schedule == "step"
                   else f"{s.lr_schedule} LR decay to 0 at the end") + "; refitted as it trains"
            fits = (f"{s.max_iter} of {limit.full.max_iter} iterations fit the time limit ({how})" if refit else
                    f"all {s.max_iter} iterations fit the time limit")
            bar.write(f"      this machine: {limit.seconds_per_iter:.2f} s/iteration → {fits}")
        if s.checkpoint_period > 0 and done % s.checkpoint_period == 0 and done < s.max_iter:
            last_path = checkpoint(done)
        if s.eval_period > 0 and cfg.data.val_json and (done % s.eval_period == 0 or done == s.max_iter):
            evaluate_during_training(model, cfg, done, device, writer)
            ddp_model.train()
        if done >= s.max_iter:  # a time limit shortened the run
            break
    bar.close()
    writer.close()
    if start_iter < s.max_iter:
        last_path = checkpoint(s.max_iter)
    elif main:
        last_path = latest_checkpoint(out)
    if main:
        plot_losses(os.path.join(out, "metrics.jsonl"), os.path.join(out, "loss_curve.png"))
    dist_utils.barrier()
    return last_path or ""


def evaluate_during_training(model: TensorMask, cfg: Config, iteration: int, device: torch.device,
                             writer: MetricsWriter) -> dict[str, dict[str, float]]:
    """The periodic evaluation hook: COCO AP on ``data.val_json`` written to ``eval_<iteration>/``
    and, as ``eval/segm_AP`` etc., to ``metrics.jsonl``."""
    from .evaluator import evaluate

    model.eval()
    metrics = evaluate(model, cfg.data.val_json, cfg.data.val_images,
                       os.path.join(cfg.output_dir, f"eval_{iteration:07d}"), cfg.data.test_min_size,
                       cfg.data.test_max_size, device, progress=False, on_error=cfg.data.on_error)
    if metrics:
        writer.write({"iteration": iteration, **{f"eval/{t}_{k}": v for t, m in metrics.items() for k, v in m.items()}})
    return metrics


def plot_losses(metrics_path: str, png_path: str) -> str | None:
    """Plot every ``loss*`` series of ``metrics.jsonl`` against the iteration (matplotlib, Agg)."""
    if not os.path.exists(metrics_path):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in open(metrics_path) if line.strip()]
    if not records:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in sorted({k for r in records for k in r if k.startswith("loss")}):
        pts = [(r["iteration"], r[key]) for r in records if key in r and math.isfinite(r[key])]
        if pts:
            ax.plot(*zip(*pts), label=key, linewidth=2 if key == "loss" else 1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path
