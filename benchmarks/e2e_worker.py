"""The worker side of ``bench_e2e.py``: one model in one process, timed one step at a time on request.

``bench_e2e.py`` starts one worker per model (ours in ``.venv``, torchvision's Mask R-CNN in the peer
venv, see ``peer_maskrcnn.py``) and alternates their steps, so both see the same load on a shared
machine. Needs only torch and the standard library (it runs in both environments).

Protocol (one line each way): the driver writes ``info``, ``run``, ``mem``, ``stages`` (ours only) or
``quit``; the worker answers one JSON line — ``{"torch", "device"}`` for ``info``, ``{"seconds": s,
"detections": [D per image]}`` for ``run``, ``{"base_rss_mib", "peak_rss_mib", "base_device_mib", "device_peak_mib"}``
for ``mem`` (base = after building the model, before the first step; device: CUDA allocations).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import sys
import time
from collections.abc import Callable

import torch

INSTANCES_PER_IMAGE = 8  # random training instances per image, for both models
AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(amp: str, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` with the ``--amp`` dtype on ``device``, or nothing for ``none``."""
    dtype = AMP_DTYPES[amp]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def add_worker_args(parser: argparse.ArgumentParser) -> None:
    """The options every worker takes (the driver passes the same values to both)."""
    parser.add_argument("--mode", choices=("infer", "train"), required=True)
    parser.add_argument("--size", type=int, nargs=2, default=(800, 1216), metavar=("H", "W"),
                        help="image height and width in pixels")
    parser.add_argument("--batch", type=int, default=1, help="images per step")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--amp", choices=tuple(AMP_DTYPES), default="none",
                        help="run every step under torch.autocast with this dtype (none: float32)")


def setup(args: argparse.Namespace) -> torch.device:
    """Threads, seed and device of a worker; checks the sizes."""
    if args.size[0] < 32 or args.size[1] < 32:
        raise SystemExit(f"--size must be at least 32×32 pixels, got {args.size[0]}×{args.size[1]}")
    if args.batch < 1:
        raise SystemExit(f"--batch must be positive, got {args.batch}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device


def random_image(height: int, width: int, seed: int, device: torch.device) -> torch.Tensor:
    """A uint8 RGB image ``(3, height, width)``: smooth random blobs plus noise, so that the detectors'
    random-weight activations are not those of a constant image."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(height // 32, 1), max(width // 32, 1), generator=g)
    img = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[0]
    img = img * 200 + torch.rand(3, height, width, generator=g) * 55
    return img.clamp(0, 255).to(torch.uint8).to(device)


def random_instances(height: int, width: int, count: int, num_classes: int, seed: int,
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``count`` elliptic instances: masks ``(G, H, W)`` bool, tight boxes ``(G, 4)`` XYXY float (x2, y2
    exclusive pixel edges), labels ``(G,)`` int64 in ``[0, num_classes)``. Sides 32 px to half the image."""
    g = torch.Generator().manual_seed(seed)
    ys = torch.arange(height, dtype=torch.float32)[:, None]
    xs = torch.arange(width, dtype=torch.float32)[None, :]
    masks = []
    for _ in range(count):
        ry = 16 + torch.rand((), generator=g).item() * (height / 4 - 16)
        rx = 16 + torch.rand((), generator=g).item() * (width / 4 - 16)
        cy = ry + torch.rand((), generator=g).item() * (height - 2 * ry)
        cx = rx + torch.rand((), generator=g).item() * (width - 2 * rx)
        masks.append(((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1.0)
    masks_t = torch.stack(masks)
    rows, cols = masks_t.any(dim=2), masks_t.any(dim=1)
    first = lambda m: m.float().argmax(dim=1)  # noqa: E731
    last = lambda m: m.shape[1] - m.flip(1).float().argmax(dim=1)  # noqa: E731
    boxes = torch.stack((first(cols), first(rows), last(cols), last(rows)), dim=1).float()
    labels = torch.randint(num_classes, (count,), generator=g)
    return masks_t.to(device), boxes.to(device), labels.to(device)


def training_step(model: torch.nn.Module, images: list, targets: list) -> Callable[[], list[int]]:
    """One training iteration of a detector that returns its loss dict in train mode: forward with
    ``targets``, backward of the summed losses, an SGD step (momentum 0.9) on the trainable parameters.
    Puts ``model`` in train mode; the returned step reports no detections (``[]``)."""
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

    def step() -> list[int]:
        losses = model(images, targets)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()
        return []

    return step


def rss_mib() -> float:
    """Resident set size of this process now, MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def serve(step: Callable[[], list[int]], device: torch.device,
          extra: dict[str, Callable[[], dict]] | None = None, amp: str = "none") -> None:
    """Answer the driver's commands on stdin/stdout until ``quit`` (see the module docstring).

    ``step`` runs one inference or training step and returns the number of detections per image
    (training: an empty list). Device work is synchronised before and after each timed step; steps
    and ``extra`` commands run under ``autocast(amp, device)``."""
    cuda = device.type == "cuda"
    base_rss = rss_mib()
    base_dev = 0.0
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        base_dev = torch.cuda.memory_allocated(device) / 2**20
    out = sys.stdout
    sys.stdout = sys.stderr  # stray prints of the models must not break the protocol
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "run":
            if cuda:
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            with autocast(amp, device):
                dets = step()
            if cuda:
                torch.cuda.synchronize(device)
            reply: dict = {"seconds": time.perf_counter() - t0, "detections": dets}
        elif cmd == "info":
            name = torch.cuda.get_device_name(device) if cuda else f"cpu, {torch.get_num_threads()} threads"
            reply = {"torch": torch.__version__, "device": name}
            if "torchvision" in sys.modules:  # the peer's
                reply["torchvision"] = sys.modules["torchvision"].__version__
        elif cmd == "mem":
            dev_peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else math.nan
            reply = {"base_rss_mib": base_rss, "peak_rss_mib": peak_rss_mib(), "base_device_mib": base_dev,
                     "device_peak_mib": dev_peak}
        elif extra and cmd in extra:
            with autocast(amp, device):
                reply = extra[cmd]()
        elif cmd == "quit":
            break
        else:
            reply = {"error": f"unknown command {cmd!r}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
