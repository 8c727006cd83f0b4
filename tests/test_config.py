"""Experiment files, typed config values, and the method registry they name."""

import dataclasses

import pytest

from sepvae.config import (
    FitConfig, Method, ModelConfig, SourceMode, StftConfig, TrainConfig, config_hash, from_dict, load_experiment,
    model_config, to_dict,
)
from sepvae.errors import SepvaeError
from sepvae.layout import Layout
from sepvae.methods import METHODS, entry, model_kinds


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
    assert set(METHODS) == {"vae", "beta-vae", "itl-ae", "ae", "vae-fit", "beta-vae-fit", "nmf", "oracle-irm",
                            "oracle-ibm", "mixture"}
    assert model_kinds() == ("vae", "beta-vae", "itl-ae", "ae", "vae-fit", "beta-vae-fit")
    assert [k for k, e in METHODS.items() if e.trains] == ["vae", "beta-vae", "itl-ae", "ae", "vae-fit", "beta-vae-fit",
                                                           "nmf"]
    assert [k for k, e in METHODS.items() if e.fits] == ["vae-fit", "beta-vae-fit"]
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


def test_experiment_file_names_registry_kinds(tmp_path):
    path = tmp_path / "e.toml"
    path.write_text('[[methods]]\nkind = "beta-vae"\n[[methods]]\nkind = "nmf"\n[[methods]]\nkind = "mixture"\n')
    experiment = load_experiment(path)
    beta, nmf, mixture = experiment.methods
    assert beta.model.beta == 4.0 and beta.entry.has_model
    assert nmf.model is None and nmf.entry.trains and not mixture.entry.trains
    assert config_hash(beta.stft) == config_hash(StftConfig())
