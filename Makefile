# n2m: the two set-up commands are `make setup` and `make test`; the main job is `make demo`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
# TORCH=auto picks cuda when nvidia-smi finds a GPU, else cpu. Force with TORCH=cpu or TORCH=cuda. torch comes from pip's
# configured index: for a CPU build on a machine whose index serves CUDA builds, point pip at a CPU wheel index through
# pip's own settings (PIP_EXTRA_INDEX_URL or pip.conf); setup prints which build it got.
TORCH ?= auto
PYTEST_ARGS ?=
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup test lint demo bench clean

# The pretrained models (musicnn taggers, MiniLM) are fetched into models/ on every setup: a no-op once installed.
setup: $(BIN)/n2m
	@$(BIN)/n2m models fetch

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
	else \
	  $(BIN)/pip install -q "torch==$(TORCH_VERSION)"; \
	  $(BIN)/python -c "import torch; print('setup: got torch', torch.__version__, 'CUDA', torch.version.cuda)"; \
	fi
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(BIN)/n2m
	@echo "setup: done ($(BIN)/n2m)"

test: setup
	@$(BIN)/python -m pytest -q $(PYTEST_ARGS); code=$$?; \
	if [ $$code -eq 5 ]; then echo "pytest: no tests collected"; code=0; fi; exit $$code

lint: setup
	$(BIN)/ruff check n2m pipelines labeling training eval tests benchmarks

# The demo: the whole chain on CPU in about 12.5 minutes (measured on a shared 2-core box). Every step is a plain n2m command, printed before it
# runs; `make demo DEMO_TRACKS=80 DEMO_CLAP_MINUTES=5 ...` scales it. Results: $(DEMO)/report.html.
DEMO ?= demo
DEMO_TRACKS ?= 40
DEMO_CLAP_STEPS ?= 800
DEMO_CLAP_MINUTES ?= 4
DEMO_GENERATOR_STEPS ?= 600
DEMO_CASCADER_STEPS ?= 250
DEMO_SR_STEPS ?= 200
DEMO_SAMPLE_STEPS ?= generator=30,cascader=10,sr_cascader=8
DEMO_TRAIN = --build $(DEMO)/out --labels v1 --preset tiny --exclude-holdout --lr 1e-3 --warmup-steps 20 \
  --ema-decay 0.99 --num-workers 1 --val-every 100 --log-every 10
DEMO_GENERATOR = --stage generator --text-encoder clap:$(DEMO)/clap --window 10 --net 'strides=[16,16]'
DEMO_CASCADER = --stage cascader --text-encoder clap:$(DEMO)/clap --window 1,1.5
DEMO_SR = --stage sr_cascader --window 1,1.5
DEMO_SAMPLE = --prompts-file $(DEMO)/eval/prompts.jsonl --cascade waveform --seconds 10 --sampler dpmpp \
  --steps $(DEMO_SAMPLE_STEPS) --seed 0 --batch-size 8
DEMO_EVAL = --captions $(DEMO)/eval/prompts.jsonl --id-column id --caption-column text \
  --reference-audio $(DEMO)/corpus/audio --clap $(DEMO)/clap --cache-dir $(DEMO)/eval/cache --samples 4
demo_step = @printf '\n\033[1m== %s  [%s]\033[0m\n' "$(1)" "$$(date +%T)"
demo_ckpts = generator=$(DEMO)/runs/$(1)/generator/checkpoints/last.ckpt,cascader=$(DEMO)/runs/$(1)/cascader/checkpoints/last.ckpt,sr_cascader=$(DEMO)/runs/$(1)/sr_cascader/checkpoints/last.ckpt

demo: export PATH := $(CURDIR)/$(BIN):$(PATH)
demo: setup
	@echo "n2m demo: every step below is a plain n2m command; outputs under $(DEMO)/ (removed first)"
	@rm -rf $(DEMO)
	$(call demo_step,1/12 synthetic corpus with held-out tracks)
	n2m synth --out $(DEMO)/corpus --tracks $(DEMO_TRACKS) --seed 0 --holdout 0.2 --min-seconds 20 --max-seconds 30 --workers 0
	$(call demo_step,2/12 Beam build: 10 s clips in WebDataset shards)
	n2m build --input $(DEMO)/corpus/manifest.jsonl --output $(DEMO)/out --clip-seconds 10 --split train=0.9,valid=0.1,test=0
	$(call demo_step,3/12 vocabularies (template generator standing in for an LLM) and aspects)
	n2m vocab generate --from $(DEMO)/corpus/manifest.jsonl --llm template --out $(DEMO)/vocab/long.parquet --per-track 3 --exclude-holdout
	n2m vocab aspects --out $(DEMO)/vocab/aspects.parquet
	$(call demo_step,4/12 small CLAP trained on the training tracks' captions)
	n2m clap-train --build $(DEMO)/out --captions $(DEMO)/corpus/manifest.jsonl --out $(DEMO)/clap --max-steps $(DEMO_CLAP_STEPS) --minutes $(DEMO_CLAP_MINUTES) --threads 1
	$(call demo_step,5/12 CLAP pseudo-labels for every clip (Beam) and their precision on held-out tracks)
	n2m label --build $(DEMO)/out --vocab $(DEMO)/vocab/long.parquet --vocab $(DEMO)/vocab/aspects.parquet --model $(DEMO)/clap --name v1
	n2m label-eval --labels $(DEMO)/out/labels/v1 --truth $(DEMO)/corpus/manifest.jsonl --json $(DEMO)/label_eval.json
	$(call demo_step,6/12 train the tiny generator (text -> 3.2 kHz))
	n2m train $(DEMO_GENERATOR) $(DEMO_TRAIN) --out $(DEMO)/runs/trained/generator --max-steps $(DEMO_GENERATOR_STEPS)
	$(call demo_step,7/12 train the tiny cascader (text + 3.2 kHz -> 16 kHz))
	n2m train $(DEMO_CASCADER) $(DEMO_TRAIN) --out $(DEMO)/runs/trained/cascader --max-steps $(DEMO_CASCADER_STEPS)
	$(call demo_step,8/12 train the tiny super-resolution cascader (16 -> 24 kHz))
	n2m train $(DEMO_SR) $(DEMO_TRAIN) --out $(DEMO)/runs/trained/sr_cascader --max-steps $(DEMO_SR_STEPS)
	$(call demo_step,9/12 the untrained baseline: the same three networks at step 0)
	n2m train $(DEMO_GENERATOR) $(DEMO_TRAIN) --out $(DEMO)/runs/step0/generator --max-steps 0
	n2m train $(DEMO_CASCADER) $(DEMO_TRAIN) --out $(DEMO)/runs/step0/cascader --max-steps 0
	n2m train $(DEMO_SR) $(DEMO_TRAIN) --out $(DEMO)/runs/step0/sr_cascader --max-steps 0
	$(call demo_step,10/12 held-out prompts; sample the trained and the untrained cascade)
	n2m eval prompts --manifest $(DEMO)/corpus/manifest.jsonl --holdout-only --out $(DEMO)/eval/prompts.jsonl
	n2m sample $(DEMO_SAMPLE) --checkpoints $(call demo_ckpts,trained) --out $(DEMO)/samples/trained
	n2m sample $(DEMO_SAMPLE) --checkpoints $(call demo_ckpts,step0) --out $(DEMO)/samples/step0
	$(call demo_step,11/12 FAD (demo CLAP) and CLAP score vs shuffled prompts against the held-out tracks)
	n2m eval musiccaps $(DEMO_EVAL) --generated $(DEMO)/samples/trained --out $(DEMO)/reports/trained
	n2m eval musiccaps $(DEMO_EVAL) --generated $(DEMO)/samples/step0 --out $(DEMO)/reports/step0
	$(call demo_step,12/12 the report (trained vs step 0; quality bars; label precision; training curves))
	n2m eval compare $(DEMO)/reports/trained $(DEMO)/reports/step0 --baseline step0 --label-eval $(DEMO)/label_eval.json \
	  --training-logs $(DEMO)/runs/trained/generator $(DEMO)/runs/trained/cascader $(DEMO)/runs/trained/sr_cascader \
	  --title "n2m demo: trained tiny cascade vs step 0" --out $(DEMO)/reports/compare --html $(DEMO)/report.html
	@echo; echo "n2m demo: done -> $(DEMO)/report.html"

bench: setup
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf demo .pytest_cache .ruff_cache build *.egg-info
