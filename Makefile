# Every target is a thin wrapper over a `sepvae` subcommand; see README.md.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# TIMIT: an explicit TIMIT_ROOT wins; otherwise the shared sample beside the checkout if present;
# otherwise `sepvae data` looks in data/raw/timit and downloads the free sample there.
SHARED_TIMIT := $(abspath ../shared/data/timit-sample)
TIMIT_ROOT ?= $(if $(wildcard $(SHARED_TIMIT)/dr1-fvmh0),$(SHARED_TIMIT),)
export TIMIT_ROOT
CONFIG ?= experiments/reproduce.toml
SEPVAE := $(BIN)/sepvae
# Where train, separate and evaluate run their jobs: local, or ray (README: Running on a Ray
# cluster; the cluster is $RAY_ADDRESS, e.g. `RAY_ADDRESS=auto make sweeps EXECUTOR=ray`).
EXECUTOR ?= local
JOBS := --executor $(EXECUTOR)

.PHONY: setup test data mix train separate evaluate report reproduce bench pretrained clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

test: setup
	$(BIN)/python -m pytest -q

data: setup
	$(SEPVAE) data

mix: data
	$(SEPVAE) mix --config $(CONFIG)

train: mix
	$(SEPVAE) train --config $(CONFIG) $(JOBS)

separate: train
	$(SEPVAE) separate-set --config $(CONFIG) $(JOBS)

evaluate: separate
	$(SEPVAE) evaluate --config $(CONFIG) $(JOBS)

report: evaluate
	$(SEPVAE) report --config $(CONFIG)

reproduce: report

# The shipped default model: the best gender-mode model of make reproduce's evaluation.
pretrained: evaluate
	$(SEPVAE) export-model --config $(CONFIG) --method best --name default

# The paper's sweeps (experiments/README.md); each regenerates experiments/RESULTS.md.
SWEEPS := sweep-window sweep-latent sweep-batch sweep-beta sweep-itl-latent compare-models
.PHONY: sweeps results $(SWEEPS) $(SWEEPS:=-large)
$(SWEEPS) $(SWEEPS:=-large): data
	$(SEPVAE) mix --config experiments/$@.toml
	$(SEPVAE) train --config experiments/$@.toml $(JOBS)
	$(SEPVAE) separate-set --config experiments/$@.toml $(JOBS)
	$(SEPVAE) evaluate --config experiments/$@.toml $(JOBS)
	$(SEPVAE) report --config experiments/$@.toml
	$(SEPVAE) results

# The six sweeps, then their -large twins (the same models on ~100 test mixtures).
sweeps: $(SWEEPS) $(SWEEPS:=-large)

results: setup
	$(SEPVAE) results

bench: setup
	$(BIN)/python benchmarks/train_speed.py
	$(BIN)/python benchmarks/separate_speed.py

clean:
	rm -rf runs reports
