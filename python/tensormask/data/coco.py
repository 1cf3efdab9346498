"""COCO-format instance segmentation datasets, read with Pillow and decoded with pycocotools.

The JSON is parsed and validated when the dataset is built: structure errors (not a COCO instances
file, malformed ``categories``) always raise ``ValueError`` naming the file; bad image entries, missing
image files and malformed annotations follow ``on_error``:

* ``"skip"``: the item is left out, counted in :attr:`CocoDataset.skipped` (a ``Counter`` by reason)
  and logged once as a warning naming the JSON file, the image file and the annotation id.
* ``"raise"``: ``ValueError`` (bad data) or ``OSError`` (missing/corrupt image) naming the same.

Problems only visible when an image is read (corrupt file, size different from the JSON) follow the
same policy in ``__getitem__``; in skip mode it then returns ``None``, which :func:`collate` drops.
Instances whose decoded mask is empty (e.g. a polygon of zero area) are always dropped and counted as
``"empty_mask"``: they carry nothing to learn. Counts made in ``DataLoader`` worker processes stay in
those processes.

Reasons counted in ``skipped`` (each follows ``on_error``):

* ``bad_image_entry``: an ``images`` entry without an integer ``id`` or a string ``file_name``, or
  with a non-positive ``height``/``width``;
* ``duplicate_image_id``: an image id listed twice (the first entry is kept);
* ``missing_image`` / ``corrupt_image`` (truncated, not an image, or declaring more than
  :data:`MAX_IMAGE_PIXELS` pixels) / ``size_mismatch``;
* ``bad_annotation`` (not an object, missing or duplicate id, bad ``iscrowd``), ``unknown_image_id``,
  ``unknown_category`` (a ``category_id`` missing from ``categories``);
* ``bad_bbox`` (malformed) and ``degenerate_bbox`` (width or height ≤ 0);
* ``bad_segmentation`` (malformed polygon or RLE), ``empty_polygon`` (no polygon with ≥ 3 points),
  ``mask_outside_image`` (every polygon point outside the image: the mask would be empty);
* ``empty_mask`` (decoded mask without pixels; dropped in both modes);
* ``bbox_outside_image`` (a ``bbox`` with no area left inside the image once clipped to it; dropped
  in both modes, as detectron2's ``filter_empty_instances`` drops it).

Ground truth follows detectron2's ``DatasetMapper``: the box of an instance is its annotation's
``bbox`` (XYWH → XYXY, clipped to the image), or the tight box of its mask when the annotation has
no ``bbox``; polygon annotations also keep their polygons (:attr:`Sample.polygons`) for the mask
targets. Crowd annotations (``iscrowd=1``) are kept as crowd regions (:attr:`Sample.crowd_masks`),
whose windows the training ignores — detectron2 drops them (see docs/parity.md).

Reported but kept, counted in ``warned``: ``self_intersecting_polygon`` — pycocotools rasterises such
polygons (as COCO's own evaluation does), so the ground truth stays the official one; a warning names
the annotation once.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from ..safeio import loads_json
from .images import MAX_IMAGE_PIXELS, ImageTooLargeError, load_image
from .segmentation import (check_segmentation, decode_segmentation, is_int, is_number, polygon_self_intersects,
                           polygons_outside, rle_counts)
from .structures import Sample, masks_to_boxes, xywh_to_xyxy

# load_image, MAX_IMAGE_PIXELS, ImageTooLargeError (data.images) and the segmentation helpers
# (data.segmentation) stay importable from here, where they lived before
__all__ = ["CocoDataset", "load_image", "MAX_IMAGE_PIXELS", "ImageTooLargeError", "decode_segmentation",
           "check_segmentation", "rle_counts", "polygons_outside", "polygon_self_intersects"]

logger = logging.getLogger(__name__)

Transform = Callable[[Sample, "torch.Generator | None"], Sample]


def _load_json(json_path: str) -> dict:
    if not os.path.isfile(json_path):
        raise FileNotFoundError(f"COCO annotation file not found: {json_path}")
    with open(json_path, "rb") as f:
        data = loads_json(f.read(), json_path)  # malformed, not UTF-8, nested too deeply: one line
    if not isinstance(data, dict):
        raise ValueError(f"{json_path}: a COCO file is a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise ValueError(
                f"{json_path}: missing key '{key}' (a COCO instances file has 'images', 'annotations' "
                f"and 'categories'; found {sorted(data)})"
            )
        if not isinstance(data[key], list):
            raise ValueError(f"{json_path}: '{key}' must be a list, got {type(data[key]).__name__}")
    return data


# ---------------------------------------------------------------------------------------- dataset
class CocoDataset(Dataset):
    """A COCO-format instance segmentation dataset returning :class:`Sample` objects.

    Args:
        json_path: COCO instances JSON (``images``, ``annotations``, ``categories``).
        image_root: folder the images' ``file_name`` are relative to.
        transform: ``transform(sample, generator) -> sample`` (see :mod:`tensormask.data.transforms`).
        on_error: ``"skip"`` or ``"raise"`` (see the module docstring).
        filter_empty: leave out images without (non-crowd) annotations; by default they are kept.
        min_mask_pixels: instances whose decoded mask has fewer pixels are dropped (``empty_mask``).
        check_files: check at construction that every image file exists.
        seed: if given, the transform of item ``i`` gets a generator seeded from ``(seed, epoch, i)``
            (see :meth:`set_epoch`), so samples are reproducible whatever the worker; if ``None`` it
            gets ``None`` and uses torch's global RNG (seeded per worker by the DataLoader).
        cache: keep every item :meth:`load` decodes (image and masks at the original size, before the
            transform; or the skip) in memory, so each file is read and decoded once — for small
            datasets read many times, such as the CPU demo's (400 images of 256–320 px, ~0.25 GB).
            Each DataLoader worker holds its own cache. Transforms must not modify their input in
            place (those of :mod:`tensormask.data.transforms` do not).

    Attributes:
        category_names: class names, by contiguous label ``0..K-1`` (categories sorted by id).
        contiguous_to_category_id: list, contiguous label -> JSON category id.
        category_id_to_contiguous: dict, JSON category id -> contiguous label.
        skipped: ``Counter`` of skipped items by reason.
        warned: ``Counter`` of kept items with a reported problem (``self_intersecting_polygon``).
    """

    def __init__(
        self,
        json_path: str | os.PathLike,
        image_root: str | os.PathLike,
        transform: Transform | None = None,
        *,
        on_error: str = "skip",
        filter_empty: bool = False,
        min_mask_pixels: int = 1,
        check_files: bool = True,
        seed: int | None = None,
        cache: bool = False,
    ) -> None:
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        self.json_path = os.fspath(json_path)
        self.image_root = os.fspath(image_root)
        self.transform = transform
        self.on_error = on_error
        self.min_mask_pixels = max(1, int(min_mask_pixels))
        self.seed = seed
        self.epoch = 0
        self.skipped: Counter[str] = Counter()
        self.warned: Counter[str] = Counter()
        self._reported: set[tuple[str, Any]] = set()
        self._polygons_checked: set[int] = set()
        self._cache: dict[int, Sample | None] | None = {} if cache else None

        data = _load_json(self.json_path)
        self._parse_categories(data["categories"])
        images = self._parse_images(data["images"], check_files)
        self._parse_annotations(data["annotations"], images)
        records = list(images.values())
        if filter_empty:
            records = [r for r in records if any(not a["iscrowd"] for a in r["anns"])]
        self._records = records
        if self.skipped:
            logger.warning("%s: skipped %s", self.json_path, dict(self.skipped))

    # ------------------------------------------------------------------ parsing
    def _problem(self, reason: str, key: Any, msg: str, exc: type[Exception] = ValueError) -> None:
        """Raise (``on_error='raise'``) or count and log once (``'skip'``)."""
        if self.on_error == "raise":
            raise exc(msg)
        if (reason, key) not in self._reported:
            self._reported.add((reason, key))
            self.skipped[reason] += 1
            logger.warning("skipping (%s): %s", reason, msg)

    def _parse_categories(self, cats: list) -> None:
        by_id: dict[int, str] = {}
        for i, c in enumerate(cats):
            if not isinstance(c, dict) or not is_int(c.get("id")) or not isinstance(c.get("name", ""), str):
                raise ValueError(
                    f"{self.json_path}: categories[{i}] must have an integer 'id' and a string 'name': {c!r}"
                )
            cid = int(c["id"])
            if cid in by_id:
                raise ValueError(f"{self.json_path}: duplicate category id {cid}")
            by_id[cid] = c.get("name", str(cid))
        if not by_id:
            raise ValueError(f"{self.json_path}: 'categories' is empty")
        self.contiguous_to_category_id: list[int] = sorted(by_id)
        self.category_id_to_contiguous: dict[int, int] = {c: i for i, c in enumerate(self.contiguous_to_category_id)}
        self.category_names: list[str] = [by_id[c] for c in self.contiguous_to_category_id]

    def _parse_images(self, entries: list, check_files: bool) -> dict[int, dict]:
        images: dict[int, dict] = {}
        self._dropped_images: set[int] = set()
        for i, e in enumerate(entries):
            where = f"{self.json_path}: images[{i}]"
            if not isinstance(e, dict) or not is_int(e.get("id")) or not isinstance(e.get("file_name"), str):
                self._problem(
                    "bad_image_entry", ("index", i), f"{where} needs an integer 'id' and a string 'file_name': {e!r}"
                )
                continue
            iid, fname = int(e["id"]), e["file_name"]
            where = f"{self.json_path}: image '{fname}' (id {iid})"
            if iid in images or iid in self._dropped_images:
                self._problem("duplicate_image_id", ("index", i), f"{where}: image id {iid} is listed twice in 'images'")
                continue
            h, w = e.get("height"), e.get("width")
            if (h is not None or w is not None) and not (is_int(h) and is_int(w) and h > 0 and w > 0):
                self._problem(
                    "bad_image_entry", iid, f"{where}: 'height'/'width' must be positive integers, got {h!r}/{w!r}"
                )
                self._dropped_images.add(iid)
                continue
            path = os.path.join(self.image_root, fname)
            if check_files and not os.path.isfile(path):
                self._problem("missing_image", iid, f"{where}: image file not found: {path}", FileNotFoundError)
                self._dropped_images.add(iid)
                continue
            images[iid] = {
                "id": iid,
                "file_name": fname,
                "path": path,
                "height": None if h is None else int(h),
                "width": None if w is None else int(w),
                "anns": [],
            }
        return images

    def _parse_annotations(self, anns: list, images: dict[int, dict]) -> None:
        seen_ids: set[int] = set()
        for i, a in enumerate(anns):
            if not isinstance(a, dict):
                self._problem(
                    "bad_annotation", ("index", i), f"{self.json_path}: annotations[{i}] is not an object: {a!r}"
                )
                continue
            aid = a.get("id")
            if not is_int(aid) or aid in seen_ids:
                what = "a duplicate" if is_int(aid) else "no integer"
                self._problem(
                    "bad_annotation", ("index", i), f"{self.json_path}: annotations[{i}] has {what} 'id' ({aid!r})"
                )
                continue
            aid = int(aid)
            seen_ids.add(aid)
            iid = a.get("image_id")
            if not is_int(iid) or int(iid) not in images:
                if is_int(iid) and int(iid) in self._dropped_images:
                    continue  # its image was skipped (and counted) already
                self._problem(
                    "unknown_image_id",
                    aid,
                    f"{self.json_path}: annotation id {aid}: image_id {iid!r} is not in 'images'",
                )
                continue
            img = images[int(iid)]
            where = f"{self.json_path}: annotation id {aid} of image '{img['file_name']}' (id {img['id']})"
            cid = a.get("category_id")
            if not is_int(cid) or int(cid) not in self.category_id_to_contiguous:
                self._problem("unknown_category", aid, f"{where}: category_id {cid!r} is not in 'categories'")
                continue
            crowd = a.get("iscrowd", 0)
            if crowd not in (0, 1) or isinstance(crowd, float):
                self._problem("bad_annotation", aid, f"{where}: 'iscrowd' must be 0 or 1, got {crowd!r}")
                continue
            bbox = a.get("bbox")
            if bbox is not None and not (
                isinstance(bbox, list)
                and len(bbox) == 4
                and all(is_number(v) for v in bbox)
                and bbox[2] >= 0
                and bbox[3] >= 0
            ):
                self._problem(
                    "bad_bbox", aid, f"{where}: 'bbox' must be [x, y, width, height] with finite numbers, got {bbox!r}"
                )
                continue
            if bbox is not None and not (bbox[2] > 0 and bbox[3] > 0):
                self._problem("degenerate_bbox", aid, f"{where}: degenerate 'bbox' {bbox!r}: width and height must be > 0")
                continue
            if "segmentation" not in a:
                self._problem("bad_segmentation", aid, f"{where}: no 'segmentation'")
                continue
            seg = a["segmentation"]
            err = check_segmentation(seg, img["height"], img["width"])
            if err is not None:
                self._problem("bad_segmentation", aid, f"{where}: bad segmentation: {err}")
                continue
            if isinstance(seg, list):
                polys = [p for p in seg if len(p) >= 6]
                if not polys:
                    self._problem("empty_polygon", aid, f"{where}: no polygon with at least 3 points: {seg!r}")
                    continue
                if img["height"] is not None and polygons_outside(polys, img["height"], img["width"]):
                    self._problem(
                        "mask_outside_image",
                        aid,
                        f"{where}: every polygon point lies outside the {img['height']}x{img['width']} (HxW) image",
                    )
                    continue
            img["anns"].append(
                {
                    "id": aid,
                    "label": self.category_id_to_contiguous[int(cid)],
                    "iscrowd": bool(crowd),
                    "segmentation": seg,
                    "bbox": bbox,
                }
            )

    def _check_self_intersection(self, aid: int, seg: list, where: str) -> None:
        """Count and warn (once per annotation) about a self-intersecting polygon; it is kept."""
        if aid in self._polygons_checked:
            return
        self._polygons_checked.add(aid)
        bad = [i for i, p in enumerate(seg) if len(p) >= 8 and polygon_self_intersects(p)]
        if bad:
            self.warned["self_intersecting_polygon"] += 1
            logger.warning("%s: polygon(s) %s intersect themselves; kept as pycocotools rasterises them", where, bad)

    # ------------------------------------------------------------------ public API
    @property
    def num_classes(self) -> int:
        return len(self.category_names)

    @property
    def image_ids(self) -> list[int]:
        return [r["id"] for r in self._records]

    def __len__(self) -> int:
        return len(self._records)

    def set_epoch(self, epoch: int) -> None:
        """Change the seeds of the transforms' generators (only used when ``seed`` is given)."""
        self.epoch = int(epoch)

    def image_info(self, idx: int) -> dict:
        """``id``, ``file_name``, ``path``, ``height``, ``width`` of item ``idx`` (without decoding)."""
        r = self._records[idx]
        return {k: r[k] for k in ("id", "file_name", "path", "height", "width")}

    def generator(self, idx: int) -> torch.Generator | None:
        """The generator item ``idx`` gets in this epoch (``None`` without a seed)."""
        if self.seed is None:
            return None
        state = np.random.SeedSequence([int(self.seed), self.epoch, int(idx)]).generate_state(1, dtype=np.uint64)[0]
        return torch.Generator().manual_seed(int(state))

    def load(self, idx: int) -> Sample | None:
        """Item ``idx`` at its original size, without the transform (``None`` if skipped); decoded
        once and then taken from memory when the dataset was built with ``cache=True``."""
        if self._cache is None:
            return self._decode(idx)
        if idx not in self._cache:
            self._cache[idx] = self._decode(idx)
        return self._cache[idx]

    def _decode(self, idx: int) -> Sample | None:
        r = self._records[idx]
        where = f"image '{r['file_name']}' (id {r['id']}) of {self.json_path}"
        try:
            img = load_image(r["path"])
        except FileNotFoundError as e:
            self._problem("missing_image", r["id"], f"{where}: {e}", FileNotFoundError)
            return None
        except OSError as e:
            if self.on_error == "raise":
                raise OSError(f"{where}: {e}") from e
            self._problem("corrupt_image", r["id"], f"{where}: {e}", OSError)
            return None
        h, w = img.shape[:2]
        if r["height"] is not None and (r["height"], r["width"]) != (h, w):
            self._problem(
                "size_mismatch",
                r["id"],
                f"{where}: the JSON says {r['height']}x{r['width']} (HxW) but the file is {h}x{w} "
                "after EXIF orientation",
            )
            return None

        masks, labels, ann_ids, crowd, boxes, polygons = [], [], [], [], [], []
        for a in r["anns"]:
            awhere = f"annotation id {a['id']} of {where}"
            err = check_segmentation(a["segmentation"], h, w) if r["height"] is None else None
            if err is None and isinstance(a["segmentation"], list):
                self._check_self_intersection(a["id"], a["segmentation"], awhere)
            if err is None:
                try:
                    m = decode_segmentation(a["segmentation"], h, w)
                except Exception as e:  # pycocotools errors are not typed
                    err = f"{type(e).__name__}: {e}"
            if err is not None:
                self._problem("bad_segmentation", a["id"], f"{awhere}: bad segmentation: {err}")
                continue
            if int(m.sum()) < self.min_mask_pixels:
                # Not an error: nothing to learn from it. Always dropped, counted once.
                if ("empty_mask", a["id"]) not in self._reported:
                    self._reported.add(("empty_mask", a["id"]))
                    self.skipped["empty_mask"] += 1
                    logger.warning("dropping %s: its mask has %d pixel(s)", awhere, int(m.sum()))
                continue
            if a["iscrowd"]:
                crowd.append(m)
                continue
            if a["bbox"] is not None:  # detectron2's gt box: the annotation's bbox, clipped to the image
                box = xywh_to_xyxy(a["bbox"], h, w)
                if not (box[2] - box[0] > 1e-5 and box[3] - box[1] > 1e-5):
                    if ("bbox_outside_image", a["id"]) not in self._reported:
                        self._reported.add(("bbox_outside_image", a["id"]))
                        self.skipped["bbox_outside_image"] += 1
                        logger.warning("dropping %s: its bbox %s is empty inside the %dx%d (HxW) image",
                                       awhere, a["bbox"], h, w)
                    continue
            else:  # no bbox: the tight box of the mask
                box = masks_to_boxes(torch.from_numpy(m)[None])[0].numpy().astype(np.float64)
            seg = a["segmentation"]
            masks.append(m)
            boxes.append(box)
            labels.append(a["label"])
            ann_ids.append(a["id"])
            polygons.append(
                [np.asarray(p, dtype=np.float64) for p in seg if len(p) >= 6] if isinstance(seg, list) else None
            )

        masks_t = torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, h, w), dtype=torch.bool)
        crowd_t = torch.from_numpy(np.stack(crowd)) if crowd else torch.zeros((0, h, w), dtype=torch.bool)
        return Sample(
            image=torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))),
            masks=masks_t,
            boxes=torch.from_numpy(np.array(boxes, dtype=np.float32).reshape(-1, 4)),
            polygons=polygons,
            labels=torch.tensor(labels, dtype=torch.int64),
            crowd_masks=crowd_t,
            image_id=r["id"],
            file_name=r["file_name"],
            orig_size=(h, w),
            ann_ids=torch.tensor(ann_ids, dtype=torch.int64),
        )

    def __getitem__(self, idx: int) -> Sample | None:
        sample = self.load(idx)
        if sample is not None and self.transform is not None:
            sample = self.transform(sample, self.generator(idx))
        return sample

    def __repr__(self) -> str:
        return (
            f"CocoDataset({self.json_path!r}, images={len(self)}, classes={self.num_classes}, "
            f"on_error={self.on_error!r}, skipped={dict(self.skipped)})"
        )
