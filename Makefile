# TensorMask — the commands of the README.
#   make demo       set up, then run the demo
#   make test       set up, then run all tests (pytest + ctest)
#   make test-all   also the slow tests
#   make test-sdk   install the C++ SDK from the pip build, build + run examples/cpp_app against it
#   make cuda-check compile the CUDA kernels against a CUDA torch (no GPU needed)
#   make fuzz       hypothesis fuzz tests of every native op, >= 10,000 generated cases (FUZZ_EXAMPLES=per test),
#                   and 20,000 hostile model files through the C++ readers (HOSTILE_CASES=...)
#   make sanitize   ASan + UBSan build in build-sanitize/: ctest (4000 hostile model files) and the Python op tests under the sanitizers
#   make bench      benchmarks (ops, label assignment, post-processing, C++ vs Python inference, training step), ratios vs baselines
#   make bench-peer end-to-end speed vs torchvision Mask R-CNN (own venv .venv-peer, ~5.5 GB; BENCH_E2E_ARGS=...)

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The torch to install when none is present (the CPU wheel pip takes from this machine's disk).
TORCH_SPEC ?= torch==2.13.0
BUILD_DEPS := scikit-build-core pybind11 'cmake>=3.28' ninja
TEST_DEPS := pytest hypothesis expecttest tensorboard
APT_DEPS := libgtest-dev nlohmann-json3-dev libstb-dev
CTEST_DIR = $(firstword $(wildcard build/cp*/CTestTestfile.cmake))
export PYTHONUNBUFFERED := 1

.PHONY: all venv system-deps install demo test test-all test-py test-cpp test-sdk cuda-check fuzz sanitize bench bench-peer clean

all: install

# C++ dependencies from Debian packages (GoogleTest for ctest, nlohmann-json, stb).
system-deps:
	@missing=""; for p in $(APT_DEPS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi; \
	fi

# The venv: uses a torch already installed for $(PYTHON) (e.g. a CUDA build on a GPU machine),
# else installs $(TORCH_SPEC).
$(VENV)/.stamp:
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
	  echo "Using the installed torch $$($(PYTHON) -c 'import torch; print(torch.__version__)')"; \
	  $(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
	  $(PYTHON) -m venv $(VENV) && $(PIP) install -q "$(TORCH_SPEC)"; \
	fi
	$(PIP) install -q $(BUILD_DEPS) $(TEST_DEPS)
	touch $@

venv: $(VENV)/.stamp

install: venv system-deps
	$(PIP) install -q --no-build-isolation -e . 
	@$(PY) -c "import tensormask, torch; print('tensormask', tensormask.__version__, 'built against torch', torch.__version__, '| CUDA kernels:', tensormask._C.compiled_with_cuda())"

demo: install
	$(PY) -m tensormask.demo $(DEMO_ARGS)

test: install test-py test-cpp

test-py:
	$(PY) -m pytest -q

test-cpp:
	@test -n "$(CTEST_DIR)" || { echo "no C++ test build found (is libgtest-dev installed?)"; exit 1; }
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/cmake --build $(dir $(CTEST_DIR)) --target tensormask_tests
	$(VENV)/bin/ctest --test-dir $(dir $(CTEST_DIR)) --output-on-failure

# The ctest `example_app` (also run by test-cpp): `cmake --install --component dev` of the pip build
# into <build>/sdk/install, then examples/cpp_app configured with find_package(TensorMask), built, run.
test-sdk:
	@test -n "$(CTEST_DIR)" || { echo "no C++ build found: run make install first"; exit 1; }
	$(VENV)/bin/ctest --test-dir $(dir $(CTEST_DIR)) -R '^example_app$$' --output-on-failure

test-all: install test-cpp
	$(PY) -m pytest -q -m ""

# tests/fuzz at the `fuzz` hypothesis profile (`make test` runs the small `ci` sample); the case count
# per test and the total are printed at the end and written to build/fuzz-report.json. Then the C++
# readers (safetensors, config JSON) on HOSTILE_CASES generated hostile files (tests/cpp/test_io_hostile.cpp;
# `make test` runs 1000 of them, `make sanitize` 4000 under ASan + UBSan).
FUZZ_EXAMPLES ?= 1100
HOSTILE_CASES ?= 20000
fuzz: install
	@mkdir -p build
	HYPOTHESIS_PROFILE=fuzz FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_REPORT=build/fuzz-report.json \
	  $(PY) -m pytest -q -p no:cacheprovider tests/fuzz
	@test -n "$(CTEST_DIR)" || { echo "no C++ test build found (is libgtest-dev installed?)"; exit 1; }
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/cmake --build $(dir $(CTEST_DIR)) --target tensormask_tests
	TENSORMASK_HOSTILE_CASES=$(HOSTILE_CASES) $(dir $(CTEST_DIR))tensormask_tests --gtest_filter='HostileFiles.*'

sanitize: venv system-deps
	VENV=$(VENV) tools/sanitize.sh

cuda-check:
	tools/cuda_check.sh

bench: install
	$(PY) benchmarks/bench_ops.py
	$(PY) benchmarks/bench_assign.py
	$(PY) benchmarks/bench_postprocess.py
	$(PY) benchmarks/bench_cpp_infer.py
	$(PY) benchmarks/bench_train_step.py


# torchvision's Mask R-CNN, the peer of benchmarks/bench_e2e.py, in a venv of its own (torchvision is not
# a dependency of tensormask). PyPI's torchvision pairs with specific torch releases: this pair comes from
# the local wheel store (a CUDA build; it also runs on the CPU), beside our venv's torch.
PEER_VENV ?= .venv-peer
PEER_SPEC ?= torch==2.14.1 torchvision==0.29.1
BENCH_E2E_ARGS ?=

$(PEER_VENV)/.stamp:
	$(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/pip install -q $(PEER_SPEC)
	touch $@

bench-peer: install $(PEER_VENV)/.stamp
	$(PY) benchmarks/bench_e2e.py --peer-python $(PEER_VENV)/bin/python $(BENCH_E2E_ARGS)

clean:
	rm -rf build build-cuda dist
