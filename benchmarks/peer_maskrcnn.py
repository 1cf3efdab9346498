"""The peer of ``bench_e2e.py``: torchvision's Mask R-CNN R50-FPN, random weights, as an
``e2e_worker`` (run by the driver with the peer venv's python; torchvision is not a dependency of
tensormask, ``make bench-peer`` creates that venv).

The model is ``maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)`` with the backbone set up
as torchvision does when it is given ImageNet weights — the setting Mask R-CNN is trained and run in,
and the one matching ours: FrozenBatchNorm2d, stem and layer1 frozen (3 trainable stages; ours:
FrozenBN, ``freeze_at=2``). Random weights, no resizing (``min_size``/``max_size`` = the image's
sides), ``box_score_thresh=0`` and ``box_detections_per_img=100`` so that it returns 100 detections
like ours. Inference includes the post-processing and thresholding the pasted masks at 0.5 (ours
returns boolean masks). Training: losses + backward + an SGD step.

Usage (normally through the driver)::

    .venv-peer/bin/python benchmarks/peer_maskrcnn.py --mode infer --size 800 1216 --threads 2
"""

from __future__ import annotations

import argparse

import torch

from e2e_worker import INSTANCES_PER_IMAGE, add_worker_args, random_image, random_instances, serve, setup, training_step

NUM_CLASSES = 91  # torchvision's COCO head (background + 90 ids)


def build_peer(height: int, width: int) -> torch.nn.Module:
    """Mask R-CNN R50-FPN with random weights and the detection settings described above."""
    from torchvision.models import resnet50
    from torchvision.models.detection import maskrcnn_resnet50_fpn
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.misc import FrozenBatchNorm2d

    kwargs = dict(min_size=min(height, width), max_size=max(height, width),
                  box_score_thresh=0.0, box_detections_per_img=100)
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, **kwargs)
    # The backbone torchvision builds for weights_backbone=ResNet50_Weights (FrozenBN, 3 trainable
    # stages), without loading the weights.
    backbone = _resnet_fpn_extractor(resnet50(weights=None, norm_layer=FrozenBatchNorm2d), 3)
    model.backbone = backbone
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_worker_args(parser)
    args = parser.parse_args()
    device = setup(args)
    h, w = args.size
    model = build_peer(h, w).to(device)
    images = [random_image(h, w, args.seed + i, device).float() / 255 for i in range(args.batch)]

    if args.mode == "infer":
        model.eval()

        def step() -> list[int]:
            with torch.inference_mode():
                out = model(images)
                for o in out:
                    o["masks"] = o["masks"][:, 0] > 0.5
            return [len(o["scores"]) for o in out]
    else:
        targets = []
        for i in range(args.batch):
            masks, boxes, labels = random_instances(h, w, INSTANCES_PER_IMAGE, NUM_CLASSES - 1, args.seed + i, device)
            targets.append({"boxes": boxes, "labels": labels + 1, "masks": masks.to(torch.uint8)})
        step = training_step(model, images, targets)

    serve(step, device, amp=args.amp)


if __name__ == "__main__":
    main()
