# t2iguard: one command to run the main job, one to run the tests (see README).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test install install-dev lint typecheck bench bench-redteam bench-system clean bench-gateway bench-image bench-prompts train-prompt-classifier train-prompt-classifier-multilingual train-prompt-classifier-indirect train-encoder-adapter

# torch is installed first and pinned to the CPU build: a later dependency that asks for torch
# (diffusers, transformers) must never pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install $(TORCH)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install -e '.[all]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(PIP) install -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## Main job: the stack on its built-in example prompts and images, printing decisions, then the
## whole stack around the bundled tiny model: generation, output check, regeneration with guidance.
demo: install
	$(VENV)/bin/t2iguard demo
	$(VENV)/bin/t2iguard generate "a knife and an apple on a blue background" --backend tiny --seed 0 -o out/demo-tiny.png

## Tests: lint, type-check, then the test suite.
test: install-dev lint typecheck
	$(VENV)/bin/pytest

lint: install-dev
	$(VENV)/bin/ruff check src tests bench training
	$(VENV)/bin/ruff format --check src tests bench training

typecheck: install-dev
	$(VENV)/bin/mypy

## Benchmarks (results in bench/results/); DATA points at ../shared/benchmarks by default.
DATA ?= ../shared/benchmarks
bench: install-dev
	$(PY) bench/bench_latency.py --data $(DATA)

## Red-team ASR (dev seeds, I2P, CoProV2) -> bench/results/redteam*.{json,md,html}
bench-redteam: install-dev
	$(PY) bench/redteam_asr.py --data $(DATA) --limit 400

## System benchmark, I2P + COCO through the whole stack -> bench/results/system.{json,md,html}
GENERATOR ?= tiny
bench-system: install-dev
	$(VENV)/bin/t2iguard bench system --datasets i2p,coco --limit 500 --generator $(GENERATOR) --data $(DATA) --out bench/results

## Gateway load test: 50 clients x 60 s on loopback (procedural generator), audit log verified.
bench-gateway: install-dev
	$(PY) bench/gateway_load.py
	$(PY) bench/gateway_load.py --prompt-only

## Image benchmarks: watermark robustness / false detections, per-stage latency at 512x512.
bench-image: install-dev
	$(PY) bench/bench_watermark.py
	$(PY) bench/bench_image_latency.py

## Prompt classifiers vs baselines (HTML/JSON/markdown in bench/results/prompts). The baselines
## are installed into the venv for the benchmark only; they are never dependencies of t2iguard
## (en-prompt-nsfw-pipeline-* are licensed "UNLICENSED").
PROMPT_BASELINES := en-prompt-nsfw-pipeline-bilstm en-prompt-nsfw-pipeline-char-embed alt-profanity-check
bench-prompts: install-dev
	$(PIP) install $(PROMPT_BASELINES)
	$(PY) bench/bench_prompts.py --data $(DATA)

# Authored prompt files (order matters: one seeded draw runs through them in turn)
AUTHORED := training/prompt_classifier/authored_prompts
# the broader everyday captions of 2026-12-04, in both heads
EVERYDAY2 := everyday2_home everyday2_outdoor everyday2_people
# the English head's authored files (its recipe and the encoder fine-tuning's split)
ENGLISH_EXTRAS := $(foreach f,people everyday $(EVERYDAY2),--extra-authored $(AUTHORED)_$(f).yaml)

## An experiment, not the shipped heads (training/prompt_classifier/NOTES.md, 2026-12-04 afternoon):
## fine-tune the MiniLM encoder with LoRA on the English head's training split and write
## $(FINETUNE)/adapter.safetensors (finetune_encoder.py: about 80 s on one H200, about 40 min on
## 2 CPU cores); a head trained with `train.py --adapter $(FINETUNE)/adapter.safetensors` reads
## through it, and the stage merges it into the encoder at load time.
FINETUNE := training/prompt_classifier/.finetune
train-encoder-adapter: install-dev
	$(PY) training/prompt_classifier/train.py --data $(DATA) \
		$(ENGLISH_EXTRAS) --calibrate-on natural \
		--export-train $(FINETUNE)/train.jsonl.gz
	$(PY) training/prompt_classifier/finetune_encoder.py export --out $(FINETUNE)
	$(PY) training/prompt_classifier/finetune_encoder.py train --weights $(FINETUNE)/bert.safetensors \
		--data $(FINETUNE)/train.jsonl.gz --out $(FINETUNE)/adapter.safetensors
	$(PY) training/prompt_classifier/finetune_encoder.py check --weights $(FINETUNE)/bert.safetensors \
		--adapter $(FINETUNE)/adapter.safetensors

## Retrain the prompt classifier head (fixed seed, a 3-member ensemble, about 4 min; writes
## src/t2iguard/prompt/models/prompt_classifier). After it, the default policy takes the model card's
## thresholds, and the indirect tier's are chosen again against it (tier_thresholds.py, as in
## train-prompt-classifier-indirect).
train-prompt-classifier: install-dev
	nice -n 10 $(PY) training/prompt_classifier/train.py --data $(DATA) --ensemble 3 \
		$(ENGLISH_EXTRAS) \
		--calibrate-on natural

## The multilingual tier's head (multilingual-e5-small; about 40 min on 2 cores, mostly embedding)
train-prompt-classifier-multilingual: install-dev
	nice -n 10 $(PY) training/prompt_classifier/train.py --data $(DATA) --encoder e5 \
		--out src/t2iguard/prompt/models/prompt_classifier_multilingual \
		$(foreach f,people everyday indirect composed es de fr pt it $(EVERYDAY2),--extra-authored $(AUTHORED)_$(f).yaml) \
		--calibrate-on natural

## The indirect-request tier (a 3-member MiniLM ensemble, about 10 min), then its tier thresholds
## against the English head at the default policy's thresholds (training/prompt_classifier/tier_thresholds.py)
train-prompt-classifier-indirect: install-dev
	nice -n 10 $(PY) training/prompt_classifier/train.py --data $(DATA) --ensemble 3 --tier indirect \
		--out src/t2iguard/prompt/models/prompt_classifier_indirect \
		$(foreach f,people everyday indirect composed contrast_people contrast_groups contrast_objects \
			contrast_words indirect_sexual indirect_violence indirect_selfharm_illegal indirect_hate, \
			--extra-authored $(AUTHORED)_$(f).yaml) --calibrate-on natural
	nice -n 10 $(PY) training/prompt_classifier/tier_thresholds.py --data $(DATA) \
		--head src/t2iguard/prompt/models/prompt_classifier_indirect --everyday-budget "sexual=1,illegal=2,*=0"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
