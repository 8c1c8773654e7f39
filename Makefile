# entropy-lens: `make figures` (set up, then the whole pipeline on the embedded default) and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
RUN    ?= data/runs/demo
TORCH_VERSION ?= 2.13.0

.PHONY: setup test test-slow figures ppl-alpha train collect bench clean

setup: $(STAMP)

# Idempotent: re-runs only when pyproject.toml changes. torch goes in first so that pip never pulls the
# multi-GB CUDA build on a machine without a GPU: a local CPU wheel if pip's find-links has one (installed
# alone with --no-index --no-deps, then its dependencies from the index), else PyTorch's CPU index; with a
# GPU, the default (CUDA) build.
# Not --no-compile: it halves set-up, but where PYTHONDONTWRITEBYTECODE=1 (this box, CI) no .pyc is then ever
# written, and every stage of make figures recompiled torch at import (stages ~17% slower, measured).
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	@if $(PY) -c "import torch" 2>/dev/null; then echo "torch already installed"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install "torch==$(TORCH_VERSION)"; \
	elif $(PY) -m pip install -q --no-index --no-deps "torch==$(TORCH_VERSION)" 2>/dev/null; then \
	  $(PY) -m pip install "torch==$(TORCH_VERSION)"; \
	else $(PY) -m pip install "torch==$(TORCH_VERSION)" --index-url https://download.pytorch.org/whl/cpu; fi
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

# The main job on the embedded default: train, sweep, analyse, regenerate every figure.
figures: setup
	$(PY) -m figures.make_all --run $(RUN)

# GRPO+PPL at α = 0.01, 0.05, 0.1, 0.2 branched from the baseline of `make figures` (about 15 minutes on 2
# cores): figures/out/ppl_alpha.md and figR_ppl_alpha.png.
ppl-alpha: setup
	$(PY) -m figures.ppl_alpha --run $(RUN)

# The embedded trainer alone: SFT warm-up, then GRPO with DAPO's tricks (2 CPU cores, about 6 minutes).
train: setup
	$(PY) -m entropy_lens train --out $(RUN)/baseline

bench: setup
	$(PY) benchmarks/bench_ops.py
	$(PY) benchmarks/bench_train.py

clean:
	rm -rf $(VENV) data/runs figures/out
