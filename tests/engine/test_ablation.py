"""The ablation harness (``tensormask ablate``): end to end on tiny variants with a 1-iteration budget,
resuming, weight sharing between inference-only variants, config composition and the result table."""

from __future__ import annotations

import json
import os
import statistics

import pytest
import torch

from tensormask.ablate import main as ablate_main
from tensormask.config import parse_overrides
from tensormask.engine import ablation
from tensormask.engine.ablation import (
    CPU_OVERLAY, GROUPS, REPRESENTATION_KEYS, Variant, compose, iterations_for_budget, read_overlay,
    resolve_variants, results_markdown, summarize,
)

# the shrunk model of tests/engine/conftest.py, as command-line overrides applied to every variant
TINY = ["model.fpn.out_channels=16", "model.head.cls_channels=16", "model.head.bbox_channels=16",
        "model.head.mask_channels=16", "model.head.num_convs=1", "model.backbone.tiny_channels=[8,8,16,16]",
        "data.train_min_size=[128,160]", "data.train_max_size=192", "data.test_min_size=128", "data.test_max_size=192",
        "solver.ims_per_batch=2"]


@pytest.fixture(autouse=True)
def one_thread():
    """Runs here use one torch thread (as ``--threads 1``: on a loaded 2-core machine several threads
    are far slower); the process's setting is restored afterwards (``ablate`` sets it globally)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_ablate_end_to_end_one_iteration(shapes_dataset, tmp_path):
    variants = [os.path.join(ablation.ABLATION_DIR, f"simple_{k}.yaml") for k in ("natural", "aligned")]
    inference_only = tmp_path / "simple_aligned_maskbox.yaml"  # same training as simple_aligned, other NMS
    inference_only.write_text(f"_base_: {variants[1]}\nmodel: {{inference: {{nms_on: mask_box}}}}\n")
    out = tmp_path / "study"
    argv = ["--configs", ",".join([*variants, str(inference_only)]), "--dataset", str(shapes_dataset),
            "--out", str(out), "--seeds", "2", "--iters", "1", "--threads", "1", *TINY]
    assert ablate_main(argv) == 0

    for name in ("simple_natural", "simple_aligned", "simple_aligned_maskbox"):
        for seed in (0, 1):
            run = json.loads((out / name / f"seed{seed}" / "run.json").read_text())
            assert run["iters"] == 1 and run["seed"] == seed
            assert (out / name / f"seed{seed}" / "eval" / "metrics.json").is_file()
    shared = json.loads((out / "simple_aligned_maskbox" / "seed1" / "run.json").read_text())
    assert shared["weights_shared_from"] == "simple_aligned"
    assert not (out / "simple_aligned_maskbox" / "seed1" / "config.yaml").exists()  # not trained again
    assert (out / "simple_natural" / "seed1" / "config.yaml").is_file()

    results = json.loads((out / "results.json").read_text())
    st = results["variants"]["simple_natural"]["stats"]
    assert st["n"] == 2 and st["seeds"] == [0, 1]
    aps = [r["mask"]["AP"] for r in results["variants"]["simple_natural"]["runs"]]
    assert st["mask_AP"][0] == pytest.approx(statistics.mean(aps))
    md = (out / "results.md").read_text()
    assert "| simple_aligned | 2 |" in md and "mask AP" in md and "infer ms/img" in md
    assert (out / "results.png").stat().st_size > 0

    before = (out / "simple_natural" / "seed0" / "run.json").stat().st_mtime_ns
    assert ablate_main(argv) == 0  # resumed: every run is complete, nothing is trained again
    assert (out / "simple_natural" / "seed0" / "run.json").stat().st_mtime_ns == before


def test_ablate_cli_errors(shapes_dataset, tmp_path, capsys):
    base = ["--dataset", str(shapes_dataset), "--out", str(tmp_path / "o"), "--iters", "1"]
    assert ablate_main(["--variants", "table9", *base]) == 1
    assert "unknown group 'table9'" in capsys.readouterr().err
    assert ablate_main(["--variants", "table1", *base, "--seeds", "0"]) == 1
    assert "--seeds" in capsys.readouterr().err


def test_groups_dedupe_and_compose_differ():
    variants = resolve_variants(["table2c", "table2d", "a4"])
    names = [v.name for v in variants]
    assert names == ["upscale_aligned_l1", "upscale_aligned_l5", "bipyramid_15", "bipyramid_15_11", "nms_mask_box",
                     "no_box_head"]
    overlay = read_overlay(CPU_OVERLAY)
    data = {"model": {"head": {"num_classes": 7}}}
    cfgs = {v.name: compose(v, overlay, data, 100, 1, "/tmp/unused") for v in resolve_variants(list(GROUPS))}
    # the overlay shrinks the backbone but keeps each variant's representation
    assert all(c.model.backbone.depth == 0 and c.solver.max_iter == 100 and c.seed == 1 for c in cfgs.values())
    assert cfgs["simple_natural"].model.head.mask_head == "simple_natural"
    assert cfgs["upscale_unaligned_l5"].model.head.interpolation == "nearest"
    assert cfgs["upscale_aligned_l5"].model.head.upscale_lambda == 5
    assert cfgs["bipyramid_15"].model.head.window_sizes == (15,)
    assert set(cfgs["bipyramid_15_11"].model.head.window_sizes) == {11, 15}
    assert cfgs["no_box_head"].model.head.box_head is False
    assert cfgs["nms_mask_box"].model.inference.nms_on == "mask_box"
    for g in GROUPS.values():  # the variants of a group are really different configs
        assert len({str(cfgs[v]) for v in g.variants}) == len(g.variants)
    assert cfgs["bipyramid_15"].solver.steps == (80, 94)  # the overlay's 1200/1410 of 1500, scaled


def test_overlay_may_not_set_representation_keys(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {head: {mask_head: bipyramid}}\n")
    with pytest.raises(ValueError, match="model.head.mask_head"):
        read_overlay(str(bad))
    assert "model.inference.nms_on" in REPRESENTATION_KEYS


def test_iterations_for_budget():
    costs = {"a": {"train_s_per_iter": 0.5, "infer_s_per_image": 0.1},
             "b": {"train_s_per_iter": 1.5, "infer_s_per_image": 0.3}}
    # 3 seeds × (10 images × 0.4 s + 2 runs × overhead) fixed, then 3 × 2.0 s per iteration
    fixed = 3 * (10 * 0.4 + 2 * ablation.RUN_OVERHEAD_S)
    assert iterations_for_budget(costs, 3, 10, 10.0) == int((600 - fixed) // 6.0)
    with pytest.raises(ValueError, match="too small"):
        iterations_for_budget(costs, 3, 10, 0.1)


def test_summary_pairs_seeds_and_formats_table():
    def rec(variant, seed, ap):
        mask = {k: ap for k in ablation.METRICS}
        return {"variant": variant, "seed": seed, "mask": mask, "box": mask, "train_seconds": 10.0,
                "infer_seconds_per_image": 0.05}

    variants = [Variant("simple_natural", "a.yaml"), Variant("simple_aligned", "b.yaml")]
    records = [rec("simple_natural", 0, 10.0), rec("simple_natural", 1, 12.0), rec("simple_natural", 2, 14.0),
               rec("simple_aligned", 0, 11.0), rec("simple_aligned", 1, 14.0)]
    s = summarize(records, variants, {"iters": 5})
    assert s["variants"]["simple_natural"]["stats"]["mask_AP"] == pytest.approx((12.0, 2.0))  # sample std
    (c,) = s["comparisons"]
    assert c["seeds"] == [0, 1] and c["delta_mean"] == pytest.approx(1.5) and c["holds"]
    assert c["delta_std"] == pytest.approx(statistics.stdev([1.0, 2.0]))
    md = results_markdown(s)
    assert "| simple_natural | 3 | 12.0 ± 2.0 |" in md
    # Δ 1.5 > 2 standard errors (2 × 0.71 / √2 = 1.0): beyond noise
    assert c["beyond_noise"]
    assert "| table1 | simple_aligned | simple_natural | +0.4 | +1.5 ± 0.7 | 2 | yes |" in md
    records[4] = rec("simple_aligned", 1, 11.0)  # Δ = 1, −1: within noise
    md = results_markdown(summarize(records, variants, {"iters": 5}))
    assert "| +0.0 ± 1.4 | 2 | no (within noise) |" in md


def test_budget_minutes_gives_one_common_iteration_count(shapes_dataset, tmp_path, monkeypatch):
    """--budget-minutes: measured costs → the same N for every variant, stored and reused on resume."""
    timed, trained = [], []

    def fake_costs(variants, make_cfg, scratch):
        timed.extend(v.name for v in variants)
        return {v.name: {"train_s_per_iter": 1.0, "infer_s_per_image": 0.5} for v in variants}

    def fake_run(variant, cfg, study_dir, log=print):
        trained.append((variant.name, cfg.seed, cfg.solver.max_iter))
        rec = {"variant": variant.name, "seed": cfg.seed, "iters": cfg.solver.max_iter, "train_seconds": 1.0,
               "infer_seconds_per_image": 0.1, "mask": {k: 1.0 for k in ablation.METRICS},
               "box": {k: 1.0 for k in ablation.METRICS}}
        os.makedirs(cfg.output_dir, exist_ok=True)
        ablation.write_json(rec, os.path.join(cfg.output_dir, ablation.RUN_FILE))
        return rec

    monkeypatch.setattr(ablation, "measure_costs", fake_costs)
    monkeypatch.setattr(ablation, "run_one", fake_run)
    variants = resolve_variants(["table1"])
    train_json, val_json = ablation.resolve_dataset(str(shapes_dataset), None)
    # 2 seeds × 2 variants × (3 val images × 0.5 s + overhead) fixed, then 2 × 2 × 1 s per iteration
    minutes = (2 * 2 * (1.5 + ablation.RUN_OVERHEAD_S) + 4 * 7) / 60
    out = str(tmp_path / "study")
    s = ablation.run_study(variants, train_json, val_json, out, seeds=2, budget_minutes=minutes)
    assert s["meta"]["iters"] == 7 and {t[2] for t in trained} == {7} and len(trained) == 4
    assert json.load(open(os.path.join(out, "budget.json")))["iters"] == 7
    timed.clear(), trained.clear()
    ablation.run_study(variants, train_json, val_json, out, seeds=2, budget_minutes=minutes)
    assert timed == [] and trained == []  # costs reused, every run already complete


def test_measure_costs_times_training_and_inference(shapes_dataset, tmp_path):
    data = ablation.dataset_overrides(*ablation.resolve_dataset(str(shapes_dataset), None))
    overrides = parse_overrides(TINY)
    variant = resolve_variants(["simple_aligned"])[0]
    costs = ablation.measure_costs([variant], lambda v, n, out: compose(v, read_overlay(CPU_OVERLAY), data, n, 0, out,
                                                                         overrides), str(tmp_path / "cal"))
    assert set(costs) == {"simple_aligned"}
    assert costs["simple_aligned"]["train_s_per_iter"] > 0 and costs["simple_aligned"]["infer_s_per_image"] > 0
    assert not (tmp_path / "cal" / "simple_aligned").exists()  # scratch runs are removed


def test_table2_core_study_shows_every_claim_of_the_issue():
    """The five variants of the converged study (no λ=1 run) still give Tab. 2a, 2b, 2c and 2d claims;
    2c pairs the bipyramid with aligned λ=5 (paper: 34.0 − 28.4 = +5.6)."""
    def rec(variant, seed, ap):
        mask = {k: ap for k in ablation.METRICS}
        return {"variant": variant, "seed": seed, "mask": mask, "box": mask, "train_seconds": 1.0,
                "infer_seconds_per_image": 0.01}

    core = ["upscale_natural_l5", "upscale_aligned_l5", "upscale_unaligned_l5", "bipyramid_15", "bipyramid_15_11"]
    variants = [Variant(v, v + ".yaml") for v in core]
    aps = {0: [15.0, 36.0, 31.0, 44.0, 48.0], 1: [14.0, 35.0, 32.0, 42.0, 47.0]}
    records = [rec(v, seed, ap[i]) for seed, ap in aps.items() for i, v in enumerate(core)]
    s = summarize(records, variants, {"iters": 5})
    got = {(c["better"], c["baseline"]): (c["paper_delta"], c["delta_mean"], len(c["seeds"])) for c in s["comparisons"]}
    assert got == {("upscale_aligned_l5", "upscale_natural_l5"): (9.2, 21.0, 2),
                   ("upscale_aligned_l5", "upscale_unaligned_l5"): (3.1, 4.0, 2),
                   ("bipyramid_15", "upscale_aligned_l5"): (5.6, 7.5, 2),
                   ("bipyramid_15_11", "bipyramid_15"): (1.2, 4.5, 2)}
    assert "| table2c | bipyramid_15 | upscale_aligned_l5 | +5.6 | +7.5 ± 0.7 | 2 | yes |" in results_markdown(s)
