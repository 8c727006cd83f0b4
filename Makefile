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

# Training's stacked matmuls use both cores of an idle 2-core machine (1.55x one thread, make
# bench). Where another process holds a core, two threads train 3x slower than one: there
# use TRAIN_CPUS=1 (or OMP_WAIT_POLICY=PASSIVE, which makes two threads cost little).
TRAIN_CPUS ?= 2
train: mix
	$(SEPVAE) train --config $(CONFIG) $(JOBS) --num-cpus $(TRAIN_CPUS)

separate: train
	$(SEPVAE) separate-set --config $(CONFIG) $(JOBS)

evaluate: separate
	$(SEPVAE) evaluate --config $(CONFIG) $(JOBS)

report: evaluate
	$(SEPVAE) report --config $(CONFIG)

reproduce: report

# The shipped default model: trained on every speaker (experiments/pretrained.toml), chosen by
# the unseen-speaker cross-validation (make unseen-augmented: the recipe with and without the
# augmentation chosen on validation), its medians in the model card. The paper's beta-VAEs of
# pretrained.toml are not candidates (not in that cross-validation): they are trained for the
# seen-speaker comparison only.
PRETRAINED := experiments/pretrained.toml
pretrained: unseen-augmented
	$(SEPVAE) mix --config $(PRETRAINED)
	$(SEPVAE) train --config $(PRETRAINED) $(JOBS) --num-cpus $(TRAIN_CPUS)
	$(SEPVAE) separate-set --config $(PRETRAINED)
	$(SEPVAE) evaluate --config $(PRETRAINED)
	$(SEPVAE) export-model --config $(PRETRAINED) --method best --name default --chosen-by experiments/unseen-augmented.toml

# Speaker-disjoint cross-validation: the headline test for unseen voices (README: How good is it).
.PHONY: unseen
unseen: data
	$(SEPVAE) mix --config experiments/unseen-speakers.toml
	$(SEPVAE) train --config experiments/unseen-speakers.toml $(JOBS) --num-cpus $(TRAIN_CPUS)
	$(SEPVAE) separate-set --config experiments/unseen-speakers.toml
	$(SEPVAE) evaluate --config experiments/unseen-speakers.toml
	$(SEPVAE) report --config experiments/unseen-speakers.toml

# Choosing the recipe without the test folds: nested validation inside fold 0's training speakers.
.PHONY: unseen-tuning
unseen-tuning: data
	$(SEPVAE) mix --config experiments/unseen-tuning.toml
	$(SEPVAE) train --config experiments/unseen-tuning.toml $(JOBS) --num-cpus $(TRAIN_CPUS)
	$(SEPVAE) separate-set --config experiments/unseen-tuning.toml $(JOBS)
	$(SEPVAE) evaluate --config experiments/unseen-tuning.toml $(JOBS)
	$(SEPVAE) report --config experiments/unseen-tuning.toml

# The recipe with the augmentation chosen on validation, on the cross-validation's folds.
.PHONY: unseen-augmented
unseen-augmented: data
	$(SEPVAE) mix --config experiments/unseen-augmented.toml
	$(SEPVAE) train --config experiments/unseen-augmented.toml $(JOBS) --num-cpus $(TRAIN_CPUS)
	$(SEPVAE) separate-set --config experiments/unseen-augmented.toml $(JOBS)
	$(SEPVAE) evaluate --config experiments/unseen-augmented.toml $(JOBS)
	$(SEPVAE) report --config experiments/unseen-augmented.toml

# Run-to-run spread: the beta-VAE with five seeds (README: Determinism).
.PHONY: seeds
seeds: data
	$(SEPVAE) mix --config experiments/seeds.toml
	$(SEPVAE) train --config experiments/seeds.toml $(JOBS) --num-cpus $(TRAIN_CPUS)
	$(SEPVAE) separate-set --config experiments/seeds.toml
	$(SEPVAE) evaluate --config experiments/seeds.toml
	$(SEPVAE) report --config experiments/seeds.toml

# The paper's sweeps (experiments/README.md); each regenerates experiments/RESULTS.md.
SWEEPS := sweep-window sweep-latent sweep-batch sweep-beta sweep-itl-latent compare-models
.PHONY: sweeps results $(SWEEPS) $(SWEEPS:=-large)
$(SWEEPS) $(SWEEPS:=-large): data
	$(SEPVAE) mix --config experiments/$@.toml
	$(SEPVAE) train --config experiments/$@.toml $(JOBS) --num-cpus $(TRAIN_CPUS)
	$(SEPVAE) separate-set --config experiments/$@.toml $(JOBS)
	$(SEPVAE) evaluate --config experiments/$@.toml $(JOBS)
	$(SEPVAE) report --config experiments/$@.toml
	$(SEPVAE) results

# The six sweeps, then their -large twins (the same models on ~100 test mixtures).
sweeps: $(SWEEPS) $(SWEEPS:=-large)

results: setup
	$(SEPVAE) results

# `make bench DEVICE=cuda` measures the training engine on a GPU.
DEVICE ?= auto
bench: setup
	$(BIN)/python benchmarks/train_speed.py --device $(DEVICE)
	$(BIN)/python benchmarks/separate_speed.py
	$(BIN)/python benchmarks/fit_speed.py
	$(BIN)/python benchmarks/level_robustness.py

clean:
	rm -rf runs reports
