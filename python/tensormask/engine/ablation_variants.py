"""The variants of ``tensormask ablate`` and the paper's claims about them: each :class:`Group`
(Tab. 1, Tab. 2a–d, §A.4) names its variant files of ``configs/ablations/`` and the paired mask-AP
differences the paper reports (:class:`Comparison`); :func:`resolve_variants` turns ``--variants``
and ``--configs`` into the runs of a study."""

from __future__ import annotations

import os
from dataclasses import dataclass

ABLATION_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "ablations")

__all__ = ["ABLATION_DIR", "GROUPS", "Comparison", "Group", "Variant", "groups_of", "resolve_variants"]


@dataclass(frozen=True)
class Comparison:
    """One claim of the paper: ``better`` beats ``baseline`` by ``paper_delta`` mask AP."""

    baseline: str
    better: str
    paper_delta: float
    claim: str


@dataclass(frozen=True)
class Group:
    title: str
    variants: tuple[str, ...]
    comparisons: tuple[Comparison, ...]


# The paper's groups (variant names = files of configs/ablations). Δ values: paper, mask AP on val2017.
GROUPS: dict[str, Group] = {
    "table1": Group("Tab. 1: simple heads, natural vs aligned", ("simple_natural", "simple_aligned"),
                    (Comparison("simple_natural", "simple_aligned", 0.4, "comparable (aligned +0.4)"),)),
    "table2a": Group(
        "Tab. 2a: upscale heads, natural vs aligned, λ = 1, 3, 5",
        ("upscale_natural_l1", "upscale_aligned_l1", "upscale_natural_l3", "upscale_aligned_l3",
         "upscale_natural_l5", "upscale_aligned_l5"),
        (Comparison("upscale_natural_l1", "upscale_aligned_l1", 0.9, "aligned ≥ natural at λ=1"),
         Comparison("upscale_natural_l3", "upscale_aligned_l3", 4.1, "aligned > natural at λ=3"),
         Comparison("upscale_natural_l5", "upscale_aligned_l5", 9.2, "aligned ≫ natural at λ=5"))),
    "table2b": Group("Tab. 2b: aligned upscale λ=5, nearest (unaligned) vs bilinear",
                     ("upscale_unaligned_l5", "upscale_aligned_l5"),
                     (Comparison("upscale_unaligned_l5", "upscale_aligned_l5", 3.1, "bilinear > nearest"),)),
    # the paper's best feature-pyramid head is aligned λ=1 (28.9); aligned λ=5 (28.4) is within 0.5 of it
    # there and is the upscale head of the core Tab. 2 study: the bipyramid is compared with both
    "table2c": Group("Tab. 2c: best feature-pyramid head vs tensor bipyramid",
                     ("upscale_aligned_l1", "upscale_aligned_l5", "bipyramid_15"),
                     (Comparison("upscale_aligned_l1", "bipyramid_15", 5.1, "bipyramid ≫ feature pyramid"),
                      Comparison("upscale_aligned_l5", "bipyramid_15", 5.6,
                                 "bipyramid ≫ upscale aligned λ=5 (34.0 − 28.4)"))),
    "table2d": Group("Tab. 2d: one window size (15×15) vs two (15×15, 11×11)",
                     ("bipyramid_15", "bipyramid_15_11"),
                     (Comparison("bipyramid_15", "bipyramid_15_11", 1.2, "two window sizes > one"),)),
    "a4": Group("§A.4 (Tab. 5): box head + box NMS / box head + mask-box NMS / no box head",
                ("bipyramid_15_11", "nms_mask_box", "no_box_head"),
                (Comparison("nms_mask_box", "bipyramid_15_11", 0.3, "box NMS slightly > mask-box NMS"),
                 Comparison("no_box_head", "nms_mask_box", 0.1, "box head ≈ no box head (same NMS)"))),
}


@dataclass(frozen=True)
class Variant:
    name: str  # a run-directory-safe name (the config file's stem)
    path: str  # its config file


def resolve_variants(groups: list[str] | None = None, configs: list[str] | None = None) -> list[Variant]:
    """The variants of ``groups`` (names of :data:`GROUPS`, or single variant names of
    ``configs/ablations/``) and ``configs`` (YAML paths), de-duplicated in first-seen order
    (bipyramid_15 is in Tab. 2c and 2d: trained once)."""
    names: list[tuple[str, str]] = []
    for g in groups or []:
        if g in GROUPS:
            names += [(v, os.path.join(ABLATION_DIR, v + ".yaml")) for v in GROUPS[g].variants]
        elif os.path.isfile(os.path.join(ABLATION_DIR, g + ".yaml")) and g != "cpu-tiny":
            names.append((g, os.path.join(ABLATION_DIR, g + ".yaml")))
        else:
            raise ValueError(f"--variants: unknown group {g!r} (groups: {', '.join(GROUPS)}; "
                             f"or a variant file name of {ABLATION_DIR})")
    for c in configs or []:
        if not os.path.isfile(c):
            raise FileNotFoundError(f"--configs: config file {c!r} does not exist")
        names.append((os.path.splitext(os.path.basename(c))[0], os.path.abspath(c)))
    out: dict[str, Variant] = {}
    for name, path in names:
        if name in out and os.path.abspath(out[name].path) != os.path.abspath(path):
            raise ValueError(f"two variants are named {name!r} ({out[name].path}, {path}); rename one file")
        out.setdefault(name, Variant(name, path))
    if not out:
        raise ValueError("no variants: give --variants GROUPS or --configs FILES")
    return list(out.values())


def groups_of(variants: list[Variant]) -> list[str]:
    """The groups of :data:`GROUPS` with at least two of ``variants`` (their tables and claims are shown)."""
    names = {v.name for v in variants}
    return [g for g, group in GROUPS.items() if len(names & set(group.variants)) >= 2]
