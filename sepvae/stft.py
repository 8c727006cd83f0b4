"""The one STFT / inverse STFT pair used everywhere, on native complex tensors.

Leading dimensions (batch, channels, ...) are folded into one for torch and restored after,
as in demucs' ``spec.py``. The window is a periodic Hann window of ``n_fft`` samples.

Framing. The waveform gets ``n_fft // 2`` zeros on the left (the usual ``center=True``,
so frame ``k`` is centred on sample ``k * hop``) and enough zeros on the right that every
sample is covered by all the frames that would cover it in an endless signal. Without that
right padding, a hop larger than half the window (the paper's setting A at 16 kHz:
``n_fft=1024, hop=768``) leaves the last samples under the near-zero tail of one window or
under none, and the inverse is inexact or undefined there. The number of frames is

    frames = ceil((time + n_fft // 2) / hop)

(:func:`n_frames`). Zeros, rather than reflection, are used for padding because the padded
samples are cut away again by :func:`istft`, so any padding gives an exact round trip, and
zeros also work for waveforms shorter than half a window, where reflection cannot.

With a periodic Hann window the sum of squared windows (NOLA) is non-zero everywhere as
long as ``hop < n_fft``: a sample where one window is zero lies ``hop`` samples inside the
previous window. ``hop == n_fft`` fails that (the Hann window is zero at its first sample),
so both functions require ``1 <= hop < n_fft``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F


def _check_params(n_fft: int, hop_length: int) -> None:
    if not isinstance(n_fft, int) or n_fft < 2:
        raise ValueError(f"n_fft must be an int >= 2, got {n_fft!r}")
    if not isinstance(hop_length, int) or not 1 <= hop_length < n_fft:
        raise ValueError(
            f"hop_length must be an int with 1 <= hop_length < n_fft={n_fft} "
            f"(a periodic Hann window cannot be inverted otherwise), got {hop_length!r}"
        )


def n_frames(length: int, n_fft: int, hop_length: int) -> int:
    """How many frames :func:`stft` gives for a waveform of ``length`` samples."""
    _check_params(n_fft, hop_length)
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    return math.ceil((length + n_fft // 2) / hop_length)


def _window(n_fft: int, like: Tensor) -> Tensor:
    return torch.hann_window(n_fft, periodic=True, dtype=like.dtype, device=like.device)


def stft(waveform: Tensor, n_fft: int, hop_length: int) -> Tensor:
    """Complex short-time Fourier transform with a periodic Hann window.

    Args:
        waveform: real floating-point signal, time on the last axis.
        n_fft: window and FFT length in samples (>= 2).
        hop_length: hop between frames in samples, ``1 <= hop_length < n_fft``.

    Returns:
        The one-sided complex spectrogram (complex64 for float32 input, complex128 for
        float64), not normalized, so ``|stft|`` is in the waveform's units times the window
        sum.

    Shape:
        - waveform: ``(..., time)``, ``time >= 1``
        - output: ``(..., n_fft // 2 + 1, frames)`` with
          ``frames = ceil((time + n_fft // 2) / hop_length)``
    """
    _check_params(n_fft, hop_length)
    if not isinstance(waveform, Tensor):
        raise ValueError(f"waveform must be a torch.Tensor, got {type(waveform).__name__}")
    if waveform.dim() == 0:
        raise ValueError("waveform must have a time axis, got a 0-d tensor")
    if waveform.is_complex() or not waveform.is_floating_point():
        raise ValueError(f"waveform must be real floating point, got {waveform.dtype}")
    length = waveform.shape[-1]
    if length < 1:
        raise ValueError("waveform is empty (0 samples)")

    frames = n_frames(length, n_fft, hop_length)
    left = n_fft // 2
    right = (frames - 1) * hop_length + n_fft - left - length  # >= n_fft - hop > 0
    *other, _ = waveform.shape
    folded = waveform.reshape(-1, length)
    padded = F.pad(folded, (left, right))  # zeros; see the module docstring
    spec = torch.stft(
        padded,
        n_fft=n_fft,
        hop_length=hop_length,
        window=_window(n_fft, folded),
        center=False,
        onesided=True,
        return_complex=True,
    )
    return spec.reshape(*other, spec.shape[-2], spec.shape[-1])


def istft(spec: Tensor, n_fft: int, hop_length: int, length: int) -> Tensor:
    """Inverse of :func:`stft` (weighted overlap-add), giving exactly ``length`` samples.

    Args:
        spec: complex one-sided spectrogram as made by :func:`stft` with the same
            ``n_fft`` and ``hop_length``.
        n_fft: window and FFT length in samples.
        hop_length: hop between frames in samples, ``1 <= hop_length < n_fft``.
        length: number of output samples, typically the original waveform's length; the
            spectrogram must have at least ``ceil((length + n_fft // 2) / hop_length)``
            frames.

    Shape:
        - spec: ``(..., n_fft // 2 + 1, frames)``, complex
        - output: ``(..., length)``, real (float32 for complex64, float64 for complex128)
    """
    _check_params(n_fft, hop_length)
    if not isinstance(spec, Tensor):
        raise ValueError(f"spec must be a torch.Tensor, got {type(spec).__name__}")
    if not spec.is_complex():
        raise ValueError(f"spec must be complex, got {spec.dtype}")
    if spec.dim() < 2:
        raise ValueError(f"spec must be (..., bins, frames), got shape {tuple(spec.shape)}")
    n_bins = n_fft // 2 + 1
    if spec.shape[-2] != n_bins:
        raise ValueError(
            f"spec has {spec.shape[-2]} frequency bins but n_fft={n_fft} needs {n_bins}"
        )
    if not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be an int >= 1, got {length!r}")
    needed = n_frames(length, n_fft, hop_length)
    if spec.shape[-1] < needed:
        raise ValueError(
            f"spec has {spec.shape[-1]} frames but {length} samples need {needed} "
            f"(n_fft={n_fft}, hop_length={hop_length})"
        )

    *other, _, frames = spec.shape
    folded = spec.reshape(-1, n_bins, frames)
    # center=True makes torch drop the n_fft // 2 samples that stft padded on the left;
    # ``length`` drops the right padding.
    waveform = torch.istft(
        folded,
        n_fft=n_fft,
        hop_length=hop_length,
        window=_window(n_fft, folded.real),
        center=True,
        onesided=True,
        length=length,
    )
    return waveform.reshape(*other, length)
