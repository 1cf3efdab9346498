"""``tensormask eval --config C --weights W [--dataset JSON IMAGES]``: COCO mask and box AP.

Runs :func:`tensormask.load`'s predictor (the Python API) over the dataset with a progress bar,
writes ``coco_results.json`` (segm + bbox) and ``metrics.json`` and prints the standard AP table. Multi-GPU: ``torchrun --nproc_per_node=K -m tensormask.eval ...``.
"""

from __future__ import annotations

import argparse
import os

from .cli_utils import run_command


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tensormask eval", description=__doc__)
    p.add_argument("--config", help="YAML config (default: the one stored in the checkpoint)")
    p.add_argument("--weights", required=True, help="training checkpoint (.pth) or TensorMask .safetensors")
    p.add_argument("--dataset", nargs=2, metavar=("JSON", "IMAGES"), help="COCO annotations and image folder (default: data.val_*)")
    p.add_argument("--output-dir", help="where to write results (default: <output_dir>/eval)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="network precision: bfloat16 on CUDA and on CPUs with AVX-512 BF16/AMX (else float32, with a "
                        "warning), float16 on CUDA; post-processing is float32")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="run the network on NCHW tensors (default: NHWC, faster, equal up to float rounding)")
    p.add_argument("--debug", action="store_true")
    p.add_argument("overrides", nargs="*", help="config overrides such as model.inference.score_thresh=0.1")
    return p


def run(args: argparse.Namespace) -> int:
    from . import api
    from .config import Config, load_config, merge, parse_overrides
    from .engine import distributed as dist_utils
    from .engine.evaluator import dataset_paths, format_table

    device = dist_utils.init_from_env(args.device)
    if any(o.startswith("model.inference.channels_last=") for o in args.overrides):
        args.channels_last = None  # the override decides
    if args.config:  # the model is built from this config (overrides included)
        cfg = merge(load_config(args.config, base=Config()), parse_overrides(args.overrides))
        model = api.load(args.weights, device, dtype=args.dtype, channels_last=args.channels_last, config=cfg)
    else:  # the weights' own config; the overrides may change inference settings only
        model = api.load(args.weights, device, dtype=args.dtype, channels_last=args.channels_last,
                         overrides=args.overrides)
    cfg = model.cfg
    json_path, images = dataset_paths(args.dataset, cfg)
    out = args.output_dir or os.path.join(cfg.output_dir, "eval")
    metrics = model.evaluate(json_path, images, out)
    if dist_utils.is_main_process():
        print(format_table(metrics))
        print(f"results written to {out}")
    dist_utils.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
