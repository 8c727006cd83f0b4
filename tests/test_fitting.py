"""Latent-code fitting (sepvae.fitting): recovery, descent, restarts, shapes, the Separator."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import sepvae
from sepvae.checkpoint import ModelCard, card_of, init_model_folder
from sepvae.cli import app
from sepvae.config import FitConfig, ModelConfig, SourceMode, StftConfig
from sepvae.fitting import LatentFit, divergence, fit_latents
from sepvae.separator import Separator

BINS, FRAMES, LATENT = 24, 40, 3


def problem(seed: int = 0):
    """Two random small decoders and sources that lie exactly in their range.

    Returns (decoders, true codes [(frames, latent)] * 2, sources (2, bins, frames), mixture (bins, frames)).
    """
    torch.manual_seed(seed)
    decoders = [nn.Sequential(nn.Linear(LATENT, 32), nn.Tanh(), nn.Linear(32, BINS), nn.Softplus()) for _ in range(2)]
    codes = [0.5 * torch.randn(FRAMES, LATENT) for _ in range(2)]
    with torch.no_grad():
        sources = torch.stack([d(z) for d, z in zip(decoders, codes)]).transpose(1, 2)
    return decoders, codes, sources, sources.sum(dim=0)


def sdr_db(estimate: torch.Tensor, reference: torch.Tensor) -> float:
    return float(10 * torch.log10(reference.pow(2).sum() / (estimate - reference).pow(2).sum()))


@pytest.mark.parametrize("kind", ["euclidean", "kl", "is"])
def test_fit_recovers_sources_in_the_decoders_range(kind):
    decoders, _, sources, mixture = problem()
    zeros = [torch.zeros(1, FRAMES, LATENT)] * 2
    with torch.inference_mode():  # as the Separator calls it
        estimates, history = fit_latents(decoders, mixture, zeros, kind, prior_weight=0.0, steps=400, lr=0.05)
    assert estimates.shape == (2, BINS, FRAMES)
    for k in range(2):
        assert sdr_db(estimates[k], sources[k]) > 20, kind
    assert history.loss[-1] < 1e-3 * history.loss[0]


def test_fit_loss_decreases_and_decoders_are_untouched():
    decoders, _, _, mixture = problem(1)
    before = [p.detach().clone() for d in decoders for p in d.parameters()]
    _, history = fit_latents(decoders, mixture, [torch.zeros(2, FRAMES, LATENT)] * 2, "kl", 0.1, steps=60, lr=0.05)
    assert len(history.loss) == 61
    assert history.loss[-1] < 0.5 * history.loss[0]
    window = np.convolve(history.loss, np.ones(10) / 10, mode="valid")  # Adam may wobble step to step
    assert np.all(np.diff(window) < 0)
    after = [p for d in decoders for p in d.parameters()]
    assert all(torch.equal(a, b) and a.grad is None for a, b in zip(after, before))


def test_restarts_are_chosen_by_the_fit_loss_never_by_references():
    # The function cannot see the true sources: nothing in its signature could carry them.
    assert set(inspect.signature(fit_latents).parameters) == {
        "decoders", "mixture_magnitude", "init", "divergence", "prior_weight", "steps", "lr"}
    decoders, codes, sources, mixture = problem(2)
    far = [z + 3.0 for z in codes]
    # Restart 0 starts at the truth on the first half of the frames, restart 1 on the rest;
    # with no steps each frame must keep the restart whose objective is lower there.
    half = torch.arange(FRAMES) < FRAMES // 2
    init = [torch.stack([torch.where(half[:, None], z, f), torch.where(half[:, None], f, z)])
            for z, f in zip(codes, far)]
    estimates, history = fit_latents(decoders, mixture, init, "euclidean", prior_weight=0.0, steps=0)
    assert history.final.shape == (2, FRAMES)
    assert torch.equal(history.chosen, history.final.argmin(dim=0))
    assert torch.equal(history.chosen, (~half).long())
    torch.testing.assert_close(estimates, sources)
    # A prior weight large enough makes the far codes' objective the larger everywhere too,
    # but a restart at zero (prior term 0) can then win: the choice follows the objective.
    zero_first = [torch.stack([torch.zeros_like(z), z]) for z in codes]
    _, weighted = fit_latents(decoders, mixture, zero_first, "euclidean", prior_weight=1e3, steps=0)
    assert torch.equal(weighted.chosen, weighted.final.argmin(dim=0)) and (weighted.chosen == 0).all()


def test_frames_are_fitted_independently():
    """What lets the Separator fit a recording chunk by chunk."""
    decoders, _, _, mixture = problem(3)
    init = [0.1 * torch.randn(1, FRAMES, LATENT) for _ in range(2)]
    whole, _ = fit_latents(decoders, mixture, init, "kl", 0.5, steps=20)
    first, _ = fit_latents(decoders, mixture[:, :10], [z[:, :10] for z in init], "kl", 0.5, steps=20)
    torch.testing.assert_close(first, whole[:, :, :10], rtol=1e-4, atol=1e-5)


def test_wrong_shapes_raise():
    decoders, _, _, mixture = problem()
    good = [torch.zeros(1, FRAMES, LATENT)] * 2
    with pytest.raises(ValueError, match=r"\(bins, frames\)"):
        fit_latents(decoders, mixture[None], good)
    with pytest.raises(ValueError, match="one init per decoder"):
        fit_latents(decoders, mixture, good[:1])
    with pytest.raises(ValueError, match=r"init\[1\] must be \(restarts, frames=40"):
        fit_latents(decoders, mixture, [good[0], torch.zeros(1, FRAMES - 1, LATENT)])
    with pytest.raises(ValueError, match=r"init\[1\]"):
        fit_latents(decoders, mixture, [good[0], torch.zeros(2, FRAMES, LATENT)])
    with pytest.raises(ValueError, match="unknown divergence"):
        divergence(mixture, mixture, "cs")


def test_divergences_are_zero_only_at_the_target():
    x = torch.rand(50) + 0.1
    for kind in ("euclidean", "kl", "is"):
        assert divergence(x, x, kind).abs().max() < 1e-6
        assert (divergence(x, 1.5 * x, kind) > 0).all() and (divergence(x, 0.5 * x, kind) > 0).all()


@pytest.fixture(scope="module")
def fit_folder(tmp_path_factory):
    """A vae-fit model folder of untrained tiny VAEs, as train_clean_models writes its card."""
    folder = tmp_path_factory.mktemp("runs") / "models" / "vae-fit-gender-0123456789ab"
    model = ModelConfig(name="vae-fit", hidden=(16,), latent=4, decoder_hidden=(16,))
    stft = StftConfig()
    card = ModelCard(kind="vae-fit", source_mode=SourceMode.GENDER, sources=("female", "male"), sample_rate=16000,
                     stft=stft, n_bins=stft.n_bins(16000), model=model, fit=FitConfig(steps=5, restarts=2),
                     version=sepvae.__version__)
    init_model_folder(folder, card, torch.linspace(0.5, 2.0, card.n_bins))
    (folder / "done").write_text("")
    return folder


def test_a_fitting_folder_separates_by_fitting(fit_folder):
    assert card_of(fit_folder).fit == FitConfig(steps=5, restarts=2)  # the card round-trips its settings
    separator = Separator.from_run(fit_folder, device="cpu")
    assert isinstance(separator.estimator, LatentFit) and separator.estimator.config.steps == 5
    waveforms, masks = separator.separate_tensor(0.1 * torch.randn(4000))
    assert waveforms.shape == (2, 4000) and torch.isfinite(waveforms).all()
    torch.testing.assert_close(masks.sum(dim=0), torch.ones(masks.shape[1:]))


def test_the_estimator_fits_a_mixture_in_the_models_range(fit_folder):
    """Through the source models' normalization: the sum of the estimates approaches the mixture."""
    separator = Separator.from_run(fit_folder, device="cpu")
    torch.manual_seed(0)
    with torch.no_grad():
        magnitude = sum(m.network.decode(torch.randn(30, 4)) * m.scale for m in separator.models.values()).T
    start = LatentFit(FitConfig(steps=0))(separator.models, magnitude)
    fitting = LatentFit(FitConfig(steps=100, lr=0.05, divergence="euclidean", prior_weight=0.0))
    fitted = fitting(separator.models, magnitude)
    assert fitted.shape == (2, *magnitude.shape)
    assert (fitted.sum(0) - magnitude).norm() < 0.3 * (start.sum(0) - magnitude).norm()


def test_cli_separates_with_a_fitting_folder(tmp_path, fit_folder):
    import soundfile as sf

    wav = tmp_path / "mix.wav"
    sf.write(wav, (0.1 * np.random.default_rng(0).standard_normal(8000)).astype(np.float32), 16000)
    result = CliRunner().invoke(app, ["separate", str(wav), "--model", str(fit_folder)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "mix_male.wav").is_file() and (tmp_path / "mix_female.wav").is_file()
    listed = CliRunner().invoke(app, ["models", "--runs", str(fit_folder.parent.parent)])
    assert "vae-fit (gender)" in listed.output
