# Two commands matter: `make book` (the main job) and `make test`.
# Everything installs into a local virtual environment ($(VENV)).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= cpu
TORCH_PIN ?= torch==2.13.0
STAMP := $(VENV)/.installed
MATHJAX_VERSION ?= 3.2.2

.PHONY: install test results book bench clean mathjax fidelity fewshot edes table1-acdc spread gpu-check

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned, so nothing later pulls a multi-GB CUDA build
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[test,book]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

# The suite runs on TEST_WORKERS pytest-xdist workers, a file to a worker (--dist loadfile: a notebook's
# nbval cells share one kernel, and a module's fixtures are built once), in collection order, the two
# whole ci book runs first (conftest.py); each worker's torch gets its share of the cores
TEST_WORKERS ?= 2
test: $(STAMP) mathjax
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# Where `make book` puts the numbers its live chapters produce (a build folder, not committed):
# rendering the book leaves the clone clean
BOOK_RESULTS ?= _build/results

# Re-record the committed results/<PROFILE>/ (explicit): execute every notebook with papermill
# for PROFILE (ci | cpu | gpu) into book/_executed/, saving numbers under results/
results: $(STAMP)
	$(PY) -m drdm.bookrun --profile $(PROFILE)

# The book: the same notebooks, their numbers into $(BOOK_RESULTS), then the HTML
book: $(STAMP) mathjax
	$(PY) -m drdm.bookrun --profile $(PROFILE) --results $(BOOK_RESULTS)
	$(VENV)/bin/jupyter-book build . -W --keep-going
	@echo "book: _build/html/index.html (numbers of this run: $(BOOK_RESULTS)/$(PROFILE)/)"

# MathJax from npm into book/_static/mathjax (not committed), so the book shows maths offline;
# without npm the book loads it from the CDN instead (book/_ext/drdm_book.py)
mathjax:
	@bash tools/get_mathjax.sh $(MATHJAX_VERSION) book/_static/mathjax

# drdm's recovery (release setting) against the release's own loop on 40 M&Ms slices, in distribution,
# and the divergence curves of chapter 3; needs ../shared; about 40 min on 2 cores, resumable
fidelity: $(STAMP)
	$(PY) -m drdm.fidelity --chaos

# the recorded few-shot segmentation run, Table 2 on ACDC (chapter 4, results/cpu/segmentation_acdc.*): needs
# ../shared/data/acdc_slices; about 15 to 25 h on 2 cores (two machines' rates, chapter 4), resumable
# (cells, weights and copies stay in runs/fewshot; a lost runs/fewshot gets its finished cells back from the
# committed record, so only copies are remade, counted once by the record's ledger; a record of another run key,
# other slices in ../shared or another protocol, stops it with an error)
FEWSHOT_RECORD := results/cpu/segmentation_acdc.json
fewshot: $(STAMP)
	$(VENV)/bin/drdm fewshot --data acdc-h5 --data-dir ../shared/data/acdc_slices --protocol cpu \
		$(if $(wildcard $(FEWSHOT_RECORD)),--restore $(FEWSHOT_RECORD))

# Table 3 on cardiac MRI: ACDC ED<->ES registration, VoxelMorph on real pairs, DRDM and MRBS synthetic
# pretraining (chapter 5, results/cpu/registration_acdc.*): needs ../shared; resumable (runs/edes)
edes: $(STAMP)
	$(PY) -m drdm.tasks.edes

# Table 1 of the paper against the release's weights on the 70 shared ACDC subjects, every level,
# a verdict per row (chapter 3, results/cpu/table1_acdc.*): needs ../shared; resumable (runs/table1_acdc)
table1-acdc: $(STAMP)
	$(PY) -m drdm.tasks.table1

# How far chapters 4-5's live phantom comparisons move with the seed alone (2 seeds of the cpu profile;
# results/cpu/phantom_spread.json, which the chapters read); resumable (runs/phantom_spread)
spread: $(STAMP)
	$(PY) tools/phantom_spread.py

bench: $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/forward_fields.py
	$(PY) benchmarks/sampling.py
	$(PY) benchmarks/training.py

# One CUDA GPU, at most 10 minutes: sampling at 256^2 batched, training throughput with mixed precision
# at the paper's sizes, and the gpu profile of notebooks 02 and 03 (training steps bounded by
# notebooks/params/gpu-check.yaml); writes results/bench/*_cuda.json and results/gpu/. Fails with a
# message when CUDA is absent. In an environment of your own (conda): make gpu-check PY=python
gpu-check:
	PY=$(PY) bash tools/gpu_check.sh

clean:
	rm -rf _build book/_executed
