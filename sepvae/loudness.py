"""The active level of a recording, for level matching.

The networks' inputs are magnitudes divided by a fixed scale, so a model sees a recording
10 dB quieter than its training mixtures as another kind of input: the shipped model lost
1.3 dB SDR on TIMIT mixtures played 10 dB quieter, 5.7 dB at 20 dB quieter (README, "Level
matching"). A model that matches levels feeds its networks the recording times
``reference / active_rms(recording)``, where ``reference`` is the median active level of its
training mixtures (in its card), and applies the ratio masks to the recording as it is; the
estimates then scale with the input exactly.

The active level is a simplified ITU-T P.56 speech level: the RMS over the 20 ms blocks
whose energy is within 30 dB of the loud blocks (the 95th percentile of block energies, so
one click does not set it), so pauses and silence padding do not lower it.
"""

from __future__ import annotations

import numpy as np

BLOCK_SECONDS = 0.02
RANGE_DB = 30.0
LOUD_PERCENTILE = 95.0
MAX_GAIN_DB = 60.0  # level matching never changes the level by more than this


class ActiveLevel:
    """The active level of a recording given block by block (in any block sizes)."""

    def __init__(self, sample_rate: int):
        if sample_rate < 1:
            raise ValueError(f"sample_rate must be >= 1, got {sample_rate}")
        self.block = max(1, round(BLOCK_SECONDS * sample_rate))
        self._energies: list[np.ndarray] = []
        self._rest = np.zeros(0)

    def add(self, samples: np.ndarray) -> None:
        """Shape: samples (time,), mono."""
        samples = np.concatenate([self._rest, np.asarray(samples, dtype=np.float64).ravel()])
        whole = samples.size // self.block * self.block
        if whole:
            self._energies.append(np.square(samples[:whole]).reshape(-1, self.block).mean(axis=1))
        self._rest = samples[whole:]

    def rms(self) -> float:
        """The active RMS; 0 for silence. A recording shorter than one block: its plain RMS."""
        energies = np.concatenate(self._energies) if self._energies else np.square(self._rest).mean(keepdims=True)
        if not energies.size or not np.isfinite(energies).all():
            return 0.0
        loud = np.percentile(energies, LOUD_PERCENTILE)
        if loud <= 0:
            return 0.0
        return float(np.sqrt(energies[energies >= loud * 10 ** (-RANGE_DB / 10)].mean()))


def active_rms(signal: np.ndarray, sample_rate: int) -> float:
    """The active level (RMS) of a mono signal (see the module docstring).

    Shape:
        signal: (time,)
    """
    level = ActiveLevel(sample_rate)
    level.add(signal)
    return level.rms()


def matching_gain(reference: float, rms: float) -> float:
    """The gain that brings a recording of active level ``rms`` to ``reference``; 1 for
    silence, at most ``MAX_GAIN_DB`` either way."""
    if rms <= 0 or reference <= 0:
        return 1.0
    limit = 10 ** (MAX_GAIN_DB / 20)
    return float(min(max(reference / rms, 1 / limit), limit))
