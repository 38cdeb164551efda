# n2m: the two set-up commands are `make setup` and `make test`; the main job is `make demo`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
# TORCH=auto picks cuda when nvidia-smi finds a GPU, else cpu. Force with TORCH=cpu or TORCH=cuda.
TORCH ?= auto
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PYTEST_ARGS ?=
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup test lint demo bench clean

setup: $(BIN)/n2m

$(BIN)/n2m: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
	@flavour="$(TORCH)"; \
	if [ "$$flavour" = auto ]; then \
	  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then flavour=cuda; else flavour=cpu; fi; \
	fi; \
	echo "setup: torch $(TORCH_VERSION) ($$flavour build)"; \
	if $(BIN)/python -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$(TORCH_VERSION)' and ((torch.version.cuda is None) == ('$$flavour' == 'cpu')) else 1)" 2>/dev/null; then \
	  echo "setup: torch already installed"; \
	elif [ "$$flavour" = cpu ]; then \
	  $(BIN)/pip install -q --no-deps --no-index "torch==$(TORCH_VERSION)" 2>/dev/null \
	  || $(BIN)/pip install -q "torch==$(TORCH_VERSION)" --index-url $(TORCH_CPU_INDEX) --extra-index-url https://pypi.org/simple; \
	else \
	  $(BIN)/pip install -q "torch==$(TORCH_VERSION)"; \
	fi
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(BIN)/n2m
	@echo "setup: done ($(BIN)/n2m)"

test: setup
	@$(BIN)/python -m pytest -q $(PYTEST_ARGS); code=$$?; \
	if [ $$code -eq 5 ]; then echo "pytest: no tests collected"; code=0; fi; exit $$code

lint: setup
	$(BIN)/ruff check n2m pipelines labeling training eval tests benchmarks

demo: setup
	$(BIN)/n2m synth --out demo/corpus --tracks 24 --seed 0

bench: setup
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf demo .pytest_cache .ruff_cache build *.egg-info
