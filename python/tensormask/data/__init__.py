"""Data layer: COCO-format datasets, transforms, the per-image :class:`Sample`, and an embedded
synthetic dataset generator. Nothing is downloaded: datasets are generated or given by users.

Typical use::

    from tensormask.data import CocoDataset, build_transforms, collate, synthetic
    synthetic.generate("data/shapes", 200, seed=0, config="demo")
    ds = CocoDataset("data/shapes/annotations.json", "data/shapes/images",
                     transform=build_transforms(True, (256, 320), 512), seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True, collate_fn=collate)
"""

from . import synthetic
from .coco import CocoDataset
from .images import load_image
from .segmentation import decode_segmentation
from .structures import Sample, collate, masks_to_boxes, nonempty
from .synthetic import PRESETS, SyntheticConfig
from .transforms import (
    Compose,
    RandomHorizontalFlip,
    ResizeShortestEdge,
    build_transforms,
    hflip_sample,
    resize_sample,
)

__all__ = [
    "CocoDataset",
    "Compose",
    "PRESETS",
    "RandomHorizontalFlip",
    "ResizeShortestEdge",
    "Sample",
    "SyntheticConfig",
    "build_transforms",
    "collate",
    "decode_segmentation",
    "hflip_sample",
    "load_image",
    "masks_to_boxes",
    "nonempty",
    "resize_sample",
    "synthetic",
]
