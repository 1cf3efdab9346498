"""Where an ablation study keeps what survives it: one small JSON record per finished (variant, seed),
the AP curve of each run, and claims that let several processes share one study.

A study folder (``tensormask ablate --out``) holds checkpoints and is not committed. A *record folder*
(``--record DIR``, e.g. ``docs/ablations/table2-cpu-demo``) holds, per finished run,
``DIR/<variant>/seed<k>.json``: the run's ``run.json`` record plus its AP curve (the periodic
evaluations of ``metrics.jsonl``). Those files are small and go into git as each run finishes, so the
study continues from them on a fresh clone or another machine: a run whose record exists is skipped.

Claims let ``N`` processes (one thread each) work through one study: a process claims a run by
creating ``<run dir>/.claim`` exclusively (``O_EXCL``) with its host and pid, and skips runs another
live process has claimed. A claim whose process is gone (same host, pid not running) is taken over.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from .atomic_write import save_figure, write_json, write_text

CLAIM_FILE = ".claim"


def record_path(record_dir: str, variant: str, seed: int) -> str:
    """``record_dir/<variant>/seed<seed>.json``."""
    return os.path.join(record_dir, variant, f"seed{seed}.json")


def read_record(path: str) -> dict[str, Any] | None:
    """A run record, or None when ``path`` does not exist. A record that is not a JSON object with
    ``variant``, ``seed`` and ``iters`` raises ValueError naming the file."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            rec = json.load(f)
    except (OSError, ValueError, RecursionError) as e:
        raise ValueError(f"{path}: not a readable run record ({type(e).__name__}: {e})") from None
    if not isinstance(rec, dict) or not {"variant", "seed", "iters"} <= set(rec):
        raise ValueError(f"{path}: not a run record (needs 'variant', 'seed', 'iters')")
    return rec


def write_record(record_dir: str, rec: dict[str, Any]) -> str:
    """Write ``rec`` to its place in ``record_dir`` atomically; returns the path."""

    path = record_path(record_dir, rec["variant"], rec["seed"])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_json(rec, path)
    return path


def code_version() -> str | None:
    """The git commit of the code running (``abc1234``, ``+dirty`` with uncommitted changes in the
    package), or None outside a git checkout: runs of one seed compare fairly only on the same code."""
    import subprocess

    pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", pkg, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", pkg, "status", "--porcelain", "--", "."], capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def read_curve(metrics_jsonl: str) -> list[dict[str, float]]:
    """The periodic evaluations of a training run's ``metrics.jsonl``:
    ``[{"iteration", "mask_AP", "box_AP"}, ...]`` in iteration order (empty without any)."""
    curve = {}
    if not os.path.isfile(metrics_jsonl):
        return []
    with open(metrics_jsonl) as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            if "eval/segm_AP" in r:
                curve[r["iteration"]] = {"iteration": r["iteration"], "mask_AP": r["eval/segm_AP"],
                                         "box_AP": r.get("eval/bbox_AP", float("nan"))}
    return [curve[k] for k in sorted(curve)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(run_dir: str) -> bool:
    """Claim ``run_dir`` for this process. False when another live process holds it; a claim left by a
    process that is gone (same host) is taken over."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, CLAIM_FILE)
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                with open(path) as f:
                    holder = json.load(f)
            except (OSError, ValueError):
                holder = {}
            if holder == me:
                return True
            if holder.get("host") == me["host"] and isinstance(holder.get("pid"), int) and _alive(holder["pid"]):
                return False
            os.unlink(path)  # a stale claim (or unreadable): take it over
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return True
    return False


def release(run_dir: str) -> None:
    """Remove this process's claim on ``run_dir`` (if any)."""
    path = os.path.join(run_dir, CLAIM_FILE)
    if os.path.isfile(path):
        os.unlink(path)


def plot_curves(records: list[dict[str, Any]], path: str, seed: int | None = None) -> str | None:
    """Mask AP against the iteration, one line per variant (``seed``, default the lowest seed with a
    curve for each variant); the last fifth of the schedule shaded. Atomic write; None without curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen: dict[str, dict[str, Any]] = {}
    for r in sorted(records, key=lambda r: r["seed"]):
        if r.get("curve") and (seed is None or r["seed"] == seed):
            chosen.setdefault(r["variant"], r)
    if not chosen:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    iters = max(r["iters"] for r in chosen.values())
    ax.axvspan(0.8 * iters, iters, color="0.92", label="last fifth")
    for name, r in sorted(chosen.items()):
        pts = [(p["iteration"], p["mask_AP"]) for p in r["curve"]]
        ax.plot(*zip(*pts), marker="o", markersize=3, label=f"{name} (seed {r['seed']})")
    ax.set_xlabel("iteration")
    ax.set_ylabel("mask AP (validation)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    return path


def last_fifth_gain(rec: dict[str, Any]) -> float | None:
    """Mask AP at the end of the schedule minus mask AP at the last curve point at or before 80% of it
    (None without both points): ≈ 0 or below means the run no longer rose over the last fifth."""
    curve = rec.get("curve") or []
    before = [p for p in curve if p["iteration"] <= 0.8 * rec["iters"]]
    if not before or curve[-1]["iteration"] != rec["iters"]:
        return None
    return curve[-1]["mask_AP"] - before[-1]["mask_AP"]


def convergence_markdown(records: list[dict[str, Any]]) -> str:
    """A table of every run's AP curve end: mask AP at 80% of the schedule, at the end, and the gain over
    the last fifth (the convergence criterion: no longer rising)."""
    lines = ["## Convergence: mask AP over the last fifth of the schedule", "",
             "| variant | seed | iterations | AP at 80% | AP at the end | gain over the last fifth |",
             "|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: (r["variant"], r["seed"])):
        gain = last_fifth_gain(r)
        if gain is None:
            lines.append(f"| {r['variant']} | {r['seed']} | {r['iters']} | – | – | – (no curve) |")
            continue
        end = r["curve"][-1]["mask_AP"]
        lines.append(f"| {r['variant']} | {r['seed']} | {r['iters']} | {end - gain:.1f} | {end:.1f} | {gain:+.1f} |")
    return "\n".join(lines) + "\n"


def collect(record_dir: str) -> list[dict[str, Any]]:
    """Every run record under ``record_dir`` (``<variant>/seed<k>.json``)."""
    out = []
    for variant in sorted(os.listdir(record_dir)):
        folder = os.path.join(record_dir, variant)
        if os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                if name.startswith("seed") and name.endswith(".json"):
                    out.append(read_record(os.path.join(folder, name)))
    return out


def write_convergence(record_dir: str) -> str:
    """``record_dir/convergence.md`` from the records there (atomic); returns the path."""

    path = os.path.join(record_dir, "convergence.md")
    write_text(convergence_markdown(collect(record_dir)), path)
    return path


__all__ = ["code_version", "convergence_markdown", "collect", "write_convergence", "record_path", "read_record", "write_record", "read_curve", "claim", "release", "plot_curves",
           "last_fifth_gain"]
