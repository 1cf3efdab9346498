"""``tensormask train --config C [--resume] [--minutes M] [key=value ...]`` — also ``python -m tensormask.train``
for ``torchrun --nproc_per_node=K -m tensormask.train --config C ...`` (DDP)."""

from __future__ import annotations

import argparse

from .cli_utils import run_command


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tensormask train", description=__doc__)
    p.add_argument("--config", required=True, help="YAML config (see configs/)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    p.add_argument("--output-dir", help="overrides output_dir")
    p.add_argument("--minutes", type=float, default=0.0,
                   help="wall-clock budget for training (single process; 0 = none, the default): the first "
                        "iterations are timed and, when solver.max_iter does not fit, the schedule is shortened "
                        "with its LR steps scaled (as `tensormask demo --minutes`); config.yaml records the schedule run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("overrides", nargs="*", help="config overrides such as solver.max_iter=1000")
    return p


def run(args: argparse.Namespace) -> int:
    from .config import Config, load_config, merge, parse_overrides
    from .engine import distributed as dist_utils
    from .engine.trainer import train

    if args.minutes < 0:
        raise ValueError(f"--minutes must be ≥ 0 (0 = no budget), got {args.minutes:g}")
    cfg = merge(load_config(args.config, base=Config()), parse_overrides(args.overrides))
    if args.output_dir:
        cfg = merge(cfg, {"output_dir": args.output_dir})
    limit = args.minutes * 60 if args.minutes > 0 else None
    try:
        path = train(cfg, resume=args.resume, progress=not args.no_progress, time_limit_s=limit)
        main = dist_utils.is_main_process()  # asked before cleanup(): without a process group every rank is 0
    finally:
        dist_utils.cleanup()
    if main:
        print(f"final checkpoint: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
