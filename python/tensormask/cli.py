"""The ``tensormask`` command line: ``tensormask <command> [options]``.

Each command lives in its own module and is imported only when run, so ``tensormask --help`` is fast
and a missing optional dependency only affects the command that needs it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command → (module, help)
COMMANDS = {
    "ops-demo": ("tensormask.demo", "show the 4D tensor ops on a small example"),
    "convert-detectron2": ("tensormask.engine.convert", "convert a detectron2 TensorMask checkpoint (.pkl/.pth) to safetensors"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="tensormask", description="TensorMask: dense sliding-window instance segmentation")
    parser.add_argument("command", choices=sorted(COMMANDS), help="; ".join(f"{k}: {v[1]}" for k, v in COMMANDS.items()))
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    args, rest = parser.parse_known_args(argv[:1])
    module = importlib.import_module(COMMANDS[args.command][0])
    return int(module.main(rest + argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
