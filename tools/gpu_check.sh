#!/usr/bin/env bash
# Build TensorMask with its CUDA kernels against the CUDA torch of this machine's python3 and run
# what needs a GPU: the op and model tests (CPU references included, CUDA parametrizations live) and
# the GPU benchmarks. Usage: tools/gpu_check.sh OUTDIR [build|tests|bench|all]
#
# Nothing is installed into python3's environment: the wheel goes to $GPU_SITE_DIR, which is put on
# PYTHONPATH (with $PYTHONPATH kept first, e.g. for carried pycocotools wheels). Logs and JSON land in
# OUTDIR. The benchmarks' peer (torchvision's Mask R-CNN) is run with the same python3 when it has
# torchvision, otherwise the end-to-end table has our numbers only. The tests need pytest, pytest-xdist
# and the package's dependencies (pycocotools, ...) importable by python3.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: tools/gpu_check.sh OUTDIR [build|tests|bench|all]}
what=${2:-all}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
nvcc=${CUDACXX:-$(command -v nvcc || ls /usr/local/cuda*/bin/nvcc 2>/dev/null | head -1)}
[ -x "$nvcc" ] || { echo "gpu-check: nvcc not found (set CUDACXX)"; exit 1; }
export CUDACXX=$nvcc CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$nvcc")")}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$("$py" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')}
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "gpu-check: $("$py" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)'), $("$nvcc" --version | tail -1), arch $TORCH_CUDA_ARCH_LIST, $(nproc) cores"

build=${GPU_BUILD_DIR:-/tmp/tensormask-gpu-build}
start=$(date +%s)
deadline=$(( start + ${GPU_CHECK_SECONDS:-3600} ))  # each later step is cut to what is left of this
left() { local l=$(( deadline - $(date +%s) )); [ "$l" -lt 1 ] && l=1; [ "$l" -lt "$1" ] && echo "$l" || echo "$1"; }
if ! "$py" -m pip wheel --no-build-isolation --no-deps -q -w "$build/dist" -Cbuild-dir="$build/tree" \
    -Ccmake.define.TENSORMASK_CUDA=ON -Ccmake.define.TENSORMASK_BUILD_TESTS=OFF \
    -Ccmake.define.CUDAToolkit_ROOT="$CUDA_HOME" "$here" >"$out/build.log" 2>&1; then
  tail -40 "$out/build.log"; echo "gpu-check: BUILD FAILED (log: $out/build.log)"; exit 1
fi
echo "gpu-check: built in $(( $(date +%s) - start ))s"
site=${GPU_SITE_DIR:-/tmp/tensormask-gpu-site}
"$py" -m pip install -q --no-deps --no-index --no-compile --upgrade --target "$site" "$build"/dist/tensormask-*.whl || exit 1
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$site
cd "$here"
"$py" -c "import tensormask, torch; assert tensormask._C.compiled_with_cuda(), 'CUDA kernels not compiled'; print('gpu-check: tensormask', tensormask.__file__, 'CUDA kernels: yes;', torch.cuda.get_device_name())" || exit 1

[ "$what" = build ] && exit 0
rc=0
if [ "$what" != bench ]; then
  # -p no:cacheprovider: the source tree may be read-only; -n: xdist workers share the GPU.
  OMP_NUM_THREADS=2 timeout "$(left ${GPU_TEST_SECONDS:-900})" "$py" -m pytest -q -rfE -p no:cacheprovider -n "${GPU_TEST_WORKERS:-8}" --junitxml="$out/junit.xml" \
    ${GPU_TESTS:-tests/ops tests/modeling/test_cuda.py tests/engine/test_trainer.py tests/engine/test_evaluator.py} \
    2>&1 | tee "$out/tests.log" | tail -40
  rc=${PIPESTATUS[0]}
  echo "gpu-check: tests rc=$rc"
fi
if [ "$what" != tests ]; then
  peer=()
  "$py" -c "import torchvision" 2>/dev/null && peer=(--peer-python "$(command -v "$py")")
  for amp in none bf16; do  # float32 (cuDNN's TF32 convolutions, torch's default) and bf16 autocast
    echo "== bench_e2e --amp $amp"
    timeout "$(left 300)" "$py" benchmarks/bench_e2e.py --device cuda --iters 20 --warmup 3 --train-iters 10 \
      --amp $amp "${peer[@]}" --json "$out/bench_e2e_$amp.json" 2>&1 | tee "$out/bench_e2e_$amp.log" | grep -v "step [0-9]"
  done
  for b in "bench_ops.py --device cuda" "bench_assign.py --device cuda" "bench_postprocess.py --device cuda"; do
    echo "== $b"; timeout "$(left 60)" "$py" benchmarks/$b 2>&1 | tee -a "$out/bench_ops.log"
  done
fi
exit $rc
