#!/usr/bin/env bash
# `make sanitize`: the native code under AddressSanitizer + UndefinedBehaviorSanitizer.
#
# 1. Configures and builds libtensormask (the ops and the C++ inference model with its safetensors/JSON
#    readers), tensormask_infer, the Python module tensormask._C and the C++ tests with
#    -DTENSORMASK_SANITIZE=ON in their own build folder ($SANITIZE_BUILD_DIR, default build-sanitize/);
#    the normal build (build/cp*) is not touched.
# 2. Runs ctest there (not the `sdk` label, see below). The hostile-file test (tests/cpp/test_io_hostile.cpp)
#    runs TENSORMASK_HOSTILE_CASES generated files (default here 4000; `make test` runs 1000).
# 3. Runs the Python op tests (tests/ops, and the fuzz tests at the small `ci` profile) with the
#    sanitized _C: TENSORMASK_NATIVE_DIR makes `import tensormask` load _C (and, by its RUNPATH, the
#    sanitized libtensormask.so) from the build folder; the ASan runtime is LD_PRELOADed into python.
#    SANITIZE_PYTEST_ARGS / SANITIZE_PYTEST_K / HYPOTHESIS_PROFILE change what runs.
#
# Every sanitizer report aborts the run (halt_on_error); leak detection is off because the Python
# interpreter and libtorch keep their allocations until exit (thousands of "leaks" that are not ours).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=$(cd "${VENV:-$here/.venv}" && pwd)
py="$venv/bin/python"
build=${SANITIZE_BUILD_DIR:-$here/build-sanitize}
pytest_args=${SANITIZE_PYTEST_ARGS:-tests/ops tests/fuzz}
# torch.compile tests are left out: inductor compiles and loads its own C++ (not ours) in subprocesses.
pytest_k=${SANITIZE_PYTEST_K:-not compile}
start=$(date +%s)

export PATH="$venv/bin:$PATH"
export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:abort_on_error=1:detect_leaks=0:detect_odr_violation=0:print_summary=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1:print_summary=1}

echo "sanitize: configuring $build (ASan + UBSan, RelWithDebInfo)"
cmake -S "$here" -B "$build" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DTENSORMASK_SANITIZE=ON -DTENSORMASK_CUDA=OFF -DTENSORMASK_BUILD_TESTS=ON \
  -DTENSORMASK_BUILD_MODEL=ON -DSKBUILD=ON -DPython_EXECUTABLE="$py" -Dpybind11_DIR="$("$py" -m pybind11 --cmakedir)" >/dev/null
echo "sanitize: building (${SANITIZE_JOBS:-2} jobs)"
nice -n 10 cmake --build "$build" -j "${SANITIZE_JOBS:-2}"
built=$(date +%s)

echo "sanitize: ctest"
export TENSORMASK_HOSTILE_CASES=${TENSORMASK_HOSTILE_CASES:-4000}
# Label `sdk` (example_app: installs the SDK and builds an outside app against it) is left out: that app
# is not built with the sanitizers, and an uninstrumented executable cannot load an ASan library.
ctest --test-dir "$build" --output-on-failure -LE sdk

echo "sanitize: python op tests with the sanitized _C: $pytest_args -k '$pytest_k'"
# libstdc++ is preloaded too: python does not link it, and ASan must find the real __cxa_throw when it
# starts, else the first C++ exception (an argument check) aborts in ASan's interceptor.
preload="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"
(
  export LD_PRELOAD="$preload" TENSORMASK_NATIVE_DIR="$build" HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-ci}
  # shellcheck disable=SC2086
  # --capture=sys: pytest captures Python's sys.stderr only, so a sanitizer report (written to fd 2
  # just before the abort) reaches the terminal instead of a capture file that is never shown.
  "$py" -m pytest -q -p no:cacheprovider --capture=sys $pytest_args -k "$pytest_k"
)
end=$(date +%s)
echo "sanitize: clean (build $((built - start)) s, tests $((end - built)) s)"
