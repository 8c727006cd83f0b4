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
# Where train, separate and evaluate run their jobs: local (as many at once as the CPUs hold),
# or ray (README: Running jobs in parallel; the cluster is $RAY_ADDRESS, e.g.
# `RAY_ADDRESS=auto make sweeps EXECUTOR=ray`).
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

# A training job of TRAIN_CPUS CPUs trains each stack as that many parts side by side, each in
# a single-thread process (README: Models and training). Where another process holds a core,
# use TRAIN_CPUS=1.
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

# The stages of one experiment file, for the targets below ($(1): its path).
define stages
	$(SEPVAE) mix --config $(1)
	$(SEPVAE) train --config $(1) $(JOBS) --num-cpus $(TRAIN_CPUS)
	$(SEPVAE) separate-set --config $(1) $(JOBS)
	$(SEPVAE) evaluate --config $(1) $(JOBS)
	$(SEPVAE) report --config $(1)
endef

# The shipped default model: trained on every speaker (experiments/pretrained.toml), chosen by
# the unseen-speaker cross-validation (make unseen-candidates: the recipe with the changes chosen
# on validation, with a 64 ms STFT window and a 16 ms hop, with and without smoothing), its
# medians in the model card.
# The other methods of pretrained.toml are not candidates (not in that cross-validation): they
# are trained for the seen-speaker comparison only.
pretrained: unseen-candidates
	$(call stages,experiments/pretrained.toml)
	$(SEPVAE) export-model --config experiments/pretrained.toml --method best --name default --chosen-by experiments/unseen-candidates.toml

# Speaker-disjoint cross-validation: the headline test for unseen voices (README: How good is it).
.PHONY: unseen
unseen: data
	$(call stages,experiments/unseen-speakers.toml)

# Choosing the recipe without the test folds: nested validation inside fold 0's training
# speakers (unseen-tuning; unseen-inputs: its open choice, log1p or linear inputs, on all seven
# inner folds; unseen-phase: phase reconstruction after the mask, which lost there;
# unseen-rounds: ten rounds of re-paired mixtures, a small gain there, not carried on;
# unseen-members: the mean of two or three seeds' networks per source; unseen-shifts: the
# mean over frame grids shifted by fractions of a hop, at inference; unseen-smoothing: the
# estimates smoothed over neighbouring frames; unseen-window: a 32 ms STFT window, setting D,
# against E's 16 ms, then a 64 ms window at D's 16 ms hop); the recipe
# with the changes chosen there, on the cross-validation's folds (unseen-augmented: more
# re-paired mixtures, then linear inputs; unseen-candidates, which `pretrained` needs: the
# shipped recipe with a 64 ms window and a 16 ms hop, with and without smoothing; unseen-steps:
# each step from the recipe to the shipped model, at E, then D, then the 64 ms window; unseen-reseed:
# the shipped model's recipe retrained with seeds 2 and 3; unseen-perturbation: speaker augmentation,
# which lost there); the recipe
# with one ingredient left out at a time (unseen-ablation); run-to-run spread, the beta-VAE
# with five seeds (seeds; README: Determinism); seen-best: on pretrained's seen-speaker test
# mixtures, the recipe validation ranks best (three seeds, four passes) beside the model shipped
# before, at setting E.
UNSEEN_EXTRA := unseen-candidates unseen-steps unseen-reseed seen-best unseen-tuning unseen-inputs unseen-phase unseen-rounds unseen-members unseen-shifts unseen-smoothing unseen-window unseen-augmented unseen-perturbation unseen-ablation seeds
.PHONY: $(UNSEEN_EXTRA)
$(UNSEEN_EXTRA): data
	$(call stages,experiments/$@.toml)

# The paper's sweeps (experiments/README.md); each regenerates experiments/RESULTS.md, but
# under `make sweeps`, which does it once at the end (~11 s each time).
SWEEPS := sweep-window sweep-latent sweep-batch sweep-beta sweep-itl-latent compare-models
.PHONY: sweeps results $(SWEEPS) $(SWEEPS:=-large)
$(SWEEPS) $(SWEEPS:=-large): data
	$(call stages,experiments/$@.toml)
	$(if $(filter sweeps,$(MAKECMDGOALS)),,$(SEPVAE) results)

# The six sweeps, then their -large twins (the same models on ~100 test mixtures).
sweeps: $(SWEEPS) $(SWEEPS:=-large)
	$(SEPVAE) results

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
