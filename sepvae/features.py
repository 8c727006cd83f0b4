"""Spectrogram features: magnitude frames of mixtures and sources, and their normalization.

Normalization. Every frequency bin is divided by one scale per bin: the RMS of the training
*mixtures'* magnitudes in that bin. The paper only says that normalizing was "necessary for
the loss not to explode"; we choose a per-bin scale because

- it is invertible and keeps magnitudes non-negative, so a model's output is a magnitude
  estimate in the same units as its target;
- input and targets share the scale, so the Wiener-style mask S_k / sum_j S_j is the same
  whether computed from normalized or de-normalized estimates;
- it equalizes bins (speech energy falls ~40 dB from low to high bins), so the MSE does not
  see only the first few bins, and keeps frames O(1) for a stable Adam.

It is fitted on training mixtures only and stored with every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from sepvae.io import read_audio, to_mono
from sepvae.config import StftConfig
from sepvae.errors import SepvaeError
from sepvae.mixing import Mixture
from sepvae.stft import stft

SCALE_FLOOR = 1e-8


def spectrogram(waveform: Tensor, config: StftConfig, sample_rate: int) -> Tensor:
    """Complex STFT with the config's window and hop at ``sample_rate``.

    Shape:
        waveform: (..., time) -> (..., bins, frames) complex
    """
    return stft(waveform, config.n_fft(sample_rate), config.hop_length(sample_rate))


def load_mono(path, sample_rate: int) -> Tensor:
    """A manifest's audio file as a float32 mono tensor; it must be at ``sample_rate``."""
    audio, rate = read_audio(path)
    if rate != sample_rate:
        raise SepvaeError(f"{path}: sample rate {rate} Hz, expected {sample_rate} Hz like the other files")
    return torch.from_numpy(to_mono(audio))


@dataclass
class FrameSet:
    """Training frames of a set of mixtures, as (frames, bins) magnitudes.

    ``sources`` maps a source class (e.g. "male") to its frames; ``speakers[source][i]`` is
    the speaker of that source in frame i; ``mixture_index[i]`` the mixture frame i is from.
    """

    mixture: Tensor
    sources: dict[str, Tensor]
    speakers: dict[str, np.ndarray]
    mixture_index: np.ndarray

    def subset(self, mask: np.ndarray) -> "FrameSet":
        index = torch.from_numpy(np.flatnonzero(mask))
        return FrameSet(
            mixture=self.mixture[index],
            sources={k: v[index] for k, v in self.sources.items()},
            speakers={k: v[mask] for k, v in self.speakers.items()},
            mixture_index=self.mixture_index[mask],
        )


def load_frames(mixtures: list[Mixture], config: StftConfig, sample_rate: int) -> FrameSet:
    """Magnitude frames of every mixture and its sources (STFT frames as rows)."""
    if not mixtures:
        raise SepvaeError("no training mixtures in the manifest")
    names = list(mixtures[0].source_paths)
    mixture_frames, index = [], []
    source_frames: dict[str, list[Tensor]] = {n: [] for n in names}
    speakers: dict[str, list[str]] = {n: [] for n in names}
    for i, mixture in enumerate(mixtures):
        signals = [load_mono(mixture.mixture_path, sample_rate)]
        signals += [load_mono(mixture.source_paths[n], sample_rate) for n in names]
        if len({s.numel() for s in signals}) != 1:
            raise SepvaeError(f"{mixture.mixture_path}: mixture and sources differ in length")
        mags = spectrogram(torch.stack(signals), config, sample_rate).abs().transpose(1, 2)
        mixture_frames.append(mags[0])
        for k, name in enumerate(names):
            source_frames[name].append(mags[k + 1])
            speakers[name] += [mixture.speakers.get(name, "")] * mags.shape[1]
        index += [i] * mags.shape[1]
    return FrameSet(
        mixture=torch.cat(mixture_frames),
        sources={n: torch.cat(f) for n, f in source_frames.items()},
        speakers={n: np.array(s) for n, s in speakers.items()},
        mixture_index=np.array(index),
    )


def fit_scale(mixture_frames: Tensor) -> Tensor:
    """Per-bin scale: the RMS of the training mixtures' magnitudes.

    Shape:
        mixture_frames: (frames, bins) -> (bins,)
    """
    if mixture_frames.ndim != 2:
        raise ValueError(f"mixture_frames must be (frames, bins), got {tuple(mixture_frames.shape)}")
    return mixture_frames.pow(2).mean(dim=0).sqrt().clamp_min(SCALE_FLOOR)
