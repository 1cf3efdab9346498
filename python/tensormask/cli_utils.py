"""Shared behaviour of the command-line tools: one-line errors and exit code 1 on bad input (a
traceback only with ``--debug``); bad options are one line too (exit code 2, as argparse)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def one_line(message: object) -> str:
    """``message`` on a single line (multi-line messages, e.g. YAML parser errors, joined by spaces)."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make ``parser`` report a bad option as ``PROG: error: MESSAGE (see PROG --help)`` on one line
    of stderr, exit code 2, instead of argparse's usage block."""

    def error(message: str):
        print(f"{parser.prog}: error: {one_line(message)} (see {parser.prog} --help)", file=sys.stderr)
        sys.exit(2)

    parser.error = error  # type: ignore[method-assign]
    return parser


def run_command(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int], argv=None) -> int:
    """Parse ``argv`` and call ``run(args)``; expected failures (bad files, values, configs, a diverged
    training) print ``PROG: error: MESSAGE`` on one line of stderr and return 1."""
    args = one_line_errors(parser).parse_args(argv)
    try:
        return int(run(args) or 0)
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, FloatingPointError) as e:
        if getattr(args, "debug", False):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"{parser.prog}: error: {one_line(msg)}", file=sys.stderr)
        return 1
