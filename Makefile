# Two commands do everything on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
FMNIST := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export GIT_PYTHON_REFRESH := quiet
export PYTHONUNBUFFERED := 1

.PHONY: demo test test-fast setup data weights bench typecheck clean device-suite

setup: $(VENV)/.installed

# torch 2.14.1 / torchvision 0.29.1 install from this machine's local disk (see README).
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test]'
	touch $@

data: $(FMNIST)

$(FMNIST):
	$(SUDO) apt-get update -q
	$(SUDO) apt-get install -y -q dataset-fashion-mnist

demo: setup data
	$(PY) -m eval.demo

test: setup data
	$(PY) -m pytest -q

# The inner loop (under a minute): every test but the end-to-end runs marked slow, which `make test` runs once.
test-fast: setup data
	$(PY) -m pytest -q -m "not slow"

typecheck: setup
	$(PY) -m mypy

bench: setup data
	$(PY) -m benchmarks.projection

# The prepared GPU run (benchmarks/device_suite.py): here it lists the jobs and checks what would
# travel (DRY_RUN=1, the default) or prepares .device/ (PREPARE=1); on a lent GPU the device tool
# runs `bash benchmarks/device_run.sh` instead.
DRY_RUN ?= 1
device-suite: setup data
ifeq ($(PREPARE),1)
	$(PY) -m benchmarks.device_suite --prepare
endif
ifeq ($(DRY_RUN),1)
	$(PY) -m benchmarks.device_suite --dry-run --jobs $(or $(JOBS),default)
else
	$(PY) -m benchmarks.device_suite --jobs $(or $(JOBS),default) --pack results/device
endif

# Retrain the shipped weights (about an hour on 2 CPU cores; minutes on a GPU).
weights: setup data
	$(PY) -m manifold_defense.training.wgan_gp --dim 32 --lr 2e-4 --iterations 8000 --max-minutes 42 \
		--out manifold_defense/weights/fashion_mnist/generator
	$(PY) -m manifold_defense.training.classifier --epochs 6 --out manifold_defense/weights/fashion_mnist/classifier
	$(PY) -m manifold_defense.training.encoder --out manifold_defense/weights/fashion_mnist/encoder

clean:
	rm -rf $(VENV) runs results .pytest_cache .mypy_cache
