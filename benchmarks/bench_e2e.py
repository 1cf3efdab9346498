"""End-to-end speed of TensorMask vs torchvision's Mask R-CNN (issue 9), ratios measured in the same run.

Inference: seconds per image (post-processing included: candidates, NMS, sparse mask decoding and
pasting to full-image boolean masks), warm-up excluded, median of ``--iters``, for our R50-FPN tensor
bipyramid (``--config``, random weights, score threshold 0 so that it returns 100 detections) and for
torchvision's ``maskrcnn_resnet50_fpn`` (random weights, ``box_score_thresh=0``,
``box_detections_per_img=100``; ``peer_maskrcnn.py``, run with ``--peer-python``, normally the
``.venv-peer`` that ``make bench-peer`` creates — torchvision is not a dependency of tensormask).
Same image (``--size``), threads, device. The detection counts are reported, with a warning under
the table when a run did not return ``DETECTIONS`` = 100. Our time is
broken down by stage (``torch.profiler`` ranges ``tensormask.*``: backbone+FPN, heads, candidates,
NMS, decode, paste). Training: seconds per iteration (forward, losses, backward, SGD step) at
``--train-size`` × ``--train-batch`` with 8 random elliptic instances per image, and peak memory
above the built model's (CPU: the process's peak RSS; CUDA: ``torch.cuda.max_memory_allocated``).

Each model runs in its own worker process (``e2e_worker.py``); the driver alternates their steps
(the order reversed every step) so that all see the same load on a shared machine. Prints markdown
tables with the ratios ours / peer; ``--json`` also writes the raw numbers.

Usage::

    python benchmarks/bench_e2e.py --peer-python .venv-peer/bin/python [--size 800 1216] [--iters 5]
        [--warmup 1] [--threads 2] [--device cpu|cuda] [--train-size 512 768] [--train-batch 2]
        [--train-iters 3] [--skip-train] [--stage-iters 3] [--no-channels-last] [--json out.json]

Ours runs twice for inference, as configured and with ``inference.channels_last`` (NHWC
convolutions; ``--no-channels-last`` skips that). Without ``--peer-python`` only our numbers are
printed. ``--worker`` is internal (the driver starts ``bench_e2e.py --worker --mode infer|train ...``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_CONFIG = ROOT / "configs" / "tensormask_R50_FPN_6x.yaml"
STAGES = ("backbone", "heads", "candidates", "nms", "decode", "paste")
STAGE_NAMES = {"backbone": "backbone + FPN", "heads": "heads (class, box, mask trunk + bipyramid fusion)",
               "candidates": "candidates (sigmoid, top-k, box decoding)", "nms": "NMS",
               "decode": "mask decoding (sparse, kept windows)", "paste": "paste to image masks"}
DETECTIONS = 100  # what both models must return per image (detections_per_image, box_detections_per_img)


# ------------------------------------------------------------------------------------------------
# Our worker
# ------------------------------------------------------------------------------------------------


def build_ours(args: argparse.Namespace, device):
    """TensorMask from ``args.config`` with random weights; inference returns every candidate above
    score 0 (so NMS yields ``detections_per_image`` = 100 detections with random weights);
    ``--channels-last`` sets ``inference.channels_last``."""
    from tensormask.config import Config, load_config, merge
    from tensormask.modeling.tensormask import TensorMask

    cfg = load_config(args.config, base=Config()).model
    cfg = merge(cfg, {"inference": {"score_thresh": 0.0, "channels_last": args.channels_last}})
    return TensorMask(cfg).to(device)


def run_worker(args: argparse.Namespace) -> None:
    """Our model as an ``e2e_worker``; inference also answers ``stages``: the seconds of each
    ``tensormask.*`` profiler range in one profiled step (on CUDA the larger of CPU and device time)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from e2e_worker import INSTANCES_PER_IMAGE, random_image, random_instances, serve, setup, training_step
    from tensormask.modeling.targets import InstanceTargets

    device = setup(args)
    h, w = args.size
    model = build_ours(args, device)
    images = [random_image(h, w, args.seed + i, device) for i in range(args.batch)]
    extra = {}
    if args.mode == "infer":
        model.eval()

        def step() -> list[int]:
            with torch.inference_mode():
                return [len(o["scores"]) for o in model(images)]

        def stages() -> dict:
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
            with profile(activities=activities) as prof:
                step()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
            out = dict.fromkeys(STAGES, 0.0)
            for ev in prof.key_averages():
                if ev.key.startswith("tensormask.") and ev.key[len("tensormask."):] in out:
                    us = max(ev.cpu_time_total, getattr(ev, "device_time_total", 0.0))
                    out[ev.key[len("tensormask."):]] += us / 1e6
            return out

        extra["stages"] = stages
    else:
        targets = []
        for i in range(args.batch):
            masks, boxes, labels = random_instances(h, w, INSTANCES_PER_IMAGE, model.head.num_classes, args.seed + i, device)
            targets.append(InstanceTargets(masks, boxes, labels))
        step = training_step(model, images, targets)

    serve(step, device, extra, amp=args.amp)


# ------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------


class Worker:
    """A worker process speaking the ``e2e_worker`` protocol; its stderr goes to a temporary file that
    is shown when it fails."""

    def __init__(self, name: str, argv: list[str]):
        self.name = name
        self.log = tempfile.TemporaryFile(mode="w+")
        env = dict(os.environ, PYTHONPATH=str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True, env=env, cwd=str(ROOT))

    def ask(self, cmd: str) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(cmd + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            self.proc.wait()
            self.log.seek(0)
            tail = self.log.read()[-3000:]
            raise RuntimeError(f"{self.name} worker died (exit {self.proc.returncode}):\n{tail}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"{self.name} worker: {reply['error']}")
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask("quit")
            except (RuntimeError, ValueError):
                pass
            self.proc.wait(timeout=60)
        self.log.close()


OURS = {"ours": "TensorMask R50-FPN bipyramid (ours)", "ours_cl": "ours, channels_last"}
RATIO = {"ours": "ours / peer", "ours_cl": "ours channels_last / peer"}
PEER = "Mask R-CNN R50-FPN (torchvision)"


def worker_argv(args: argparse.Namespace, mode: str, name: str) -> list[str]:
    size = args.size if mode == "infer" else args.train_size
    batch = 1 if mode == "infer" else args.train_batch
    common = ["--mode", mode, "--size", str(size[0]), str(size[1]), "--batch", str(batch),
              "--threads", str(args.threads), "--device", args.device, "--seed", str(args.seed), "--amp", args.amp]
    if name == "peer":
        return [args.peer_python, str(HERE / "peer_maskrcnn.py"), *common]
    extra = ["--config", str(args.config)] + (["--channels-last"] if name == "ours_cl" else [])
    return [sys.executable, str(HERE / "bench_e2e.py"), "--worker", *common, *extra]


def measure(args: argparse.Namespace, mode: str) -> dict:
    """Start the workers for ``mode`` (ours, ours in channels_last for inference unless
    ``--no-channels-last``, the peer if given), alternate their warm-up and timed steps (the order
    reversed every step), collect memory and, for inference, our stage breakdown.
    Returns {name: {"info", "seconds", "detections", "median_s", "mem"[, "stages"]}}."""
    names = ["ours"] + (["ours_cl"] if mode == "infer" and not args.no_channels_last else [])
    names += ["peer"] if args.peer_python else []
    workers = {n: Worker(n, worker_argv(args, mode, n)) for n in names}
    try:
        res = {n: {"info": workers[n].ask("info"), "seconds": [], "detections": []} for n in names}
        iters = args.iters if mode == "infer" else args.train_iters
        for i in range(args.warmup + iters):
            order = names if i % 2 == 0 else names[::-1]
            for n in order:
                r = workers[n].ask("run")
                if i >= args.warmup:
                    res[n]["seconds"].append(r["seconds"])
                    res[n]["detections"].append(r["detections"])
            print(f"  {mode} step {i + 1}/{args.warmup + iters}"
                  + (" (warm-up)" if i < args.warmup else ": " + ", ".join(f"{n} {res[n]['seconds'][-1]:.3f} s" for n in names)),
                  file=sys.stderr, flush=True)
        for n in names:
            res[n]["mem"] = workers[n].ask("mem")
            res[n]["median_s"] = statistics.median(res[n]["seconds"])
        if mode == "infer":
            ours = [n for n in names if n != "peer"]
            runs: dict[str, list[dict]] = {n: [] for n in ours}
            for _ in range(args.stage_iters):
                for n in ours:
                    runs[n].append(workers[n].ask("stages"))
            for n in ours:
                res[n]["stages"] = {s: statistics.median(r[s] for r in runs[n]) for s in STAGES}
        return res
    finally:
        for wk in workers.values():
            wk.close()


def memory_mib(mem: dict, device: str) -> float:
    """Peak working memory above the built model's: the peak of the CUDA allocations on a GPU, else of
    the process's resident set."""
    if device.startswith("cuda"):
        return mem["device_peak_mib"] - mem["base_device_mib"]
    return mem["peak_rss_mib"] - mem["base_rss_mib"]


def report(args: argparse.Namespace, infer: dict, train: dict | None) -> str:
    """The markdown tables: times, detections and memory of every model with the ratios ours / peer,
    then our stage breakdown."""
    ours = [n for n in OURS if n in infer]
    peer = "peer" in infer
    info = infer["ours"]["info"]
    head = (f"Device: {info['device']}; ours torch {info['torch']}"
            + (f", peer torch {infer['peer']['info']['torch']} + torchvision {infer['peer']['info'].get('torchvision', '?')}" if peer else "")
            + (f"; autocast {args.amp}" if args.amp != "none" else "; float32")
            + f"; inference {args.size[0]}×{args.size[1]}, median of {args.iters} (after {args.warmup} warm-up)"
            + (f"; training batch {args.train_batch} at {args.train_size[0]}×{args.train_size[1]}, median of "
               f"{args.train_iters}" if train else "") + "; steps of the models alternated.")
    cols = [OURS[n] for n in ours] + ([PEER] if peer else [])
    ratio_cols = [RATIO[n] for n in ours] if peer else []
    lines = [head, "", "| | " + " | ".join(cols + ratio_cols) + " |", "|---" * (1 + len(cols) + len(ratio_cols)) + "|"]

    def row(label: str, table: dict, value, fmt: str, ratio: bool = True) -> None:
        vals = [value(table[n]) if n in table else None for n in ours]
        p = value(table["peer"]) if peer else None
        cells = [fmt.format(v) if v is not None else "— (as ours)" for v in vals] + ([fmt.format(p)] if peer else [])
        if peer:
            cells += [f"{v / p:.2f}×" if ratio and v is not None and p else "" for v in vals]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    mem = ("peak GPU memory allocated" if args.device.startswith("cuda") else "peak RSS") + " above the built model's"
    row("inference, s / image", infer, lambda r: r["median_s"], "{:.3f} s")
    row("detections per image (min over runs)", infer, lambda r: min(min(d) for d in r["detections"]), "{}", ratio=False)
    row(f"inference, {mem}", infer, lambda r: memory_mib(r["mem"], args.device), "{:.0f} MiB")
    short = [n for n in ours + (["peer"] if peer else []) if any(d != DETECTIONS for r in infer[n]["detections"] for d in r)]
    if train:
        row(f"training, s / iteration (batch {args.train_batch})", train, lambda r: r["median_s"], "{:.3f} s")
        row(f"training, {mem}", train, lambda r: memory_mib(r["mem"], args.device), "{:.0f} MiB")

    if short:
        lines += ["", f"WARNING: not {DETECTIONS} detections per image in every run of: {', '.join(short)}"]
    lines += ["", f"Our inference by stage (s; torch.profiler ranges, median of {args.stage_iters} profiled runs):", "",
              "| stage | " + " | ".join(OURS[n] for n in ours) + " |", "|---" * (1 + len(ours)) + "|"]
    for s in STAGES:
        lines.append(f"| {STAGE_NAMES[s]} | " + " | ".join(
            f"{infer[n]['stages'][s]:.3f} ({100 * infer[n]['stages'][s] / sum(infer[n]['stages'].values()):.0f}%)"
            for n in ours) + " |")
    lines.append("| sum of the stages | " + " | ".join(f"{sum(infer[n]['stages'].values()):.3f}" for n in ours) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("infer", "train"), default="infer", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="our model config (default: R50-FPN 6x)")
    parser.add_argument("--size", type=int, nargs=2, default=(800, 1216), metavar=("H", "W"))
    parser.add_argument("--iters", type=int, default=5, help="timed inference steps per model")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per model first")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none",
                        help="every step of both models under torch.autocast with this dtype")
    parser.add_argument("--train-size", type=int, nargs=2, default=(512, 768), metavar=("H", "W"))
    parser.add_argument("--train-batch", type=int, default=2)
    parser.add_argument("--train-iters", type=int, default=3)
    parser.add_argument("--skip-train", action="store_true", help="inference only")
    parser.add_argument("--stage-iters", type=int, default=3, help="profiled runs for our stage breakdown")
    parser.add_argument("--no-channels-last", action="store_true",
                        help="skip the second run of ours with inference.channels_last (NHWC)")
    parser.add_argument("--channels-last", action="store_true", help=argparse.SUPPRESS)  # worker: NHWC
    parser.add_argument("--peer-python", help="python of the venv with torchvision (make bench-peer)")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = parser.parse_args()
    if args.worker:
        sys.path.insert(0, str(HERE))
        run_worker(args)
        return
    for name in ("iters", "train_iters", "stage_iters", "threads", "train_batch"):
        if getattr(args, name) < 1:
            raise SystemExit(f"bench_e2e: --{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.warmup < 0:
        raise SystemExit(f"bench_e2e: --warmup must be ≥ 0, got {args.warmup}")
    if args.peer_python and not os.access(args.peer_python, os.X_OK):
        raise SystemExit(f"bench_e2e: --peer-python {args.peer_python!r} is not an executable (run make bench-peer)")
    if not args.config.is_file():
        raise SystemExit(f"bench_e2e: --config {str(args.config)!r} does not exist")

    infer = measure(args, "infer")
    train = None if args.skip_train else measure(args, "train")
    table = report(args, infer, train)
    print(table)
    if args.json:
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "infer": infer,
                                   "train": train, "table": table}, indent=1))
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
