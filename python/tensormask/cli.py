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
    "demo": ("tensormask.demo", "generate synthetic data, train a tiny model on the CPU, evaluate, draw predictions"),
    "train": ("tensormask.train", "train a model from a YAML config (torchrun for several processes)"),
    "eval": ("tensormask.eval", "COCO mask and box AP of a checkpoint on a COCO-format dataset"),
    "predict": ("tensormask.predict", "draw the detections of a checkpoint on images"),
    "ablate": ("tensormask.ablate", "train + evaluate ablation variants (paper Tab. 1, 2a-d, A.4) over seeds; results table"),
    "calibrate": ("tensormask.calibrate", "score → precision calibration of a checkpoint on a validation set (paper A.5)"),
    "make-synthetic": ("tensormask.data.synthetic", "write the embedded synthetic COCO-format dataset"),
    "convert-detectron2": ("tensormask.engine.convert", "convert a detectron2 TensorMask checkpoint (.pkl/.pth) to safetensors"),
    "export": ("tensormask.export", "export a checkpoint for C++ inference (safetensors weights + JSON config)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="tensormask", description="TensorMask: dense sliding-window instance segmentation")
    parser.add_argument("command", choices=sorted(COMMANDS), help="; ".join(f"{k}: {v[1]}" for k, v in COMMANDS.items()))
    from .cli_utils import one_line_errors

    one_line_errors(parser)
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    args, rest = parser.parse_known_args(argv[:1])
    module = importlib.import_module(COMMANDS[args.command][0])
    return int(module.main(rest + argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
