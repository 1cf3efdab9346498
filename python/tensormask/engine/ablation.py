"""The ablation harness behind ``tensormask ablate``: train and evaluate model variants (the paper's
Tab. 1, Tab. 2a–d, §A.4) under one fixed budget, several seeds each, and tabulate mean ± std.

A variant is a config file (``configs/ablations/<name>.yaml``: the paper's R50 config with one head
change). Its run config is composed as ``variant file`` → ``overlay`` → dataset → budget → user
overrides. The overlay is a small-model CPU setting (``configs/ablations/cpu-tiny.yaml``) on a CPU and
nothing (the paper's config) on a GPU; it may not touch the keys the variants differ in
(:data:`REPRESENTATION_KEYS`).

Budget: every variant of a study runs the SAME number of iterations (a fixed-minutes budget would
favour the cheap heads). ``--iters N`` sets it; ``--budget-minutes M`` derives it from measured costs:
one warm-up plus timed iterations and timed inference per variant, then
``N = (M·60 − Σ runs · (val images · s/image + overhead)) / Σ runs · s/iteration`` (the timing itself is
not counted in ``M``). The measured costs and ``N`` are written to ``OUT/budget.json``; a resumed study
reuses the costs, so the same ``M`` gives the same ``N``.

Layout of ``OUT``::

    budget.json                 iterations and the measured costs
    <variant>/seed<k>/          the trainer's output (config.yaml, metrics.jsonl, checkpoint,
                                loss_curve.png), eval/ (coco_results.json, metrics.json), run.json
    results.json, results.md, results.png   written after every finished run

The measured costs depend on the machine's load at the time they are taken.

A run is complete when its ``run.json`` exists; completed runs are skipped, so an interrupted study
continues where it stopped. Variants whose composed configs differ only in ``model.inference`` (e.g.
box NMS vs mask-box NMS, §A.4) share the trained weights of the same seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import shutil
import time
from typing import Any, Callable

import numpy as np

from ..config import Config, _read_yaml, load_config, merge, to_dict
from .ablation_report import METRICS, plot_results, results_markdown
from .ablation_variants import ABLATION_DIR, GROUPS, Variant, groups_of, resolve_variants  # resolve_variants: re-exported
from .atomic_write import write_json, write_text
from .budget import scale_schedule, time_training
from .study_store import CLAIM_FILE, claim, code_version, read_curve, read_record, record_path, release, write_record

CPU_OVERLAY = os.path.join(ABLATION_DIR, "cpu-tiny.yaml")

# Keys the ablation variants differ in: an overlay setting them would erase the ablation.
REPRESENTATION_KEYS = (
    "model.head.mask_head", "model.head.upscale_lambda", "model.head.interpolation",
    "model.head.window_sizes", "model.head.box_head", "model.inference.nms_on",
)


RUN_FILE = "run.json"
BUDGET_FILE = "budget.json"
RUN_OVERHEAD_S = 5.0  # per run: model build, checkpoint, COCOeval (measured order of magnitude, CPU)


def _flat_keys(d: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k, v in d.items():
        keys += _flat_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
    return keys


def read_overlay(path: str | None) -> dict[str, Any]:
    """The overlay YAML as a nested dict (``{}`` for ``None``); rejects ``_base_`` and representation keys."""
    if path is None:
        return {}
    data = _read_yaml(path)
    if "_base_" in data:
        raise ValueError(f"--base-config {path!r}: an overlay may not have _base_ (it goes on top of each variant)")
    clash = sorted(set(_flat_keys(data)) & set(REPRESENTATION_KEYS))
    if clash:
        raise ValueError(f"--base-config {path!r} sets {', '.join(clash)}, which the variants differ in")
    return data


def dataset_overrides(train_json: str, val_json: str) -> dict[str, Any]:
    """``data.*`` paths (images next to the JSON, in ``images/``) and ``model.head.num_classes``."""
    paths = {}
    for key, js in (("train", train_json), ("val", val_json)):
        if not os.path.isfile(js):
            raise FileNotFoundError(f"--dataset/--val: annotation file {js!r} does not exist")
        paths[f"{key}_json"] = os.path.abspath(js)
        paths[f"{key}_images"] = os.path.join(os.path.dirname(os.path.abspath(js)), "images")
    with open(train_json) as f:
        num_classes = len(json.load(f)["categories"])
    return {"data": paths, "model": {"head": {"num_classes": num_classes}}}


def resolve_dataset(dataset: str, val: str | None) -> tuple[str, str]:
    """``(train_json, val_json)`` from ``--dataset DIR_OR_JSON [--val DIR_OR_JSON]``: a directory means
    ``DIR/annotations.json`` (the synthetic layout) or, with ``DIR/train`` and ``DIR/val``, both splits."""
    def ann(p: str) -> str:
        return os.path.join(p, "annotations.json") if os.path.isdir(p) else p

    if val is None and os.path.isdir(dataset) and os.path.isdir(os.path.join(dataset, "train")):
        return ann(os.path.join(dataset, "train")), ann(os.path.join(dataset, "val"))
    if val is None:
        raise ValueError("--val is required unless --dataset is a folder with train/ and val/")
    return ann(dataset), ann(val)


def compose(variant: Variant, overlay: dict[str, Any], data: dict[str, Any], iters: int, seed: int,
            out_dir: str, overrides: dict[str, Any] | None = None) -> Config:
    """The run config of ``variant``: variant file → overlay → dataset → budget → ``overrides``."""
    cfg = merge(load_config(variant.path, base=Config()), overlay)
    cfg = merge(cfg, data)
    solver = scale_schedule(cfg.solver, iters)
    if cfg.solver.eval_period > 0:  # the AP curve keeps its number of points
        solver["eval_period"] = max(1, round(cfg.solver.eval_period * iters / cfg.solver.max_iter))
    cfg = merge(cfg, {"solver": solver, "seed": seed, "output_dir": out_dir})
    return merge(cfg, overrides or {})


def train_key(cfg: Config) -> str:
    """A hash of everything that affects training (not ``model.inference``, not ``output_dir``)."""
    d = to_dict(cfg)
    d["model"].pop("inference")
    d.pop("output_dir")
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------ one run

def run_device(cfg: Config):
    """The torch device a run's inference uses: CUDA when ``cfg.device`` allows it and one exists."""
    import torch

    return torch.device("cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu")


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_evaluate(weights: str, cfg: Config, out_dir: str) -> tuple[dict[str, dict[str, float]], float]:
    """COCO metrics of ``weights`` on ``cfg.data.val_*`` with ``cfg``'s inference settings, and the
    inference time in seconds per image (model forward + post-processing, excluding COCOeval)."""
    from .checkpoint import load_inference_model
    from .evaluator import coco_evaluate, eval_dataset, run_inference

    device = run_device(cfg)
    model, _, _ = load_inference_model(weights, device, cfg)
    dataset = eval_dataset(cfg.data.val_json, cfg.data.val_images, cfg.data.test_min_size,
                           cfg.data.test_max_size, cfg.data.on_error)
    t0 = time.perf_counter()
    results = run_inference(model, dataset, device, progress=False)
    _sync(device)
    per_image = (time.perf_counter() - t0) / max(1, len(dataset))
    os.makedirs(out_dir, exist_ok=True)
    write_json(results, os.path.join(out_dir, "coco_results.json"), indent=None)
    metrics = coco_evaluate(cfg.data.val_json, results)
    write_json(metrics, os.path.join(out_dir, "metrics.json"), indent=None)
    return metrics, per_image


def _final_checkpoint(run_dir: str) -> str | None:
    from .checkpoint import latest_checkpoint

    return latest_checkpoint(run_dir) if os.path.isdir(run_dir) else None


def run_one(variant: Variant, cfg: Config, study_dir: str, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or reuse the weights of a finished run with the same :func:`train_key` and seed) and
    evaluate one variant × seed in ``cfg.output_dir``; writes and returns its ``run.json`` record."""
    from .trainer import train

    run_dir = cfg.output_dir
    key = train_key(cfg)
    weights, shared_from, train_s = None, None, 0.0
    for other in sorted(os.listdir(study_dir)):
        rec_path = os.path.join(study_dir, other, f"seed{cfg.seed}", RUN_FILE)
        if other != variant.name and os.path.isfile(rec_path):
            rec = json.load(open(rec_path))
            path = os.path.join(study_dir, rec.get("weights") or "")  # relative to the study folder
            if rec.get("train_key") == key and rec.get("weights") and os.path.isfile(path):
                weights, shared_from, train_s = path, other, rec["train_seconds"]
                break
    code = code_version()  # before training: edits or commits made while it trains are not its code
    if weights is None:
        if os.path.isdir(run_dir):  # an interrupted run: start it again from scratch (keep the claim)
            for entry in os.listdir(run_dir):
                if entry != CLAIM_FILE:
                    path = os.path.join(run_dir, entry)
                    shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
        t0 = time.perf_counter()
        weights = train(cfg, resume=False, progress=False)
        train_s = time.perf_counter() - t0
    else:
        os.makedirs(run_dir, exist_ok=True)
        log(f"  {variant.name} seed {cfg.seed}: reusing the weights of {shared_from} (only model.inference differs)")
    metrics, per_image = timed_evaluate(weights, cfg, os.path.join(run_dir, "eval"))
    record = {
        "variant": variant.name, "config_file": variant.path, "seed": cfg.seed, "iters": cfg.solver.max_iter,
        "train_key": key, "weights": os.path.relpath(weights, study_dir), "weights_shared_from": shared_from,
        "train_seconds": round(train_s, 2), "infer_seconds_per_image": round(per_image, 4),
        "mask": metrics.get("segm", {}), "box": metrics.get("bbox", {}),
        "code": code,
        "curve": read_curve(os.path.join(run_dir, "metrics.jsonl")) or read_curve(
            os.path.join(os.path.dirname(weights), "metrics.jsonl")),
    }
    write_json(record, os.path.join(run_dir, RUN_FILE))
    return record


# ------------------------------------------------------------------------------------------ budget

def measure_costs(variants: list[Variant], make_cfg: Callable[[Variant, int, str], Config], scratch: str,
                  timed_iters: int = 2, timed_images: int = 2) -> dict[str, dict[str, float]]:
    """Per variant: seconds per training iteration (after one warm-up iteration) and seconds per
    inference image (after one warm-up image), measured with the run's own config in ``scratch``."""
    from .checkpoint import load_inference_model
    from .evaluator import eval_dataset, infer_sample

    costs = {}
    for v in variants:
        out = os.path.join(scratch, v.name)
        cfg = make_cfg(v, 1 + timed_iters, out)
        per_iter, weights = time_training(cfg, out, timed_iters)
        device = run_device(cfg)
        model, _, _ = load_inference_model(weights, device, cfg)
        ds = eval_dataset(cfg.data.val_json, cfg.data.val_images, cfg.data.test_min_size, cfg.data.test_max_size)
        samples = [ds[i] for i in range(min(len(ds), timed_images + 1))]
        infer_sample(model, samples[0], device)
        t0 = time.perf_counter()
        for s in samples[1:]:
            infer_sample(model, s, device)
        _sync(device)
        per_image = (time.perf_counter() - t0) / max(1, len(samples) - 1)
        costs[v.name] = {"train_s_per_iter": round(per_iter, 4), "infer_s_per_image": round(per_image, 4)}
        shutil.rmtree(out, ignore_errors=True)
    return costs


def iterations_for_budget(costs: dict[str, dict[str, float]], seeds: int, val_images: int, minutes: float) -> int:
    """The common iteration count that fits ``minutes`` for all variants × ``seeds`` (see module doc)."""
    fixed = seeds * sum(c["infer_s_per_image"] * val_images + RUN_OVERHEAD_S for c in costs.values())
    per_iter = seeds * sum(c["train_s_per_iter"] for c in costs.values())
    iters = int((minutes * 60 - fixed) // per_iter)
    if iters < 1:
        need = (fixed + per_iter) / 60
        raise ValueError(f"--budget-minutes {minutes:g} is too small: one iteration of every run needs {need:.1f} min")
    return iters


# ------------------------------------------------------------------------------------------ summary

def _mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def summarize(records: list[dict[str, Any]], variants: list[Variant], meta: dict[str, Any]) -> dict[str, Any]:
    """``results.json`` content: per variant the runs and mean/std of every metric; per paper claim
    whose two variants are in ``variants``, the paired (same seed) mask-AP differences."""
    groups = groups_of(variants)
    present = {v.name for v in variants}
    by_variant: dict[str, list[dict[str, Any]]] = {v.name: [] for v in variants}
    for r in records:
        by_variant.setdefault(r["variant"], []).append(r)
    out_variants = {}
    for name, runs in by_variant.items():
        runs = sorted(runs, key=lambda r: r["seed"])
        stats: dict[str, Any] = {"seeds": [r["seed"] for r in runs], "n": len(runs)}
        if runs:
            for kind in ("mask", "box"):
                for m in METRICS:
                    stats[f"{kind}_{m}"] = _mean_std([r[kind].get(m, 0.0) for r in runs])
            stats["train_seconds"] = _mean_std([r["train_seconds"] for r in runs])
            stats["infer_ms_per_image"] = _mean_std([1000 * r["infer_seconds_per_image"] for r in runs])
        out_variants[name] = {"config_file": next((v.path for v in variants if v.name == name), None),
                              "stats": stats, "runs": runs}
    comparisons = []
    for g in groups:
        for c in GROUPS[g].comparisons:
            if not {c.baseline, c.better} <= present:
                continue
            a = {r["seed"]: r["mask"]["AP"] for r in by_variant.get(c.baseline, [])}
            b = {r["seed"]: r["mask"]["AP"] for r in by_variant.get(c.better, [])}
            common = sorted(set(a) & set(b))
            diffs = [b[s] - a[s] for s in common]
            mean, std = _mean_std(diffs) if diffs else (float("nan"), float("nan"))
            # beyond noise: the mean paired difference exceeds 2 standard errors (needs ≥ 2 seeds)
            clear = len(diffs) > 1 and abs(mean) > 2 * std / math.sqrt(len(diffs))
            comparisons.append({"group": g, "baseline": c.baseline, "better": c.better, "claim": c.claim,
                                "paper_delta": c.paper_delta, "seeds": common, "delta_mean": mean, "delta_std": std,
                                "holds": bool(diffs) and mean > 0, "beyond_noise": clear})
    shown = {g: {**dataclasses.asdict(GROUPS[g]), "variants": [v for v in GROUPS[g].variants if v in present]}
             for g in groups}
    return {"meta": meta, "groups": shown,
            "variants": out_variants, "comparisons": comparisons}


def write_results(out: str, records: list[dict[str, Any]], variants: list[Variant],
                  meta: dict[str, Any]) -> dict[str, Any]:
    """Write ``results.json``, ``results.md`` and ``results.png`` in ``out``; returns the summary."""
    summary = summarize(records, variants, meta)
    write_json(summary, os.path.join(out, "results.json"))
    write_text(results_markdown(summary), os.path.join(out, "results.md"))
    plot_results(summary, os.path.join(out, "results.png"))
    return summary


# ------------------------------------------------------------------------------------------ study

def machine_description() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()} {os.cpu_count()} CPU cores, {gpu}, torch {torch.__version__}"


def run_study(variants: list[Variant], train_json: str, val_json: str, out: str,
              seeds: int = 3, iters: int | None = None, budget_minutes: float | None = None,
              overlay_path: str | None = CPU_OVERLAY, overrides: dict[str, Any] | None = None,
              log: Callable[[str], None] = print, record_dir: str | None = None) -> dict[str, Any]:
    """Train and evaluate every variant × seed (seed-major order, so an interrupted study has every
    variant at equal seeds) and write the results; see the module docstring. Returns the summary.

    ``record_dir``: a folder (kept in git) of finished runs' records (:mod:`.study_store`): runs recorded
    there are skipped, each run finished here is recorded there, the results are written there too, and
    runs claimed by another live process working on the same ``out`` are left to it."""
    if seeds < 1:
        raise ValueError(f"--seeds must be ≥ 1, got {seeds}")
    if (iters is None) == (budget_minutes is None):
        raise ValueError("give exactly one of --iters and --budget-minutes")
    if iters is not None and iters < 1:
        raise ValueError(f"--iters must be ≥ 1, got {iters}")
    os.makedirs(out, exist_ok=True)
    overlay = read_overlay(overlay_path)
    data = dataset_overrides(train_json, val_json)

    def make_cfg(v: Variant, n: int, run_dir: str, seed: int = 0) -> Config:
        return compose(v, overlay, data, n, seed, run_dir, overrides)

    budget_path = os.path.join(out, BUDGET_FILE)
    if iters is None:
        budget = json.load(open(budget_path)) if os.path.isfile(budget_path) else {}
        costs = budget.get("costs", {})
        missing = [v for v in variants if v.name not in costs]
        if missing:  # measured once per study folder; a resumed study reuses them (and so its iterations)
            log(f"budget: timing {len(missing)} variants (1 warm-up + 2 iterations, inference of 2 images each)")
            costs.update(measure_costs(missing, make_cfg, os.path.join(out, "_calibration")))
            write_json({"costs": costs, "run_overhead_s": RUN_OVERHEAD_S}, budget_path)
        with open(val_json) as f:
            n_val = len(json.load(f)["images"])
        costs = {v.name: costs[v.name] for v in variants}
        iters = iterations_for_budget(costs, seeds, n_val, budget_minutes)
        write_json({"budget_minutes": budget_minutes, "seeds": seeds, "iters": iters, "val_images": n_val,
                    "run_overhead_s": RUN_OVERHEAD_S, "costs": {**budget.get("costs", {}), **costs}}, budget_path)
        log(f"budget: {budget_minutes:g} min → {iters} iterations per run (costs in {budget_path})")
    note = (f"from --budget-minutes {budget_minutes:g}, same iterations for every variant"
            if budget_minutes is not None else "--iters")
    meta = {"iters": iters, "budget_minutes": budget_minutes, "budget_note": note, "seeds": list(range(seeds)),
            "train_json": train_json, "val_json": val_json, "overlay": overlay_path,
            "overrides": overrides or {}, "machine": machine_description(),
            "device": compose(variants[0], overlay, data, iters, 0, out, overrides).device,
            "planned_runs": len(variants) * seeds}

    def finished(v: Variant, seed: int) -> dict[str, Any] | None:
        """The record of a finished run (the record folder first, then the study folder), or None."""
        for path in ([record_path(record_dir, v.name, seed)] if record_dir else []) + [
                os.path.join(out, v.name, f"seed{seed}", RUN_FILE)]:
            rec = read_record(path)
            if rec is not None:
                if rec.get("iters") != iters:
                    raise ValueError(f"{path} was run with {rec.get('iters')} iterations, this study uses "
                                     f"{iters}: use another --out / --record")
                return rec
        return None

    def publish() -> dict[str, Any]:
        done = [r for s in range(seeds) for v in variants if (r := finished(v, s)) is not None]
        meta["finished_runs"] = len(done)
        meta["study_seconds"] = round(time.perf_counter() - t_study, 1)
        summary = write_results(out, done, variants, meta)
        if record_dir:
            write_results(record_dir, done, variants, meta)
            from .study_store import plot_curves, write_convergence

            plot_curves(done, os.path.join(record_dir, "curves.png"))
            write_convergence(record_dir)
        return summary

    n_done = 0
    t_study = time.perf_counter()
    for seed in range(seeds):
        for v in variants:
            run_dir = os.path.join(out, v.name, f"seed{seed}")
            rec = finished(v, seed)
            if rec is not None:
                if record_dir and read_record(record_path(record_dir, v.name, seed)) is None:
                    write_record(record_dir, rec)
                n_done += 1
                log(f"[{n_done}/{meta['planned_runs']}] {v.name} seed {seed}: done already, skipped")
                continue
            if not claim(run_dir):
                log(f"  {v.name} seed {seed}: another process is running it, skipped")
                continue
            try:
                cfg = make_cfg(v, iters, run_dir, seed)
                t0 = time.perf_counter()
                rec = run_one(v, cfg, out, log)
                if record_dir:
                    write_record(record_dir, rec)
            finally:
                release(run_dir)
            n_done += 1
            log(f"[{n_done}/{meta['planned_runs']}] {v.name} seed {seed}: "
                f"mask AP {rec['mask'].get('AP', 0):.2f}, box AP {rec['box'].get('AP', 0):.2f} "
                f"({time.perf_counter() - t0:.0f} s)")
            publish()
    return publish()


def default_overlay(base_config: str | None, device_auto: str = "auto") -> str | None:
    """``--base-config``: a path, ``none`` (the paper's config as is), or ``auto`` (default):
    :data:`CPU_OVERLAY` without CUDA, none with CUDA."""
    if base_config in (None, "auto"):
        import torch

        return None if torch.cuda.is_available() and device_auto != "cpu" else CPU_OVERLAY
    if base_config == "none":
        return None
    if not os.path.isfile(base_config):
        candidate = os.path.join(ABLATION_DIR, base_config)
        if os.path.isfile(candidate):
            return candidate
        raise FileNotFoundError(f"--base-config {base_config!r} does not exist")
    return base_config


__all__ = ["GROUPS", "REPRESENTATION_KEYS", "CPU_OVERLAY", "Variant", "resolve_variants", "resolve_dataset",
           "read_overlay", "compose", "train_key", "run_study", "iterations_for_budget", "default_overlay",
           "results_markdown"]
