"""The human-readable outputs of an ablation study: ``results.md`` (one table per group, mean ± std
over seeds, then the paper's claims as paired differences) and ``results.png`` (mask AP bars), both
from the summary dict of :func:`tensormask.engine.ablation.summarize`."""

from __future__ import annotations

from typing import Any

import numpy as np

from .atomic_write import save_figure

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # the COCOeval metrics a study tabulates


def _pm(ms: tuple[float, float] | list[float], digits: int = 1) -> str:
    return f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}"


def results_markdown(summary: dict[str, Any]) -> str:
    """The tables of ``results.md``: one per group (mean ± std over seeds) and the paper's claims."""
    meta = summary["meta"]
    lines = [f"# Ablation results ({meta.get('finished_runs', 0)}/{meta.get('planned_runs', 0)} runs)", "",
             f"- iterations per run: {meta.get('iters')} ({meta.get('budget_note', '')})",
             f"- seeds: {meta.get('seeds')}; dataset: {meta.get('train_json')} → {meta.get('val_json')}",
             f"- overlay: {meta.get('overlay') or 'none (paper config)'}; device: {meta.get('device')}; "
             f"machine: {meta.get('machine')}", ""]
    # 2 decimals while every mean mask AP is below 5 (short budgets), else the paper's 1
    aps = [v["stats"]["mask_AP"][0] for v in summary["variants"].values() if v["stats"]["n"]]
    d = 2 if aps and max(aps) < 5 else 1
    head = ("| variant | seeds | mask AP | AP50 | AP75 | APs | APm | APl | box AP | train s | infer ms/img |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|")
    groups = summary["groups"] or {"all": {"title": "all variants", "variants": list(summary["variants"])}}
    for g, group in groups.items():
        lines += [f"## {group['title']}", "", head]
        for name in group["variants"]:
            st = summary["variants"].get(name, {}).get("stats", {"n": 0})
            if not st["n"]:
                lines.append(f"| {name} | 0 | – | – | – | – | – | – | – | – | – |")
                continue
            cells = [_pm(st[f"mask_{m}"], d) for m in METRICS] + [_pm(st["box_AP"], d), _pm(st["train_seconds"], 0),
                                                                _pm(st["infer_ms_per_image"], 0)]
            lines.append(f"| {name} | {st['n']} | " + " | ".join(cells) + " |")
        lines.append("")
    if summary["comparisons"]:
        lines += ["## The paper's claims (paired by seed: Δ mask AP = better − baseline)", "",
                  "| group | better | baseline | paper Δ | Δ here (mean ± std) | seeds | ordering holds |",
                  "|---|---|---|---|---|---|---|"]
        for c in summary["comparisons"]:
            delta = "–" if not c["seeds"] else f"{c['delta_mean']:+.{d}f} ± {c['delta_std']:.{d}f}"
            verdict = "–" if not c["seeds"] else ("yes" if c["holds"] else "no") + (
                "" if c["beyond_noise"] else " (within noise)")
            lines.append(f"| {c['group']} | {c['better']} | {c['baseline']} | {c['paper_delta']:+.1f} | {delta} | "
                         f"{len(c['seeds'])} | {verdict} |")
        lines.append("")
    return "\n".join(lines)


def plot_results(summary: dict[str, Any], path: str) -> None:
    """Bar chart of mask AP (mean, error bar = std over seeds), one panel per group; atomic write."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = summary["groups"] or {"all": {"title": "all variants", "variants": list(summary["variants"])}}
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups) + 1, 4.2), squeeze=False)
    for ax, (g, group) in zip(axes[0], groups.items()):
        names = list(group["variants"])
        stats = [summary["variants"].get(n, {}).get("stats", {"n": 0}) for n in names]
        means = [s["mask_AP"][0] if s["n"] else 0.0 for s in stats]
        stds = [s["mask_AP"][1] if s["n"] else 0.0 for s in stats]
        ax.bar(range(len(names)), means, yerr=stds, capsize=4, color=plt.cm.tab10(np.arange(len(names)) % 10))
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
        ax.set_title(g, fontsize=9)
        ax.set_ylabel("mask AP")
    fig.tight_layout()
    save_figure(fig, path)


__all__ = ["results_markdown", "plot_results"]
