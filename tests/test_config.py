"""Experiment files are checked key by key when read (issue 15): one line naming the file,
the key, the value and what is expected, before any stage runs or any folder is made."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from sepvae.cli import app
from sepvae.config import MixConfig, StftConfig, TrainConfig, from_dict, load_experiment
from sepvae.errors import SepvaeError

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
