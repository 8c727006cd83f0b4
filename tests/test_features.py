"""Features: magnitude frames, the recipe's normalizations, and re-paired training mixtures."""

import numpy as np
import pytest
import torch

from sepvae.config import ModelConfig, StftConfig
from sepvae.features import (
    change_speed, fit_normalization, fit_scale, load_frames, remix_frames, spectrogram, tilt, warp_frequencies,
)
from sepvae.mixing import make_mixtures, read_manifest
from sepvae.models import SourceModel, build_model
from tests.conftest import write_sample_tree


def frames(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(500, 9, generator=generator) * torch.logspace(0, -2, 9)  # loud low bins


def test_per_bin_and_global_scales():
    mixture = frames()
    assert torch.allclose(fit_scale(mixture), mixture.pow(2).mean(0).sqrt())
    overall = fit_scale(mixture, per_bin=False)
    assert overall.shape == (9,) and torch.allclose(overall, mixture.pow(2).mean().sqrt().expand(9))


def test_linear_inputs_are_the_papers_normalization():
    mixture = frames()
    normalization = fit_normalization(mixture)
    assert torch.equal(normalization.inputs(mixture), mixture / fit_scale(mixture))
    assert normalization.input_mean is None


def test_log_inputs_are_standardized_per_bin_and_travel_with_the_model():
    mixture = frames()
    normalization = fit_normalization(mixture, per_bin=False, log_inputs=True)
    inputs = normalization.inputs(mixture)
    assert torch.allclose(inputs.mean(0), torch.zeros(9), atol=1e-5)
    assert torch.allclose(inputs.std(0), torch.ones(9), atol=1e-4)
    network = build_model(ModelConfig(hidden=(8,), latent=2, decoder_hidden=(8,)), 9).eval()
    model = normalization.model(network)
    assert isinstance(model, SourceModel) and {"scale", "input_mean", "input_std"} <= set(model.state_dict())
    expected = network.estimate(inputs) * normalization.scale
    assert torch.equal(model(mixture), expected)
    with pytest.raises(ValueError, match="both input_mean and input_std"):
        SourceModel(network, normalization.scale, normalization.input_mean)


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory):
    from sepvae.config import MixConfig
    from sepvae.corpus import index_timit

    root = tmp_path_factory.mktemp("corpus")
    utterances = index_timit(write_sample_tree(root / "timit"))
    return make_mixtures(utterances, MixConfig(n_mixtures=8, n_test=2), root / "mixtures")


def test_remixed_mixtures_pair_other_sources_from_the_given_mixtures_only(tiny_manifest):
    train = read_manifest(tiny_manifest, "train")
    stft = StftConfig()
    remixed = remix_frames(train, stft, 16000, rounds=2, gain_db=6.0, seed=0, first_index=100)
    assert set(np.unique(remixed.mixture_index)) == set(range(100, 100 + 2 * len(train)))
    assert set(remixed.speakers["male"]) <= {m.speakers["male"] for m in train}
    assert set(remixed.speakers["female"]) <= {m.speakers["female"] for m in train}
    pairs = {(m, f) for m, f in zip(remixed.speakers["male"], remixed.speakers["female"])}
    assert len(pairs) > 1
    # A mixture frame's magnitude is at most the sum of its sources' (triangle inequality).
    assert (remixed.mixture <= remixed.sources["male"] + remixed.sources["female"] + 1e-5).all()
    assert remixed.mixture.shape[1] == stft.n_bins(16000) == load_frames(train, stft, 16000).mixture.shape[1]
    again = remix_frames(train, stft, 16000, rounds=2, gain_db=6.0, seed=0, first_index=100)
    assert torch.equal(again.mixture, remixed.mixture)  # seeded


def _sine_peak_hz(signal: torch.Tensor, spectrum=None) -> float:
    stft = StftConfig()
    spectrum = spectrogram(signal, stft, 16000) if spectrum is None else spectrum
    return float(spectrum.abs().mean(-1).argmax()) * 16000 / stft.n_fft(16000)


def test_speed_change_shortens_and_raises_pitch():
    t = torch.arange(16000) / 16000
    sine = torch.sin(2 * torch.pi * 1000 * t)
    faster = change_speed(sine, 1.25)
    assert abs(faster.numel() - 16000 / 1.25) <= 2
    assert _sine_peak_hz(faster) == pytest.approx(1250, abs=32)  # half a bin of 62.5 Hz
    assert torch.equal(change_speed(sine, 1.0), sine)


def test_warp_moves_formants_and_keeps_nyquist_and_energy():
    t = torch.arange(16000) / 16000
    spectrum = spectrogram(torch.sin(2 * torch.pi * 1000 * t), StftConfig(), 16000)
    assert _sine_peak_hz(None, warp_frequencies(spectrum, 1.2)) == pytest.approx(1200, abs=32)
    assert _sine_peak_hz(None, warp_frequencies(spectrum, 0.8)) == pytest.approx(800, abs=32)
    assert torch.equal(warp_frequencies(spectrum, 1.0), spectrum)
    noise = spectrogram(torch.randn(16000, generator=torch.Generator().manual_seed(0)), StftConfig(), 16000)
    warped = warp_frequencies(noise, 1.1)
    assert torch.allclose(warped[..., -1, :].abs(), noise[..., -1, :].abs())  # Nyquist stays
    assert float(warped.abs().pow(2).sum() / noise.abs().pow(2).sum()) == pytest.approx(1.0, abs=0.1)


def test_tilt_is_a_slope_in_db():
    spectrum = torch.ones(129, 3, dtype=torch.complex64)
    gain_db = 20 * torch.log10(tilt(spectrum, 12.0).abs()[:, 0])
    assert gain_db[0] == pytest.approx(-6.0, abs=1e-4) and gain_db[-1] == pytest.approx(6.0, abs=1e-4)
    assert gain_db[64] == pytest.approx(0.0, abs=1e-4)
    assert torch.equal(tilt(spectrum, 0.0), spectrum)


def test_perturbed_remixes_keep_the_pairs_and_mix_the_perturbed_sources(tiny_manifest):
    train = read_manifest(tiny_manifest, "train")
    stft = StftConfig()
    plain = remix_frames(train, stft, 16000, rounds=2, gain_db=3.0, seed=0)
    warped = remix_frames(train, stft, 16000, rounds=2, gain_db=3.0, seed=0, warp=0.1, tilt_db=6.0)
    # Warp and tilt change the spectra, not the pairs, gains or shifts (their own random stream).
    assert np.array_equal(warped.mixture_index, plain.mixture_index)
    assert all(np.array_equal(warped.speakers[k], plain.speakers[k]) for k in plain.speakers)
    assert not torch.allclose(warped.sources["male"], plain.sources["male"])
    assert (warped.mixture <= warped.sources["male"] + warped.sources["female"] + 1e-5).all()
    faster = remix_frames(train, stft, 16000, rounds=1, seed=0, speed=0.2)
    assert set(faster.speakers["male"]) <= {m.speakers["male"] for m in train}
    assert len(faster.mixture) != len(remix_frames(train, stft, 16000, rounds=1, seed=0).mixture)


def test_perturbation_needs_remixing():
    from sepvae.config import TrainConfig
    from sepvae.errors import SepvaeError

    with pytest.raises(SepvaeError, match="need remix >= 1"):
        TrainConfig(remix_warp=0.1)
    with pytest.raises(SepvaeError, match=r"remix_speed = 0.6: expected in \[0, 0.5\)"):
        TrainConfig(remix=1, remix_speed=0.6)


def test_a_common_level_scales_mixture_and_sources_alike(tiny_manifest):
    train = read_manifest(tiny_manifest, "train")
    plain = remix_frames(train, StftConfig(), 16000, rounds=1, seed=0)
    louder = remix_frames(train, StftConfig(), 16000, rounds=1, seed=0, level_db=10.0)
    # Per mixture, one gain for the mixture and both sources; different across mixtures.
    gains = []
    for index in np.unique(plain.mixture_index):
        rows = torch.from_numpy(plain.mixture_index == index)
        ratio = louder.mixture[rows].sum() / plain.mixture[rows].sum()
        for name in plain.sources:
            assert float(louder.sources[name][rows].sum() / plain.sources[name][rows].sum()) == pytest.approx(float(ratio), rel=1e-4)
        gains.append(20 * np.log10(float(ratio)))
    assert max(np.abs(gains)) <= 10.0 and np.std(gains) > 1.0
