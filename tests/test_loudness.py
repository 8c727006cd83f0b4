"""The active level of a recording, which level matching brings to the training mixtures'."""

import numpy as np
import pytest

from sepvae.loudness import MAX_GAIN_DB, ActiveLevel, active_rms, matching_gain

RATE = 16_000


def tone(seconds, amplitude=0.5):
    return amplitude * np.sin(2 * np.pi * 440 * np.arange(int(seconds * RATE)) / RATE)


def test_a_tones_level_is_its_rms_with_or_without_pauses():
    assert active_rms(tone(1.0), RATE) == pytest.approx(0.5 / np.sqrt(2), rel=1e-3)
    paused = np.concatenate([np.zeros(2 * RATE), tone(1.0), np.zeros(3 * RATE)])
    assert active_rms(paused, RATE) == pytest.approx(0.5 / np.sqrt(2), rel=1e-3)
    # A faint background 40 dB down does not count; one at -10 dB does.
    faint = paused + 1e-4 * np.random.default_rng(0).standard_normal(paused.size)
    assert active_rms(faint, RATE) == pytest.approx(0.5 / np.sqrt(2), rel=1e-2)
    assert active_rms(np.concatenate([tone(1.0), tone(1.0, 0.5 / np.sqrt(10))]), RATE) < 0.5 / np.sqrt(2) * 0.8


def test_blocks_of_any_size_give_the_level_of_the_whole():
    signal = np.random.default_rng(1).standard_normal(RATE) * np.linspace(0, 1, RATE)
    level = ActiveLevel(RATE)
    for start in range(0, signal.size, 777):
        level.add(signal[start : start + 777])
    assert level.rms() == pytest.approx(active_rms(signal, RATE), rel=1e-12)


def test_silence_and_matching_gains():
    assert active_rms(np.zeros(RATE), RATE) == 0.0
    assert active_rms(np.full(100, 0.5), RATE) == pytest.approx(0.5)  # shorter than one block
    assert matching_gain(0.1, 0.0) == 1.0
    assert matching_gain(0.1, 0.01) == pytest.approx(10.0)
    assert matching_gain(1.0, 1e-9) == pytest.approx(10 ** (MAX_GAIN_DB / 20))
    with pytest.raises(ValueError, match="sample_rate must be >= 1"):
        ActiveLevel(0)
