"""Experiment files: checked key by key when read (issue 15: one line naming the file, the
key, the value and what is expected, before any stage runs or any folder is made), typed
config values, and the method registry they name."""

from __future__ import annotations

import dataclasses

import pytest
from typer.testing import CliRunner

from sepvae.cli import app
from sepvae.config import (
    FitConfig, Method, MixConfig, ModelConfig, SourceMode, StftConfig, TrainConfig, config_hash, from_dict,
    load_experiment,
    model_config, to_dict,
)
from sepvae.errors import SepvaeError
from sepvae.layout import Layout
from sepvae.methods import METHODS as REGISTRY, entry, model_kinds


METHODS = '[[methods]]\nkind = "mixture"\n\n[[methods]]\nkind = "vae"\n'


@pytest.mark.parametrize(
    "text, message",
    [
        ("[train]\nbatch_size = 2.5\n", "train.batch_size = 2.5: expected an integer"),
        ("[train]\nepochs = 2.0\n", "train.epochs = 2.0: expected an integer"),
        ("[mix]\nn_test = true\n", "mix.n_test = true: expected an integer"),
        ('[mix]\nseed = "zero"\n', 'mix.seed = "zero": expected an integer'),
        ("[mix]\nsnr_db = 5\n", "mix.snr_db = 5: expected a list of 2 values"),
        ('[mix]\nsnr_db = [0, "5"]\n', 'mix.snr_db = "5": expected a number'),
        ("[mix]\nsnr_db = [5, 0]\n", "mix.snr_db = [5.0, 0.0]: expected [lo, hi] with lo <= hi"),
        ("[stft]\nwindow_ms = 0.01\noverlap_ms = 0\n",
         "stft.window_ms = 0.01: expected a window of at least 2 samples (0.125 ms at 16000 Hz)"),
        ("[stft]\nsetting = 5\n", "stft.setting = 5: expected one of A, B, C, D, E, F, G, H"),
        ("[model]\neps_std = -0.1\n", "model.eps_std = -0.1: expected >= 0"),
        ('[model]\ndivergence = "kl"\n', "model.divergence = \"kl\": expected 'cs' or 'euclidean'"),
        ('[model]\nprior = "cauchy"\n', "model.prior = \"cauchy\": expected 'gaussian' or 'laplacian'"),
        ("[train]\nlr = 0\n", "train.lr = 0.0: expected > 0"),
        ('name = 3\n', "name = 3: expected a string"),
        ('methdos = 1\n', "unknown top-level key(s): methdos (did you mean methods for methdos?)"),
        ("[mix]\nseeds = 1\n", "mix: unknown MixConfig option(s): seeds (did you mean seed for seeds?)"),
    ],
)
def test_bad_value_in_a_table_names_the_key(tmp_path, text, message):
    path = tmp_path / "exp.toml"
    path.write_text(text + METHODS)
    with pytest.raises(SepvaeError) as info:
        load_experiment(path)
    assert str(info.value).startswith(f"{path}: {message}"), str(info.value)


@pytest.mark.parametrize(
    "entry, message",
    [
        ('kind = "vae"\nmodel = { beta = "4" }', 'methods[2].model.beta = "4": expected a number'),
        ('kind = "itl-ae"\nmodel = { kernel_sigma = -1 }', "methods[2].model.kernel_sigma = -1.0: expected > 0"),
        ('kind = "vae"\nmodel = { betta = 2.0 }',
         "methods[2].model: unknown ModelConfig option(s): betta (did you mean beta for betta?)"),
        ('kind = "vae"\nsourc_mode = "speaker"',
         "methods[2]: unknown [[methods]] key(s): sourc_mode (did you mean source_mode for sourc_mode?)"),
        ('kind = "vae"\nmask_power = "2"', 'methods[2].mask_power = "2": expected a number'),
        ('kind = "vae"\nnmf_components = 3.5', "methods[2].nmf_components = 3.5: expected an integer"),
        ('kind = "vae"\ntrain = { epochs = 2.0 }', "methods[2].train.epochs = 2.0: expected an integer"),
        ('kind = "vae"\nstft = { window_ms = 0.01, overlap_ms = 0.0 }', "methods[2].stft.window_ms = 0.01: expected a window"),
    ],
)
def test_bad_value_in_a_methods_entry_names_the_entry(tmp_path, entry, message):
    path = tmp_path / "exp.toml"
    path.write_text(f'[[methods]]\nkind = "mixture"\n\n[[methods]]\n{entry}\n')
    with pytest.raises(SepvaeError) as info:
        load_experiment(path)
    assert str(info.value).startswith(f"{path}: {message}"), str(info.value)


def test_methods_written_as_a_table(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text('[methods]\nkind = "vae"\n')
    with pytest.raises(SepvaeError) as info:
        load_experiment(path)
    assert str(info.value) == f'{path}: methods = {{"kind": "vae"}}: expected an array of tables ([[methods]] entries)'


def test_numbers_where_floats_go_and_defaults_stay(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text('[train]\nlr = 1\n[mix]\nsnr_db = [0, 5]\n' + METHODS)
    experiment = load_experiment(path)
    vae = experiment.methods[1]
    assert vae.train.lr == 1.0 and isinstance(vae.train.lr, float) and experiment.mix.snr_db == (0.0, 5.0)
    assert vae.model.kernel_sigma is None
    assert from_dict(StftConfig, {"window_ms": 16, "overlap_ms": 8}) == StftConfig()
    with pytest.raises(SepvaeError, match="batch_size = true: expected an integer"):
        from_dict(TrainConfig, {"batch_size": True})
    with pytest.raises(SepvaeError, match="n_mixtures = 5: expected more than n_test"):
        MixConfig(n_mixtures=5, n_test=10)


def test_a_bad_file_stops_before_any_stage_or_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "exp.toml"
    path.write_text("[train]\nbatch_size = 2.5\n" + METHODS)
    for command in ("mix", "train", "separate-set", "evaluate", "report"):
        result = CliRunner().invoke(app, [command, "--config", str(path)])
        assert result.exit_code == 1
        assert [line for line in result.stderr.splitlines() if line] == [
            f"error: {path}: train.batch_size = 2.5: expected an integer"
        ]
    assert [p.name for p in tmp_path.iterdir()] == ["exp.toml"]


def test_configs_round_trip_through_dicts():
    for config in (StftConfig(32, 16), TrainConfig(batch_size=17, seed=3), ModelConfig(name="itl-ae", latent=32)):
        assert from_dict(type(config), to_dict(config)) == config


def test_source_mode_is_a_typed_value_that_reads_as_its_name():
    method = Method(label="vae", kind="vae", source_mode="speaker", model=model_config({"name": "vae"}))
    assert method.source_mode is SourceMode.SPEAKER
    assert f"{method.kind}-{method.source_mode}" == "vae-speaker" and str(method.source_mode) == "speaker"
    with pytest.raises(SepvaeError, match="unknown source mode 'dialect'"):
        Method(label="vae", kind="vae", source_mode="dialect")


def test_every_kind_is_one_registry_entry():
    assert set(REGISTRY) == {"vae", "beta-vae", "itl-ae", "ae", "vae-fit", "beta-vae-fit", "nmf", "oracle-irm",
                             "oracle-ibm", "mixture"}
    assert model_kinds() == ("vae", "beta-vae", "itl-ae", "ae", "vae-fit", "beta-vae-fit")
    assert [k for k, e in REGISTRY.items() if e.trains] == ["vae", "beta-vae", "itl-ae", "ae", "vae-fit",
                                                            "beta-vae-fit", "nmf"]
    assert [k for k, e in REGISTRY.items() if e.fits] == ["vae-fit", "beta-vae-fit"]
    known = r"choose a model \(vae, beta-vae, itl-ae, ae, vae-fit, beta-vae-fit\)"
    with pytest.raises(SepvaeError, match=r"unknown method kind 'gan'; " + known):
        entry("gan")


def test_a_model_name_implies_its_defaults():
    assert model_config({"name": "beta-vae"}).beta == 4.0
    assert model_config({"name": "beta-vae", "beta": 2}).beta == 2.0
    assert model_config({"name": "vae"}).beta == 1.0
    assert model_config({"name": "beta-vae-fit"}).beta == 4.0 and model_config({"name": "vae-fit"}).beta == 1.0


def test_fit_settings_of_a_fitting_method(tmp_path):
    config = tmp_path / "fit.toml"
    config.write_text('[fit]\nsteps = 20\n[[methods]]\nkind = "vae-fit"\nfit = { divergence = "is" }\n'
                      '[[methods]]\nkind = "vae"\n')
    fitting, vae = load_experiment(config).methods
    assert fitting.fit == FitConfig(steps=20, divergence="is") and vae.fit is None
    layout = Layout(runs=tmp_path)
    # The fitting settings are part of the run (its card records them for `sepvae separate`).
    assert layout.model_run(fitting, "data", 16000) != layout.model_run(
        dataclasses.replace(fitting, fit=FitConfig(steps=21)), "data", 16000)
    config.write_text('[[methods]]\nkind = "vae"\nfit = { steps = 3 }\n')
    with pytest.raises(SepvaeError, match="fit settings are for vae-fit methods only"):
        load_experiment(config)
    for bad in ({"divergence": "cs"}, {"init": "random"}, {"restarts": 0}, {"lr": 0.0}):
        with pytest.raises(SepvaeError, match="fit"):
            FitConfig(**bad)


def test_a_run_depends_only_on_what_its_method_reads(tmp_path):
    layout = Layout(runs=tmp_path)

    def run(kind, **model):
        return layout.model_run(Method(label=kind, kind=kind, model=model_config({"name": kind, **model})), "data", 16000)

    assert run("vae") == run("vae", itl_lambda=3.0, divergence="euclidean")  # ITL-AE settings
    assert run("vae") != run("vae", beta=2.0)
    assert run("itl-ae") == run("itl-ae", beta=7.0, eps_std=0.5)  # VAE settings
    assert run("itl-ae") != run("itl-ae", itl_lambda=3.0)
    assert run("vae").name.startswith("vae-gender-") and run("vae").parent == tmp_path / "models"
    nmf = Method(label="nmf", kind="nmf", train=TrainConfig(batch_size=17))
    assert layout.model_run(nmf, "data", 16000) == layout.model_run(Method(label="nmf", kind="nmf"), "data", 16000)
    with pytest.raises(SepvaeError, match="is not trained"):
        layout.model_run(Method(label="irm", kind="oracle-irm"), "data", 16000)


def test_separation_keys(tmp_path):
    layout = Layout(runs=tmp_path)
    irm = Method(label="irm", kind="oracle-irm")
    assert layout.separations(irm, None, "test-a") != layout.separations(irm, None, "test-b")
    assert layout.separations(irm, None, "t") != layout.separations(Method("w", "oracle-irm", stft=StftConfig(32, 16)), None, "t")
    mixture = Method(label="mixture", kind="mixture")
    assert layout.separations(mixture, None, "t") == layout.separations(Method("m", "mixture", stft=StftConfig(32, 16)), None, "t")
    run = tmp_path / "models" / "vae-gender-abc"
    assert layout.separations(Method("v", "vae", mask_power=2.0), run, "t").name.startswith("vae-gender-abc-")
    assert layout.separations(Method("v", "vae", mask_power=2.0), run, "t").name.endswith("-p2")
    # Passes on shifted frames are other estimates of the same run.
    assert layout.separations(Method("v", "vae", mask_power=2.0, shifts=2), run, "t").name.endswith("-p2-shifts2")
    assert layout.separations(Method("v", "vae", shifts=2, smooth_frames=5), run, "t").name.endswith("-shifts2-smooth5")


def test_experiment_file_names_registry_kinds(tmp_path):
    path = tmp_path / "e.toml"
    path.write_text('[[methods]]\nkind = "beta-vae"\n[[methods]]\nkind = "nmf"\n[[methods]]\nkind = "mixture"\n')
    experiment = load_experiment(path)
    beta, nmf, mixture = experiment.methods
    assert beta.model.beta == 4.0 and beta.entry.has_model
    assert nmf.model is None and nmf.entry.trains and not mixture.entry.trains
    assert config_hash(beta.stft) == config_hash(StftConfig())


def test_fields_added_later_enter_a_runs_key_only_when_set():
    from sepvae.config import TrainConfig, key_dict

    assert "remix_warp" not in key_dict(TrainConfig()) and "remix_level_db" not in key_dict(TrainConfig())
    assert key_dict(TrainConfig(remix=1, remix_warp=0.1))["remix_warp"] == 0.1
    # bf16 training gives other weights: another run, the fp32 runs' keys unchanged.
    assert "precision" not in key_dict(TrainConfig()) and key_dict(TrainConfig(precision="bf16"))["precision"] == "bf16"
    with pytest.raises(SepvaeError, match="precision.*'fp32' or 'bf16'"):
        TrainConfig(precision="fp16")
    # The paper's recipe keeps the key it had before these fields existed.
    assert set(key_dict(TrainConfig())) == {
        "batch_size", "epochs", "lr", "patience", "val_fraction", "seed", "normalization", "inputs", "remix", "remix_gain_db",
    }
