"""``tensormask ablate``: train and evaluate the paper's ablation variants (Tab. 1, Tab. 2a–d, §A.4) or
any config files under one fixed budget, several seeds each; writes OUT/results.{json,md,png}.

Example (CPU, synthetic benchmark)::

    tensormask ablate --variants table1,table2a,table2b,table2c,table2d,a4 \\
        --dataset datasets/synthetic-benchmark --out out/ablations --seeds 3 --budget-minutes 60

Every variant gets the same number of iterations (``--iters``, or derived from ``--budget-minutes``
for the whole study). Completed runs (``OUT/<variant>/seed<k>/run.json``) are skipped: re-run the same
command to resume.
"""

from __future__ import annotations

import argparse

from .cli_utils import run_command


def build_parser() -> argparse.ArgumentParser:
    from .engine.ablation_variants import GROUPS

    p = argparse.ArgumentParser(prog="tensormask ablate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--variants", help="comma-separated groups (" + ", ".join(GROUPS) + ") "
                                          "or variant names of configs/ablations/")
    which.add_argument("--configs", help="comma-separated variant config files")
    p.add_argument("--dataset", required=True,
                   help="COCO train JSON (images in images/ beside it), a folder with annotations.json, "
                        "or a folder with train/ and val/")
    p.add_argument("--val", help="validation JSON or folder (default: DATASET/val)")
    p.add_argument("--out", required=True, help="study folder: one run folder per variant and seed, results.*")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per variant (default 3)")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--budget-minutes", type=float, help="wall-clock budget of the whole study")
    budget.add_argument("--iters", type=int, help="training iterations per run")
    p.add_argument("--base-config", default="auto",
                   help="overlay applied on top of each variant: a YAML file, 'none' (the paper's config), "
                        "or 'auto' (default: configs/ablations/cpu-tiny.yaml without a GPU, none with one)")
    p.add_argument("--record", help="folder (kept in git) of the finished runs' records and curves: runs recorded "
                                    "there are skipped, so the study continues on a fresh clone; several processes "
                                    "may share one --out and --record (each takes the runs no other is running)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: all cores)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("overrides", nargs="*", help="config overrides applied to every run, e.g. solver.base_lr=0.001")
    return p


def run(args: argparse.Namespace) -> int:
    import os

    import torch

    from .config import parse_overrides
    from .engine.ablation import default_overlay, resolve_dataset, run_study
    from .engine.ablation_variants import resolve_variants

    split = lambda s: [x.strip() for x in s.split(",") if x.strip()] if s else []  # noqa: E731
    groups = split(args.variants)
    variants = resolve_variants(groups, split(args.configs))
    train_json, val_json = resolve_dataset(args.dataset, args.val)
    overrides = parse_overrides(args.overrides)
    torch.set_num_threads(args.threads if args.threads > 0 else max(1, os.cpu_count() or 1))
    summary = run_study(variants, train_json, val_json, os.path.abspath(args.out), seeds=args.seeds,
                        iters=args.iters, budget_minutes=args.budget_minutes,
                        overlay_path=default_overlay(args.base_config, overrides.get("device", "auto")),
                        overrides=overrides, record_dir=os.path.abspath(args.record) if args.record else None)
    print(f"{summary['meta']['finished_runs']} runs; results: {os.path.join(args.out, 'results.md')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
