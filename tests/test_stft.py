"""sepvae.stft: shapes, exact round trip for the paper's settings A-H, NOLA, errors."""

from __future__ import annotations

import math

import pytest
import torch

from sepvae.config import STFT_SETTINGS, StftConfig
from sepvae.stft import istft, n_frames, stft

READINGS = ("overlap", "hop")
SAMPLE_RATES = (16_000, 44_100)
ALL_SETTINGS = [
    (letter, reading, sr)
    for letter in STFT_SETTINGS
    for reading in READINGS
    for sr in SAMPLE_RATES
]


def _params(letter: str, reading: str, sample_rate: int) -> tuple[int, int]:
    config = StftConfig.setting(letter, reading)
    return config.n_fft(sample_rate), config.hop_length(sample_rate)


def _lengths(n_fft: int, hop: int, sample_rate: int) -> list[int]:
    # Awkward lengths: shorter than half a window, one hop, and lengths whose remainder
    # modulo the hop is just above half a window (the tail the default centering misses).
    awkward = {1, 5, n_fft // 2 - 1, hop, n_fft + 1, 3 * hop + n_fft // 2 + 1, sample_rate + 37}
    return sorted(awkward)


def test_paper_setting_a_at_16k_has_the_expected_parameters():
    assert _params("A", "overlap", 16_000) == (1024, 768)
    assert _params("A", "hop", 16_000) == (1024, 256)
    assert _params("E", "overlap", 16_000) == (256, 128)
    assert StftConfig.setting("E").n_bins(16_000) == 129  # the paper's M for its best setting


@pytest.mark.parametrize("letter,reading,sample_rate", ALL_SETTINGS)
def test_round_trip_is_exact_and_keeps_length(letter, reading, sample_rate):
    n_fft, hop = _params(letter, reading, sample_rate)
    generator = torch.Generator().manual_seed(0)
    for length in _lengths(n_fft, hop, sample_rate):
        waveform = torch.rand(2, length, generator=generator) * 2 - 1
        spec = stft(waveform, n_fft, hop)
        assert spec.shape == (2, n_fft // 2 + 1, n_frames(length, n_fft, hop))
        assert spec.dtype == torch.complex64
        restored = istft(spec, n_fft, hop, length)
        assert restored.shape == waveform.shape
        assert restored.dtype == torch.float32
        assert (restored - waveform).abs().max() < 1e-5, (letter, reading, sample_rate, length)


@pytest.mark.parametrize("letter,reading,sample_rate", ALL_SETTINGS)
def test_window_overlap_add_is_bounded_away_from_zero(letter, reading, sample_rate):
    # NOLA: the sum of squared windows over the frames covering each sample of the signal
    # must be non-zero for the inverse to exist; a comfortable margin keeps it accurate.
    n_fft, hop = _params(letter, reading, sample_rate)
    length = 5 * n_fft + hop // 2
    frames = n_frames(length, n_fft, hop)
    window_sq = torch.hann_window(n_fft, periodic=True, dtype=torch.float64) ** 2
    envelope = torch.zeros((frames - 1) * hop + n_fft, dtype=torch.float64)
    for k in range(frames):
        envelope[k * hop : k * hop + n_fft] += window_sq
    covered = envelope[n_fft // 2 : n_fft // 2 + length]  # the signal's samples
    assert covered.min() > 0.04


def test_float64_round_trip_is_exact_to_double_precision():
    waveform = torch.randn(3, 4001, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    spec = stft(waveform, 1024, 768)
    assert spec.dtype == torch.complex128
    assert (istft(spec, 1024, 768, 4001) - waveform).abs().max() < 1e-12


def test_leading_dimensions_are_folded_and_restored():
    waveform = torch.randn(2, 3, 1000)
    spec = stft(waveform, 256, 128)
    assert spec.shape == (2, 3, 129, n_frames(1000, 256, 128))
    assert torch.allclose(spec[1, 2], stft(waveform[1, 2], 256, 128))
    assert istft(spec, 256, 128, 1000).shape == (2, 3, 1000)
    assert stft(torch.randn(1000), 256, 128).shape == (129, n_frames(1000, 256, 128))


def test_frames_are_centred_like_torch_center_true():
    # Frame k is centred on sample k * hop: the frames torch's own centred STFT has match.
    waveform = torch.randn(1000, dtype=torch.float64)
    ours = stft(waveform, 256, 100)
    reference = torch.stft(
        waveform,
        256,
        100,
        window=torch.hann_window(256, periodic=True, dtype=torch.float64),
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    shared = reference.shape[-1]
    assert ours.shape[-1] >= shared
    assert torch.allclose(ours[:, :shared], reference, atol=1e-10)


def test_a_tone_peaks_in_its_bin():
    n_fft, sample_rate, bin_index = 256, 16_000, 20
    t = torch.arange(sample_rate) / sample_rate
    tone = torch.sin(2 * math.pi * bin_index * sample_rate / n_fft * t)
    magnitude = stft(tone, n_fft, 128).abs()
    middle = magnitude[:, 5:-5]
    assert (middle.argmax(dim=0) == bin_index).all()


def test_istft_can_return_fewer_samples_than_were_analysed():
    waveform = torch.randn(2000)
    restored = istft(stft(waveform, 256, 128), 256, 128, 1500)
    assert torch.allclose(restored, waveform[:1500], atol=1e-5)


@pytest.mark.parametrize(
    "waveform,n_fft,hop",
    [
        (torch.tensor(1.0), 256, 128),  # 0-d
        (torch.randn(100, dtype=torch.complex64), 256, 128),  # complex
        (torch.arange(100), 256, 128),  # integer
        (torch.randn(2, 0), 256, 128),  # empty
        (torch.randn(100), 1, 1),  # n_fft < 2
        (torch.randn(100), 256, 300),  # hop > n_fft
        (torch.randn(100), 256, 256),  # hop == n_fft: a Hann window cannot be inverted
        (torch.randn(100), 256, 0),
        (torch.randn(100), 256.0, 128),  # not an int
    ],
)
def test_stft_rejects_bad_input(waveform, n_fft, hop):
    with pytest.raises(ValueError):
        stft(waveform, n_fft, hop)


def test_istft_rejects_bad_input():
    spec = stft(torch.randn(1000), 256, 128)
    with pytest.raises(ValueError, match="complex"):
        istft(spec.abs(), 256, 128, 1000)
    with pytest.raises(ValueError, match="bins"):
        istft(spec, 512, 128, 1000)
    with pytest.raises(ValueError, match="frames"):
        istft(spec[:, :-2], 256, 128, 1000)
    with pytest.raises(ValueError):
        istft(spec[0], 256, 128, 1000)  # 1-d
    with pytest.raises(ValueError):
        istft(spec, 256, 128, 0)
    with pytest.raises(ValueError):
        istft(spec, 256, 256, 1000)
