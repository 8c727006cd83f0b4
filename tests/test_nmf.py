import numpy as np
import pytest
import torch

from sepvae.filtering import apply_masks, ratio_mask
from sepvae.metrics import bss_eval
from sepvae.nmf import beta_divergence, factorize, fit_activations, learn_dictionary, nmf_estimates
from sepvae.stft import istft, stft
from tests.conftest import speechlike

N_FFT, HOP = 256, 128


def magnitudes(waveform: np.ndarray) -> torch.Tensor:
    return stft(torch.from_numpy(waveform), N_FFT, HOP).abs()


def random_spectrogram(bins: int = 129, frames: int = 300, seed: int = 0) -> torch.Tensor:
    return torch.rand(bins, frames, generator=torch.Generator().manual_seed(seed)) ** 3


def test_dictionary_is_nonnegative_with_the_requested_shape():
    w = learn_dictionary(random_spectrogram(), n_components=8, n_iter=20)
    assert w.shape == (129, 8)
    assert (w >= 0).all()
    torch.testing.assert_close(w.sum(0), torch.ones(8))  # unit-L1 atoms


@pytest.mark.parametrize("beta", [1.0, 2.0, 0.0])
def test_reconstruction_error_decreases(beta):
    v = random_spectrogram() + 0.01  # Itakura-Saito needs positive data
    # The same seed gives the same start, so n_iter=k is the k-th step of one run.
    errors = []
    for n_iter in (0, 1, 5, 20, 60):
        w, h = factorize(v, n_components=8, n_iter=n_iter, beta=beta, seed=3)
        errors.append(beta_divergence(v, w @ h, beta).item())
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors


def test_a_seed_makes_it_deterministic():
    v = random_spectrogram()
    torch.testing.assert_close(learn_dictionary(v, 8, 10, seed=1), learn_dictionary(v, 8, 10, seed=1), rtol=0, atol=0)
    assert not torch.equal(learn_dictionary(v, 8, 10, seed=1), learn_dictionary(v, 8, 10, seed=2))


def test_activations_of_a_batch_equal_those_of_each_item():
    w = learn_dictionary(random_spectrogram(seed=1), 6, 10)
    batch = torch.stack([random_spectrogram(frames=50, seed=s) for s in (2, 3)])
    h = fit_activations(batch, w, n_iter=30)
    assert h.shape == (2, 6, 50) and (h >= 0).all()
    for item in range(2):
        # Same start per item is not promised, only the same fit quality.
        single = fit_activations(batch[item], w, n_iter=30)
        err_batch = beta_divergence(batch[item], w @ h[item]).item()
        err_single = beta_divergence(batch[item], w @ single).item()
        assert err_batch == pytest.approx(err_single, rel=0.05)


def test_silent_frames_give_finite_estimates():
    w = {"a": learn_dictionary(random_spectrogram(seed=4), 4, 10), "b": learn_dictionary(random_spectrogram(seed=5), 4, 10)}
    mixture = random_spectrogram(frames=40, seed=6)
    mixture[:, 10:20] = 0
    estimates = nmf_estimates(mixture, w, n_iter=20)
    assert all(torch.isfinite(e).all() and (e >= 0).all() for e in estimates.values())
    masks = ratio_mask(torch.stack(list(estimates.values())))
    assert torch.isfinite(masks).all()


def test_supervised_nmf_separates_sources_with_distinct_spectra():
    # Low- and high-pitched "voices", trained on other utterances than the test ones.
    low_train = np.concatenate([speechlike(1.0, f0=f0, seed=s) for s, f0 in enumerate((100, 110, 120))])
    high_train = np.concatenate([speechlike(1.0, f0=f0, seed=10 + s) for s, f0 in enumerate((230, 250, 270))])
    dictionaries = {
        "low": learn_dictionary(magnitudes(low_train), n_components=8, n_iter=100),
        "high": learn_dictionary(magnitudes(high_train), n_components=8, n_iter=100),
    }
    references = np.stack([speechlike(1.0, f0=115, seed=99), speechlike(1.0, f0=260, seed=98)])
    mixture = references.sum(0)
    spec = stft(torch.from_numpy(mixture), N_FFT, HOP)
    estimates = nmf_estimates(spec.abs(), dictionaries, n_iter=100)
    assert list(estimates) == ["low", "high"]
    assert all(e.shape == spec.shape for e in estimates.values())
    masks = ratio_mask(torch.stack([estimates["low"], estimates["high"]]))
    separated = istft(apply_masks(spec, masks), N_FFT, HOP, mixture.size).numpy()
    sdr, sir, _ = bss_eval(references, separated)
    unprocessed_sdr, _, _ = bss_eval(references, np.stack([mixture, mixture]))
    assert (sdr > 4).all(), sdr
    assert (sdr - unprocessed_sdr > 4).all(), (sdr, unprocessed_sdr)
    assert (sir > 4).all(), sir


def test_shape_errors_are_value_errors():
    with pytest.raises(ValueError, match="bins, frames"):
        learn_dictionary(torch.rand(2, 129, 10), 4)
    with pytest.raises(ValueError, match="bins"):
        nmf_estimates(torch.rand(129, 10), {"a": torch.rand(65, 4)})
    with pytest.raises(ValueError, match="real"):
        learn_dictionary(torch.rand(129, 10, dtype=torch.complex64), 4)
    with pytest.raises(ValueError, match="negative"):
        fit_activations(torch.rand(129, 10), -torch.rand(129, 4))
