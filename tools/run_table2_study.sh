#!/usr/bin/env bash
# The converged Tab. 2 study of docs/ablations.md ("Table 2, converged"): 5 variants × 3 seeds, 4000
# iterations each, the demo's recipe (configs/ablations/cpu-demo.yaml) on the demo's synthetic data
# (400 training images, 200 validation images). Finished runs are recorded in
# docs/ablation-runs/table2-cpu-demo/ (commit them): the same command continues the study elsewhere.
# Usage: tools/run_table2_study.sh [PROCESSES]   (default 2: one torch thread each, nice 19)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
# TM: the tensormask CLI to run; STUDY_SNAPSHOT=DIR runs DIR/run.py, a frozen copy of the package (so edits
# to the checkout during a long study do not change the code mid-study), else `python -m tensormask.cli`.
if [ -n "${STUDY_SNAPSHOT:-}" ]; then TM=("$PY" "$STUDY_SNAPSHOT/run.py"); else TM=("$PY" -m tensormask.cli); fi
N=${1:-2}
for split in train:400:0 val:200:1; do
  IFS=: read -r name n seed <<<"$split"
  [ -f "datasets/demo/$name/annotations.json" ] ||
    "${TM[@]}" make-synthetic "datasets/demo/$name" --images "$n" --seed "$seed" --preset demo
done
mkdir -p out/table2-cpu-demo
for i in $(seq 1 "$N"); do
  nice -n 19 "${TM[@]}" ablate \
    --variants upscale_natural_l5,upscale_aligned_l5,upscale_unaligned_l5,bipyramid_15,bipyramid_15_11 \
    --dataset datasets/demo/train --val datasets/demo/val --seeds 3 --iters 4000 --threads 1 \
    --base-config python/tensormask/configs/ablations/cpu-demo.yaml \
    --out out/table2-cpu-demo --record docs/ablation-runs/table2-cpu-demo \
    > "out/table2-cpu-demo/process$i.log" 2>&1 &
  sleep 5
done
wait
