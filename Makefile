# Two entry points, both safe on a fresh machine: `make demo` and `make test`.
# Each creates .venv when missing, installs the pinned torch FIRST (an unpinned torch pulled in by
# a dependency would fetch a multi-GB CUDA build), then the project, then runs.
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: demo test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.torch-$(TORCH_VERSION): | $(PY)
	$(PIP) install --quiet "torch==$(TORCH_VERSION)"
	touch $@

# The demo needs only the core (no DALI, no Horovod, no CuPy).
$(VENV)/.installed-core: pyproject.toml $(VENV)/.torch-$(TORCH_VERSION)
	$(PIP) install --quiet -e .
	touch $@

# Tests also compile every CUDA kernel (CuPy + NVRTC wheels), compare with the `srad` package,
# run the DALI loaders and launch Horovod ranks. Horovod is built from its sdist with a C++17
# patch (about 5 minutes once; the wheel is cached under ~/.cache/augengine/wheels).
$(VENV)/.installed-test: pyproject.toml .ci/build-horovod.sh $(VENV)/.torch-$(TORCH_VERSION)
	$(PIP) install --quiet -e ".[gpu,train,test]"
	bash .ci/build-horovod.sh $(VENV)
	touch $@

demo: $(VENV)/.installed-core
	$(VENV)/bin/augengine demo

test: $(VENV)/.installed-test
	$(PY) -m pytest -q -ra

bench: $(VENV)/.installed-test
	$(PY) benchmarks/bench_reconstruction.py
	$(PY) benchmarks/bench_store.py
	$(PY) benchmarks/bench_run_memory.py
	$(PY) benchmarks/bench_srad.py
	$(PY) benchmarks/bench_bmode_gpu.py
	$(PY) benchmarks/bench_loader.py
	$(PY) benchmarks/bench_nst.py

clean:
	rm -rf demo-output .pytest_cache
