import subprocess
import sys
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from sepvae.metrics import METRICS, UndefinedMetricWarning, bss_eval, pesq_wb, score, si_sdr, stoi
from tests.conftest import speechlike

RATE = 16_000


def mir_eval_bss(references, estimates):
    from mir_eval.separation import bss_eval_sources

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bss_eval_sources is deprecated in mir_eval 0.8
        return np.array(bss_eval_sources(references, estimates, compute_permutation=False)[:3])


def noisy_ratio_mask_estimates(references: np.ndarray, noise: float, seed: int = 0) -> np.ndarray:
    """Imperfect estimates: the mixture masked by a ratio mask of noise-corrupted magnitudes."""
    window = torch.hann_window(256, periodic=True, dtype=torch.float64)
    specs = torch.stft(torch.from_numpy(references), 256, 128, window=window, return_complex=True)
    rng = np.random.default_rng(seed)
    corrupted = specs.abs() * torch.from_numpy(np.exp(noise * rng.standard_normal(specs.shape)))
    masks = corrupted / (corrupted.sum(0, keepdim=True) + 1e-8)
    mixture_spec = specs.sum(0)
    return torch.istft(masks * mixture_spec, 256, 128, window=window, length=references.shape[1]).numpy()


@pytest.fixture
def timit_pair(timit_root):
    """A male and a female TIMIT utterance, 2 s each, at equal level."""
    male = sf.read(sorted(timit_root.glob("*-m*/*.wav"))[0])[0]
    female = sf.read(sorted(timit_root.glob("*-f*/*.wav"))[3])[0]
    length = 2 * RATE
    sources = np.stack([np.pad(x, (0, max(0, length - x.size)))[:length] for x in (male, female)])
    return sources / sources.std(axis=1, keepdims=True)


@pytest.mark.parametrize("noise", [0.5, 2.0])
def test_bss_eval_agrees_with_mir_eval_on_timit(timit_pair, noise):
    estimates = noisy_ratio_mask_estimates(timit_pair, noise)
    ours = np.array(bss_eval(timit_pair, estimates))
    np.testing.assert_allclose(ours, mir_eval_bss(timit_pair, estimates), atol=0.01, rtol=0)


def test_bss_eval_agrees_with_mir_eval_for_three_sources():
    references = np.stack([speechlike(1.0, f0=f0, seed=s) for s, f0 in enumerate((110, 170, 240))]).astype(np.float64)
    rng = np.random.default_rng(1)
    # Each estimate: its source, some leakage from the others, a little noise.
    estimates = references + 0.3 * np.roll(references, 1, axis=0) + 0.01 * rng.standard_normal(references.shape)
    ours = np.array(bss_eval(references, estimates))
    np.testing.assert_allclose(ours, mir_eval_bss(references, estimates), atol=0.01, rtol=0)


def test_bss_eval_of_a_perfect_and_of_the_mixture_estimate():
    references = np.stack([speechlike(1.0, f0=120, seed=0), speechlike(1.0, f0=230, seed=1)]).astype(np.float64)
    sdr, sir, sar = bss_eval(references, references + 1e-4 * np.random.default_rng(0).standard_normal(references.shape))
    assert (sdr > 40).all() and (sir > 40).all() and (sar > 40).all()
    sdr, sir, _ = bss_eval(references, np.stack([references.sum(0)] * 2))
    assert (np.abs(sdr) < 3).all() and (np.abs(sir) < 3).all()  # equal-level mixture: ~0 dB


def test_bss_eval_silent_signals_give_nan_and_a_warning():
    references = np.stack([speechlike(1.0, f0=120, seed=0), speechlike(1.0, f0=230, seed=1)]).astype(np.float64)
    estimates = references.copy()
    estimates[1] = 0
    with pytest.warns(UndefinedMetricWarning, match="source 1: estimate is silent") as caught:
        sdr, sir, sar = bss_eval(references, estimates)
    assert np.isnan([sdr[1], sir[1], sar[1]]).all()
    assert np.isfinite([sdr[0], sir[0], sar[0]]).all()
    assert sum(issubclass(w.category, UndefinedMetricWarning) for w in caught) == 1
    references[0] = 0
    with pytest.warns(UndefinedMetricWarning, match="source 0: reference is silent"):
        sdr, _, _ = bss_eval(references, references + 0.1)
    assert np.isnan(sdr[0]) and np.isfinite(sdr[1])


def test_bss_eval_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="differ"):
        bss_eval(np.ones((2, 100)), np.ones((2, 99)))


def test_si_sdr_is_scale_invariant_and_matches_the_noise_level():
    reference = speechlike(2.0, seed=3).astype(np.float64)
    noise = np.random.default_rng(0).standard_normal(reference.size)
    noise *= np.linalg.norm(reference - reference.mean()) / np.linalg.norm(noise) / 10  # 20 dB
    estimate = reference + noise
    assert si_sdr(reference, estimate) == pytest.approx(20.0, abs=0.1)
    assert si_sdr(reference, 0.01 * estimate) == pytest.approx(si_sdr(reference, estimate), abs=1e-9)


def test_pesq_of_a_signal_with_itself_is_high(timit_pair):
    assert pesq_wb(timit_pair[0], timit_pair[0], RATE) > 4.0


def test_pesq_resamples_other_rates():
    reference = speechlike(2.0, sample_rate=22_050, seed=0).astype(np.float64)
    assert pesq_wb(reference, reference, 22_050) > 4.0


@pytest.mark.parametrize(
    "reference, estimate, reason",
    [
        (np.zeros(RATE), np.zeros(RATE), "silent"),
        (speechlike(1.0, seed=0), np.zeros(RATE), "estimate is silent"),
        (speechlike(0.1, seed=0), speechlike(0.1, seed=1), "1/4 of a second"),
    ],
)
def test_pesq_undefined_is_nan_with_a_counted_warning(reference, estimate, reason):
    with pytest.warns(UndefinedMetricWarning, match=reason) as caught:
        value = pesq_wb(reference, estimate, RATE)
    assert np.isnan(value)
    assert sum(issubclass(w.category, UndefinedMetricWarning) for w in caught) == 1


def test_stoi_of_itself_is_one_and_of_silence_is_nan():
    reference = speechlike(2.0, seed=0)
    assert stoi(reference, reference, RATE) == pytest.approx(1.0, abs=1e-6)
    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(stoi(np.zeros(RATE), reference[:RATE], RATE))


def test_score_returns_every_metric_for_every_source():
    references = {"male": speechlike(1.5, f0=120, seed=0), "female": speechlike(1.5, f0=230, seed=1)}
    mixture = references["male"] + references["female"]
    rng = np.random.default_rng(0)
    estimates = {name: ref + 0.2 * mixture + 0.01 * rng.standard_normal(mixture.size) for name, ref in references.items()}
    scores = score(references, estimates, RATE)
    assert list(scores) == ["male", "female"]
    assert METRICS == ("sdr", "sir", "sar", "si_sdr", "pesq", "stoi")
    for values in scores.values():
        assert list(values) == list(METRICS)
        assert all(isinstance(v, float) and np.isfinite(v) for v in values.values()), values
    with pytest.raises(ValueError, match="different sources"):
        score(references, {"male": estimates["male"]}, RATE)


def test_importing_metrics_does_not_import_heavy_packages():
    code = "import sys, sepvae.metrics; print(sorted({'pesq', 'pystoi', 'mir_eval', 'torch', 'scipy.signal'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
