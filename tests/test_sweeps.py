"""The experiment files of the paper's sweeps: what each sets, and that they share models."""

import dataclasses
import itertools

import pytest

from sepvae.config import STFT_SETTINGS, load_experiment
from sepvae.results.findings import split_label
from tests.results_fixtures import EXPERIMENTS, experiment

TOMLS = sorted(EXPERIMENTS.glob("*.toml"))


# ---------------------------------------------------------------------------------------
# The experiment files


@pytest.mark.parametrize("path", TOMLS, ids=lambda p: p.name)
def test_every_experiment_loads_with_unique_labels(path):
    loaded = load_experiment(path)
    keys = [(m.label, m.source_mode) for m in loaded.methods]
    assert len(keys) == len(set(keys))
    assert loaded.name == path.stem


def test_the_sweeps_and_the_comparison_exist():
    names = {p.stem for p in TOMLS}
    for base in ("sweep-window", "sweep-latent", "sweep-batch", "sweep-beta", "sweep-itl-latent", "compare-models",
                 "compare-fit"):
        assert base in names and f"{base}-large" in names


@pytest.mark.parametrize("path", [p for p in TOMLS if p.stem.endswith("-large")], ids=lambda p: p.name)
def test_large_variants_differ_only_in_the_test_set(path):
    large = load_experiment(path)
    base = load_experiment(path.with_name(path.name.replace("-large", "")))
    assert large.mix.test_pairs == "all" and base.mix.test_pairs == "distinct"
    same = dataclasses.replace(large, name=base.name, path=base.path,
                               mix=dataclasses.replace(large.mix, test_pairs="distinct"))
    assert same == base


def _model_key(method):
    return (method.kind, method.source_mode, method.stft, method.model, method.train)


def test_all_experiments_use_the_mixtures_of_reproduce():
    mix = experiment("reproduce").mix
    for path in TOMLS:
        loaded = load_experiment(path)
        if loaded.mix.split == "fold":
            continue  # the unseen-speaker cross-validation mixes its own folds
        assert dataclasses.replace(loaded.mix, test_pairs="distinct") == mix, path.name
        assert all(m.source_mode == "gender" for m in loaded.methods) or loaded.name == "reproduce"


def test_window_sweep_has_all_settings_under_both_readings_with_irm():
    methods = {m.label: m for m in experiment("sweep-window").methods}
    for letter, (window, overlap) in STFT_SETTINGS.items():
        for suffix, hop in (("", window - overlap), (" hop", overlap)):
            vae, irm = methods[letter + suffix], methods[f"{letter}{suffix} irm"]
            assert vae.kind == "vae" and irm.kind == "oracle-irm"
            for method in (vae, irm):
                assert (method.stft.window_ms, method.stft.hop_ms) == (window, hop)
            assert vae.model.hidden == (256, 256) and vae.model.latent == 128 and vae.model.decoder_hidden == (256, 256)
    # Where both readings give the same STFT, the hop entry is the same model (trained once).
    assert _model_key(methods["E hop"]) == _model_key(methods["E"])
    assert methods["H hop"].stft.hop_length(16000) == 32  # the 2 ms hop: 4x the frames of E
    xs = list(dict.fromkeys(split_label(m.label)[0] for m in experiment("sweep-window").methods))
    assert xs == list("ABCDEFGH")


def test_swept_values():
    latent = experiment("sweep-latent").methods
    assert [m.model.latent for m in latent] == [8, 16, 32, 64, 128]
    assert all(m.model.hidden == (128,) and m.model.decoder_hidden == (128,) and m.stft.n_bins(16000) == 129
               for m in latent)
    batch = experiment("sweep-batch").methods
    assert [m.train.batch_size for m in batch] == [1, 17, 34, 70]
    assert batch[0].train.epochs < batch[1].train.epochs  # batch 1's smaller, documented budget
    beta = experiment("sweep-beta").methods
    assert [m.model.beta for m in beta] == [1, 2, 4, 8, 16]
    assert [m.model.latent for m in experiment("sweep-itl-latent").methods] == [32, 64, 128, 256]
    assert {m.kind for m in experiment("sweep-itl-latent").methods} == {"itl-ae"}
    kinds = [m.kind for m in experiment("compare-models").methods]
    assert {"vae", "beta-vae", "itl-ae", "ae", "nmf", "oracle-irm"} <= set(kinds)


def test_defaults_are_shared_with_reproduce():
    """The default models of the sweeps are the models of reproduce.toml: trained once."""
    reproduce = {_model_key(m) for m in experiment("reproduce").methods if m.model is not None}
    for name in ("compare-models", "compare-fit"):
        compare = [m for m in experiment(name).methods if m.model is not None]
        assert compare and all(_model_key(m) in reproduce for m in compare), name
    fitting = next(m for m in experiment("compare-fit").methods if m.kind == "vae-fit")
    assert fitting.fit == next(m for m in experiment("reproduce").methods if m.kind == "vae-fit").fit
    shared = {"sweep-window": "E", "sweep-batch": "70", "sweep-beta": "1", "sweep-itl-latent": "128"}
    for name, label in shared.items():
        method = next(m for m in experiment(name).methods if m.label == label)
        assert _model_key(method) in reproduce, name
    beta4 = next(m for m in experiment("sweep-beta").methods if m.label == "4")
    assert _model_key(beta4) in reproduce


def test_the_shipped_models_candidates_are_trained_for_shipping_as_they_were_cross_validated():
    # `make pretrained` ships the label with the best cross-validated SDR from pretrained.toml:
    # that label must train and separate there as it did in the cross-validation, and the
    # cross-validations beside it (step by step, retrained with other seeds) must hold the
    # very same networks under the same labels.
    files = {name: {m.label: m for m in experiment(name).methods if m.entry.trains}
             for name in ("unseen-candidates", "unseen-steps", "unseen-reseed")}
    chosen = files["unseen-candidates"]
    shipped = {m.label: m for m in experiment("pretrained").methods}
    assert chosen
    for label, method in chosen.items():
        assert label in shipped, label
        assert shipped[label] == method, label
    for (a, in_a), (b, in_b) in itertools.combinations(files.items(), 2):
        for label in in_a.keys() & in_b.keys():
            assert in_a[label] == in_b[label], (a, b, label)
    # the comparisons of unseen-reseed stand on methods trained for the others
    assert {"A hop x2 shifts2 smooth2", "D x2 shifts2 smooth2"} <= files["unseen-reseed"].keys()
