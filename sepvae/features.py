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

Two training-recipe options change what the networks see (:class:`Normalization`):
``normalization = "global"`` divides every bin by one scale, so the squared error the models
minimize is that of the magnitudes themselves, dominated by the loud low bins as SDR is;
``inputs = "log1p"`` then compresses the network's *input* (log1p, standardized per bin) so
the quiet bins still reach it, while its output stays a magnitude estimate. Both keep the
mask argument above. ``remix`` adds training mixtures re-paired from the training sources
(:func:`remix_frames`): more voice combinations from the same few speakers.
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


class _FrameLists:
    """Collects the frames of one mixture at a time into a :class:`FrameSet`."""

    def __init__(self, names: list[str]):
        self.names = names
        self.mixture: list[Tensor] = []
        self.sources: dict[str, list[Tensor]] = {n: [] for n in names}
        self.speakers: dict[str, list[str]] = {n: [] for n in names}
        self.index: list[int] = []

    def add(self, magnitudes: Tensor, speakers: list[str], mixture_index: int) -> None:
        """Shape: magnitudes (1 + sources, frames, bins): the mixture's, then each source's."""
        self.mixture.append(magnitudes[0])
        for k, (name, speaker) in enumerate(zip(self.names, speakers)):
            self.sources[name].append(magnitudes[k + 1])
            self.speakers[name] += [speaker] * magnitudes.shape[1]
        self.index += [mixture_index] * magnitudes.shape[1]

    def build(self) -> FrameSet:
        return FrameSet(
            mixture=torch.cat(self.mixture),
            sources={n: torch.cat(f) for n, f in self.sources.items()},
            speakers={n: np.array(s) for n, s in self.speakers.items()},
            mixture_index=np.array(self.index),
        )


def _magnitudes(signals: list[Tensor], config: StftConfig, sample_rate: int) -> Tensor:
    """Shape: equal-length signals -> (signals, frames, bins) magnitude frames."""
    return spectrogram(torch.stack(signals), config, sample_rate).abs().transpose(1, 2)


def load_frames(mixtures: list[Mixture], config: StftConfig, sample_rate: int) -> FrameSet:
    """Magnitude frames of every mixture and its sources (STFT frames as rows)."""
    if not mixtures:
        raise SepvaeError("no training mixtures in the manifest")
    names = list(mixtures[0].source_paths)
    frames = _FrameLists(names)
    for i, mixture in enumerate(mixtures):
        signals = [load_mono(mixture.mixture_path, sample_rate)]
        signals += [load_mono(mixture.source_paths[n], sample_rate) for n in names]
        if len({s.numel() for s in signals}) != 1:
            raise SepvaeError(f"{mixture.mixture_path}: mixture and sources differ in length")
        frames.add(_magnitudes(signals, config, sample_rate), [mixture.speakers.get(n, "") for n in names], i)
    return frames.build()


def fit_scale(mixture_frames: Tensor, per_bin: bool = True) -> Tensor:
    """Per-bin scale: the RMS of the training mixtures' magnitudes in each bin, or
    (``per_bin=False``) their RMS over all bins, repeated for every bin.

    Shape:
        mixture_frames: (frames, bins) -> (bins,)
    """
    if mixture_frames.ndim != 2:
        raise ValueError(f"mixture_frames must be (frames, bins), got {tuple(mixture_frames.shape)}")
    if not per_bin:
        rms = mixture_frames.pow(2).mean().sqrt().clamp_min(SCALE_FLOOR)
        return rms.expand(mixture_frames.shape[1]).clone()
    return mixture_frames.pow(2).mean(dim=0).sqrt().clamp_min(SCALE_FLOOR)


@dataclass
class Normalization:
    """What a source model's network sees: ``inputs`` of a mixture's magnitude frames and
    ``targets`` of a source's; the network's output times ``scale`` is a magnitude estimate.

    Shape:
        scale, input_mean, input_std: (bins,); frames: (frames, bins)
    """

    scale: Tensor
    input_mean: Tensor | None = None  # set: log1p inputs, standardized per bin
    input_std: Tensor | None = None

    def inputs(self, mixture: Tensor) -> Tensor:
        from sepvae.models import normalized_inputs

        return normalized_inputs(mixture, self.scale, self.input_mean, self.input_std)

    def targets(self, source: Tensor) -> Tensor:
        return source / self.scale

    def model(self, network) -> "SourceModel":  # noqa: F821
        """``network`` (trained on these inputs and targets) as a SourceModel."""
        from sepvae.models import SourceModel

        return SourceModel(network, self.scale, self.input_mean, self.input_std)


def fit_normalization(mixture_frames: Tensor, per_bin: bool = True, log_inputs: bool = False) -> Normalization:
    """The normalization of a training recipe, fitted on the training mixtures' frames."""
    scale = fit_scale(mixture_frames, per_bin)
    if not log_inputs:
        return Normalization(scale)
    compressed = torch.log1p(mixture_frames / scale)
    return Normalization(scale, compressed.mean(dim=0), compressed.std(dim=0).clamp_min(1e-3))


@dataclass(frozen=True)
class Perturbation:
    """Speaker augmentation of one remixed source (:func:`remix_frames`): its speed
    (:func:`change_speed`), then its spectrum's :func:`warp_frequencies` and :func:`tilt`.
    The identity by default."""

    speed: float = 1.0  # > 1: faster (higher pitch and formants, shorter)
    warp: float = 1.0  # > 1: formants up (a shorter vocal tract)
    tilt_db: float = 0.0  # the gain at Nyquist minus the gain at 0 Hz
    gain_db: float = 0.0

    @classmethod
    def draw(cls, rng: np.random.Generator, speed: float, warp: float, tilt_db: float, gain_db: float) -> "Perturbation":
        return cls(1 + rng.uniform(-speed, speed), 1 + rng.uniform(-warp, warp), rng.uniform(-tilt_db, tilt_db), gain_db)

    def spectrum(self, spectrum: Tensor) -> Tensor:
        """The warp, tilt and gain of a source's complex spectrogram (bins, frames)."""
        return tilt(warp_frequencies(spectrum, self.warp), self.tilt_db) * 10 ** (self.gain_db / 20)


def change_speed(signal: Tensor, factor: float) -> Tensor:
    """``signal`` played ``factor`` times as fast: polyphase resampling to ~len / factor samples.

    Shape:
        signal: (time,) -> (about time / factor,)
    """
    from fractions import Fraction

    from scipy.signal import resample_poly

    if factor == 1.0:
        return signal
    ratio = Fraction(factor).limit_denominator(200)  # factor ~ up / down: len * down / up samples
    return torch.from_numpy(resample_poly(signal.numpy(), ratio.denominator, ratio.numerator).astype(np.float32))


def warp_frequencies(spectrum: Tensor, alpha: float, boundary: float = 0.8) -> Tensor:
    """Vocal tract length perturbation (Jaitly & Hinton 2013): frequency f moves to alpha * f
    up to ``boundary`` x Nyquist (times min(alpha, 1)), then linearly so that Nyquist stays.
    Each output bin takes the magnitude interpolated at its source frequency and the phase of
    the nearest source bin, so no energy is lost to phase cancellation.

    Shape:
        spectrum: (..., bins, frames) complex -> the same
    """
    if alpha == 1.0:
        return spectrum
    nyquist = spectrum.shape[-2] - 1
    out = torch.arange(nyquist + 1, dtype=torch.float64)
    edge_out = boundary * nyquist * min(alpha, 1.0)
    edge_in = edge_out / alpha
    source = torch.where(out <= edge_out, out / alpha,
                         nyquist - (nyquist - out) * (nyquist - edge_in) / (nyquist - edge_out))
    low = source.floor().long().clamp(0, nyquist - 1)
    frac = (source - low).float()[:, None]
    magnitude = spectrum.abs()
    warped = magnitude[..., low, :] * (1 - frac) + magnitude[..., low + 1, :] * frac
    nearest = source.round().long().clamp(0, nyquist)
    return torch.polar(warped, spectrum[..., nearest, :].angle())


def tilt(spectrum: Tensor, tilt_db: float) -> Tensor:
    """A spectral slope: gain linear in dB over frequency, ``-tilt_db / 2`` at 0 Hz and
    ``+tilt_db / 2`` at Nyquist.

    Shape:
        spectrum: (..., bins, frames) -> the same
    """
    if tilt_db == 0.0:
        return spectrum
    position = torch.linspace(-0.5, 0.5, spectrum.shape[-2])[:, None]
    return spectrum * 10 ** (tilt_db * position / 20)


def remix_frames(mixtures: list[Mixture], config: StftConfig, sample_rate: int, rounds: int,
                 gain_db: float = 0.0, seed: int = 0, first_index: int = 0,
                 speed: float = 0.0, warp: float = 0.0, tilt_db: float = 0.0, level_db: float = 0.0) -> FrameSet:
    """Frames of ``rounds`` x len(mixtures) new training mixtures: the first source of each
    mixture with the second source of another (a random permutation per round), the second
    circularly shifted by a random offset and the first scaled by a random gain in
    ±``gain_db`` dB. With ``speed``, ``warp`` or ``tilt_db`` each source is also perturbed
    (:class:`Perturbation`, drawn from a stream of its own, so the pairs, gains and shifts
    stay those of the unperturbed recipe), with ``level_db`` both get a common gain in
    ±``level_db`` dB, and the mixture is the sum of the perturbed sources.
    Only these mixtures' own source files are read, so nothing held out (validation or test
    utterances) can leak in. ``mixture_index`` counts from ``first_index``.
    """
    if len(mixtures) < 2 or rounds < 1:
        raise SepvaeError(f"remixing needs >= 2 training mixtures and >= 1 round, got {len(mixtures)}, {rounds}")
    names = list(mixtures[0].source_paths)
    if len(names) != 2:
        raise SepvaeError(f"remixing pairs two sources per mixture, the manifest has {names}")
    rng = np.random.default_rng([seed, 2])
    augment = np.random.default_rng([seed, 3])
    first = [load_mono(m.source_paths[names[0]], sample_rate) for m in mixtures]
    second = [load_mono(m.source_paths[names[1]], sample_rate) for m in mixtures]
    frames = _FrameLists(names)
    for round_ in range(rounds):
        for i, j in enumerate(rng.permutation(len(mixtures))):
            level = augment.uniform(-level_db, level_db)
            changes = [Perturbation.draw(augment, speed, warp, tilt_db, level) for _ in names]
            a = change_speed(first[i], changes[0].speed)
            b = change_speed(second[j], changes[1].speed)
            length = min(a.numel(), b.numel())
            a = a[:length] * float(10 ** (rng.uniform(-gain_db, gain_db) / 20))
            b = torch.roll(b, int(rng.integers(b.numel())))[:length]
            spectra = [c.spectrum(spectrogram(s, config, sample_rate)) for s, c in zip((a, b), changes)]
            magnitudes = torch.stack([spectra[0] + spectra[1], *spectra]).abs().transpose(1, 2)
            speakers = [mixtures[i].speakers.get(names[0], ""), mixtures[j].speakers.get(names[1], "")]
            frames.add(magnitudes, speakers, first_index + round_ * len(mixtures) + i)
    return frames.build()


def concat(*sets: FrameSet) -> FrameSet:
    """Frame sets one after the other (the same sources)."""
    return FrameSet(
        mixture=torch.cat([s.mixture for s in sets]),
        sources={n: torch.cat([s.sources[n] for s in sets]) for n in sets[0].sources},
        speakers={n: np.concatenate([s.speakers[n] for s in sets]) for n in sets[0].speakers},
        mixture_index=np.concatenate([s.mixture_index for s in sets]),
    )
