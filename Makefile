# Every target creates or refreshes .venv from requirements.txt itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

# torch goes in first, as the build for this machine. Where an NVIDIA driver lists a GPU (`nvidia-smi -L`): the
# CUDA build from PyPI, in the range requirements.txt gives. Elsewhere: the CPU build of the version the suite is
# tested with, from PyTorch's CPU index (PyPI's Linux wheels are CUDA builds, gigabytes larger), or, where that
# index does not answer (an offline mirror), the same version from the indexes pip is set up with
# (tools/install_torch.py). Override: `make test TORCH_BUILD=cpu`, `make test TORCH_SPEC='torch==2.5.1'`.
ifndef TORCH_BUILD
TORCH_BUILD := $(shell nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)
endif
ifeq ($(TORCH_BUILD),cpu)
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
else
TORCH_SPEC ?= torch>=2.2,<3
endif
# The torch stamp is named after what was asked for: another spec or index makes a new stamp, so torch is reinstalled.
TORCH_STAMP := $(VENV)/.torch-$(shell printf '%s' '$(TORCH_SPEC) $(TORCH_INDEX)' | cksum | cut -d' ' -f1)
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-all bench lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

$(TORCH_STAMP): | $(PY)
	@echo "torch: the $(TORCH_BUILD) build (nvidia-smi -L; override with TORCH_BUILD=cpu|cuda or TORCH_SPEC=...)"
	rm -f $(VENV)/.torch-*
	$(PY) tools/install_torch.py "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--cpu-index $(TORCH_INDEX))
	touch $@

$(STAMP): $(TORCH_STAMP) requirements.txt requirements-dev.txt pyproject.toml
	$(PY) -m pip install -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --no-deps -e .
	touch $@

setup: $(STAMP)

demo: $(STAMP)
	$(PY) main.py

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ""

bench: $(STAMP)
	$(PY) -m bench

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
