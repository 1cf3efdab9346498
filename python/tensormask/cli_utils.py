"""Shared behaviour of the command-line tools: one-line errors and exit code 1 on bad input (a
traceback only with ``--debug``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def run_command(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int], argv=None) -> int:
    args = parser.parse_args(argv)
    try:
        return int(run(args) or 0)
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, FloatingPointError) as e:
        if getattr(args, "debug", False):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"{parser.prog}: error: {msg}", file=sys.stderr)
        return 1
