#!/usr/bin/env bash
# Compile-check the CUDA kernels on a machine without a GPU (`make cuda-check`).
#
# Builds the whole extension (libtensormask with cuda/*.cu, the Python module, the C++ tests) against
# a CUDA build of torch in its own venv, with nvcc from the local CUDA toolkit. The toolkit lacks some
# headers/libraries that torch's CMake config asks for (cuBLAS, cuSPARSE, nvrtc, ...); they come from
# the `nvidia` pip packages that the CUDA torch wheel installed into that venv.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${CUDA_VENV:-$here/.venv-cuda}
torch_spec=${CUDA_TORCH:-torch==2.11.0}  # what the GPU machines run (2.11.0+cu130); older headers than ours catch more
build=${CUDA_BUILD_DIR:-$here/build-cuda}
cuda_home=${CUDA_HOME:-/usr/local/cuda}
export CUDACXX=${CUDACXX:-$cuda_home/bin/nvcc}

if [ ! -x "$CUDACXX" ]; then
  echo "cuda-check: nvcc not found at $CUDACXX (set CUDA_HOME)"; exit 1
fi
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null; then
  echo "cuda-check: creating $venv with $torch_spec (CUDA build, several GB, from the local wheel store)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "$torch_spec" numpy scikit-build-core pybind11 'cmake>=3.28' ninja
fi
py="$venv/bin/python"
nv=$("$py" -c "import nvidia, os; print(os.path.dirname(nvidia.__path__[0] if hasattr(nvidia, '__path__') else nvidia.__file__))")/nvidia
nv_inc=$(ls -d "$nv"/*/include 2>/dev/null | tr '\n' ';')
# Unversioned .so links for the libraries the wheels ship only as .so.N, so CMake's find_library sees them.
shim="$build/cuda-libs"
mkdir -p "$shim"
for lib in "$nv"/*/lib/lib*.so.*; do
  base=$(basename "$lib"); name=${base%%.so.*}
  [ -e "$shim/$name.so" ] || ln -sf "$lib" "$shim/$name.so"
done
inc_flags=""
for d in ${nv_inc//;/ }; do inc_flags="$inc_flags -I$d"; done

echo "cuda-check: $("$py" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)'), $("$CUDACXX" --version | tail -1)"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
start=$(date +%s)
"$py" -m pip wheel --no-build-isolation --no-deps -q -w "$build/dist" \
  -Cbuild-dir="$build/tree" \
  -Ccmake.define.TENSORMASK_CUDA=ON \
  -Ccmake.define.CUDAToolkit_ROOT="$cuda_home" \
  -Ccmake.define.CUDA_TOOLKIT_ROOT_DIR="$cuda_home" \
  -Ccmake.define.CUDA_TOOLKIT_INCLUDE="$cuda_home/include" \
  -Ccmake.define.CMAKE_LIBRARY_PATH="$shim" \
  -Ccmake.define.CMAKE_CUDA_FLAGS="$inc_flags" \
  -Ccmake.define.CMAKE_CXX_FLAGS="$inc_flags" \
  "$here"
echo "cuda-check: CUDA kernels built in $(( $(date +%s) - start ))s: $(ls "$build"/tree/*.so | xargs -n1 basename | tr '\n' ' ')"
n_cu=$(ls "$here"/cuda/*.cu | wc -l)
n_obj=$(find "$build/tree" -name '*.cu.o' | wc -l)
if [ "$n_obj" -lt "$n_cu" ]; then
  echo "cuda-check: FAILED: only $n_obj of $n_cu CUDA sources were compiled"; exit 1
fi
# Load the CUDA build (torch's CUDA wheel imports without a GPU) and run a CPU op through an error path:
# its message must keep its numbers (a private, static C++ runtime writes none, or crashes).
site="$build/site"
rm -rf "$site"
"$py" -m pip install -q --no-deps --no-index --target "$site" "$build"/dist/tensormask-*.whl
PYTHONPATH="$site" "$py" - <<'PY'
import torch, tensormask
assert tensormask._C.compiled_with_cuda(), "the CUDA build has no CUDA kernels"
try:
    torch.ops.tensormask.align2nat(torch.zeros(3), 1, -1.0)
except ValueError as e:
    assert "got 1D with shape [3]" in str(e), f"error message lost its numbers: {e}"
else:
    raise AssertionError("align2nat accepted a 1D tensor")
print("cuda-check: the CUDA build loads, and its CPU error messages are whole")
PY
echo "cuda-check: OK ($n_obj CUDA sources compiled for sm_${TORCH_CUDA_ARCH_LIST//./})"
