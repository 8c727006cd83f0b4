"""The Separator: STFT -> normalized frames -> one model per source -> mask -> iSTFT.

A ``Separator`` holds ``{source: SourceModel}`` (each with its own normalization) plus what
every model of a folder shares (STFT settings, sample rate). The reconstruction is the paper's eq. 90: the
Wiener-style mask S_k / sum_j S_j on the mixture magnitude with the mixture phase.

Recordings of any length, rate and channel count go through one streaming path,
:meth:`Separator.separate_blocks`: blocks in -> mono -> soxr stream to the model's rate ->
chunks of STFT frames -> soxr stream back -> blocks out, in bounded memory.

Chunks. The models work frame by frame, so an output sample depends only on the frames
that overlap it, which lie within ``n_fft`` samples of it, and on their neighbours the
estimates are smoothed with (``smooth_frames`` hops on each side). A chunk of ``chunk``
samples (a multiple of the hop) is separated from a segment that adds ``margin >= n_fft +
smooth_frames * hop`` samples (also a multiple of the hop) on each side, and the margins are
thrown away. The segment
starts on a multiple of the hop, so its frames are the whole signal's frames, and every
frame under the kept part sees the same samples as in one whole-signal pass: the result
equals :meth:`Separator.separate_tensor` on the whole signal up to float rounding.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor

from sepvae.config import INFERENCE_DEFAULTS, StftConfig
# SeparationWarning is defined beside SepvaeError (io.py warns without importing torch)
# and imported from here by users.
from sepvae.errors import SeparationWarning, SepvaeError
from sepvae.filtering import apply_masks, ratio_mask, smooth_over_frames
from sepvae.io import to_mono
from sepvae.stft import istft, stft

DEFAULT_CHUNK_SECONDS = 10.0  # model-rate audio per model call: big batches, small memory
BLOCK_FRAMES = 1 << 16  # input frames per block read from a file or cut from an array
LOUD_PEAK = 1.5  # float input peaking above this is not in [-1, 1]: the estimates scale with it


def separate_with_masks(
    mixture: Tensor,
    mask_fn: Callable[[Tensor], Tensor],
    stft_config: StftConfig,
    sample_rate: int,
    phase_iterations: int = 0,
    shifts: int = 1,
) -> tuple[Tensor, Tensor]:
    """STFT -> masks -> masked mixture (eq. 90) -> iSTFT, exactly as long as the mixture.

    ``mask_fn`` maps the mixture's complex spectrogram (bins, frames) to per-source masks
    (sources, bins, frames): a model's ratio mask, an NMF's, or an oracle's. With
    ``phase_iterations`` > 0 the masked magnitudes get phases of their own instead of the
    mixture's (:func:`reconstruct_phase`).

    ``shifts`` > 1 averages the waveforms of that many passes whose STFT frames are shifted
    by ``k * hop // shifts`` samples (k = 0 .. shifts - 1): the mixture is delayed by that
    many zeros and its estimates advanced again, so every pass sees the same recording on
    another frame grid (the "shift trick" of test-time augmentation). ``mask_fn`` must then
    depend on the spectrogram it is given only (a model's or an NMF's mask, not an oracle's).
    The masks returned are those of the unshifted pass.

    Shape:
        mixture: (time,) -> waveforms (sources, time), masks (sources, bins, frames)
    """
    if mixture.ndim != 1:
        raise ValueError(f"mixture must be (time,), got {tuple(mixture.shape)}")
    if shifts < 1:
        raise ValueError(f"shifts must be >= 1, got {shifts}")
    n_fft, hop = stft_config.n_fft(sample_rate), stft_config.hop_length(sample_rate)

    def one_pass(delay: int) -> tuple[Tensor, Tensor]:
        delayed = torch.nn.functional.pad(mixture, (delay, 0)) if delay else mixture
        spec = stft(delayed, n_fft, hop)
        masks = mask_fn(spec)
        estimates = apply_masks(spec, masks)
        if phase_iterations:
            return reconstruct_phase(delayed, estimates, n_fft, hop, phase_iterations)[:, delay:], masks
        return istft(estimates, n_fft, hop, delayed.shape[-1])[:, delay:], masks

    waveforms, masks = one_pass(0)
    for k in range(1, shifts):
        waveforms = waveforms + one_pass(k * hop // shifts)[0]
    return (waveforms if shifts == 1 else waveforms / shifts), masks


def reconstruct_phase(mixture: Tensor, estimates: Tensor, n_fft: int, hop: int, iterations: int) -> Tensor:
    """Phases for the sources' magnitudes by MISI (multiple input spectrogram inversion,
    Gunawan & Sen 2010): each round shares the waveforms' error against the mixture equally
    among the sources, then keeps each source's STFT phase and restores its magnitude.

    The magnitudes stay those of ``estimates`` (the masked mixture); the first phases are
    theirs (the mixture's). The waveforms returned follow the last magnitude step, so they
    sum to the mixture only approximately.

    Shape:
        mixture: (time,); estimates: (sources, bins, frames) complex -> (sources, time)
    """
    if iterations < 0:
        raise ValueError(f"phase iterations must be >= 0, got {iterations}")
    length = mixture.shape[-1]
    magnitudes = estimates.abs()
    waveforms = istft(estimates, n_fft, hop, length)
    for _ in range(iterations):
        waveforms = waveforms + (mixture - waveforms.sum(0)) / len(waveforms)
        waveforms = istft(magnitudes * torch.sgn(stft(waveforms, n_fft, hop)), n_fft, hop, length)
    return waveforms


def direct_estimates(models: dict[str, torch.nn.Module], magnitude: Tensor) -> Tensor:
    """Each source model applied to the mixture's magnitude frames (the paper's models).

    Shape: magnitude (bins, frames) -> (sources, bins, frames), in ``models``' order
    """
    frames = magnitude.transpose(0, 1)
    return torch.stack([model(frames) for model in models.values()]).transpose(1, 2)


class Separator:
    """Separates a mixture into one waveform per source with ``{source: model}``.

    Args:
        models: source name -> :class:`~sepvae.models.SourceModel`, mixture magnitude frames
            ``(n, bins)`` -> that source's ``(n, bins)``.
        stft_config, sample_rate: the analysis the models were trained with.
        mask_power: exponent of the ratio mask (1 is the paper's eq. 90).
        chunk_seconds: model-rate audio separated per model call by the streaming path.
        estimator: ``(models, mixture magnitude (bins, frames)) -> (sources, bins, frames)``,
            how the models give the sources' magnitudes; default: each model maps the
            mixture frames directly. A model folder's kind picks it (its registry entry's
            ``estimator``: the fitting methods fit decoder codes, :mod:`sepvae.fitting`).
        input_rms: level matching (:mod:`sepvae.loudness`): the networks see each recording
            brought to this active level (the training mixtures'); the masks apply to the
            recording as it is, so the estimates scale with the input. None: as it is.
        phase_iterations: rounds of MISI phase reconstruction after the mask (0: the
            mixture's phase).
        shifts: the mean of this many passes on frame grids shifted by fractions of a hop
            (:func:`separate_with_masks`); 1 is one pass, as in the paper.
        smooth_frames: the sources' magnitude estimates averaged over this many frames on
            each side before the mask (:func:`~sepvae.filtering.smooth_over_frames`); 0, as
            in the paper, leaves each frame's own.
    """

    def __init__(
        self,
        models: dict[str, torch.nn.Module],
        stft_config: StftConfig,
        sample_rate: int,
        mask_power: float = 1.0,
        eps: float = 1e-8,
        chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
        estimator: Callable[[dict[str, torch.nn.Module], Tensor], Tensor] | None = None,
        input_rms: float | None = None,
        phase_iterations: int = 0,
        shifts: int = 1,
        smooth_frames: int = 0,
    ):
        if len(models) < 2:
            raise SepvaeError(f"a Separator needs at least two source models, got {list(models)}")
        n_bins = {model.n_bins for model in models.values()}
        if n_bins != {stft_config.n_bins(sample_rate)}:
            raise SepvaeError(
                f"source models have {sorted(n_bins)} frequency bins, but the STFT "
                f"({stft_config.window_ms:g} ms at {sample_rate} Hz) gives {stft_config.n_bins(sample_rate)}"
            )
        self.models = models
        self.stft_config = stft_config
        self.sample_rate = sample_rate
        self.mask_power = mask_power
        self.eps = eps
        self.chunk_seconds = chunk_seconds
        self.estimator = estimator or direct_estimates
        if input_rms is not None and not input_rms > 0:
            raise SepvaeError(f"input_rms must be > 0 for level matching, got {input_rms}")
        self.input_rms = input_rms
        self.phase_iterations, self.shifts, self.smooth_frames = phase_iterations, shifts, smooth_frames
        for name, least in INFERENCE_DEFAULTS.items():
            if getattr(self, name) < least:
                raise SepvaeError(f"{name} must be >= {least}, got {getattr(self, name)}")
        self.device = next(next(iter(models.values())).parameters()).device

    @property
    def sources(self) -> list[str]:
        return list(self.models)

    @property
    def n_fft(self) -> int:
        return self.stft_config.n_fft(self.sample_rate)

    @property
    def hop_length(self) -> int:
        return self.stft_config.hop_length(self.sample_rate)

    # -- loading ----------------------------------------------------------------------

    @classmethod
    def from_run(
        cls, run: str | Path, sources: list[str] | None = None, device: str = "auto",
        mask_power: float | None = None, models: dict[str, str] | None = None,
        match_level: bool | None = None, phase_iterations: int | None = None, shifts: int | None = None,
        smooth_frames: int | None = None,
    ) -> "Separator":
        """Load a model folder (a training run or a shipped model), checked against its card.

        Every source of the card, in its order, or those named in ``sources``; ``models``
        maps each source to another checkpoint of the folder (speaker mode: source ->
        that mixture's speaker). ``mask_power`` None: the exponent the card recommends
        (``info.mask_power``, what the model was evaluated with), else 1 (eq. 90).
        ``match_level`` None: as the card recommends (``info.match_level``), else off;
        ``phase_iterations`` None: as the card says (``info.phase_iterations``), else 0;
        ``shifts`` None: as the card says (``info.shifts``), else 1; ``smooth_frames`` None:
        as the card says (``info.smooth_frames``), else 0.
        A folder of several members per source (card ``members``) gives each source the
        mean of its networks' estimates (:class:`~sepvae.models.MeanOfModels`).
        """
        from sepvae.checkpoint import card_of, load_checkpoint
        from sepvae.device import pick_device
        from sepvae.methods import entry
        from sepvae.models import MeanOfModels

        run = Path(run)
        if not run.is_dir():
            raise SepvaeError(f"{run}: no such model folder")
        card = card_of(run)
        models = models or {name: name for name in (sources or card.sources)}
        missing = [stem for stem in models.values() if stem not in card.sources]
        if missing:
            raise SepvaeError(f"{run}: no model for source(s) {', '.join(missing)} (has {', '.join(card.sources) or 'none'})")
        make_estimator = entry(card.kind).estimator
        if make_estimator and card.members > 1:
            raise SepvaeError(f"{run}: {card.kind} fits codes to each mixture; its card's {card.members} members cannot be averaged")
        torch_device = pick_device(device)

        def load(stem: str) -> torch.nn.Module:
            members = [load_checkpoint(run / card.weights_file(stem, k), torch_device, card)[0]
                       for k in range(card.members)]
            return members[0] if len(members) == 1 else MeanOfModels(members)

        loaded = {source: load(stem) for source, stem in models.items()}
        if mask_power is None:
            mask_power = float(card.info.get("mask_power", 1.0))
        if match_level is None:
            match_level = bool(card.info.get("match_level", False))
        asked = {"phase_iterations": phase_iterations, "shifts": shifts, "smooth_frames": smooth_frames}
        settings = {name: int(card.info.get(name, INFERENCE_DEFAULTS[name])) if value is None else value
                    for name, value in asked.items()}
        if match_level and card.input_rms is None:
            raise SepvaeError(f"{run}: level matching needs the training mixtures' level (input_rms), which this "
                              f"model's card lacks: train it again with this version")
        estimator = make_estimator(card) if make_estimator else None
        return cls(loaded, card.stft, card.sample_rate, mask_power, estimator=estimator,
                   input_rms=card.input_rms if match_level else None, **settings)

    @classmethod
    def from_pretrained(cls, name: str = "default", device: str = "auto", mask_power: float | None = None) -> "Separator":
        """A model shipped in ``sepvae/pretrained/<name>/`` (``sepvae models`` lists them)."""
        from sepvae.pretrained import folder

        return cls.from_run(folder(name), device=device, mask_power=mask_power)

    # -- the model ----------------------------------------------------------------------

    def estimate_magnitudes(self, magnitude: Tensor) -> Tensor:
        """Per-source magnitude estimates of a mixture magnitude spectrogram.

        Shape:
            magnitude: (bins, frames) -> (sources, bins, frames)
        """
        n_bins = self.stft_config.n_bins(self.sample_rate)
        if magnitude.ndim != 2 or magnitude.shape[0] != n_bins:
            raise ValueError(f"magnitude must be ({n_bins}, frames), got {tuple(magnitude.shape)}")
        return self.estimator(self.models, magnitude)

    def mask(self, spec: Tensor, gain: float = 1.0) -> Tensor:
        """The ratio masks of the models' magnitude estimates (the paper's eq. 90) of the
        mixture times ``gain`` (level matching: :meth:`level_gain`), the estimates smoothed
        over ``smooth_frames`` frames on each side first.

        Shape:
            spec: (bins, frames) complex -> (sources, bins, frames)
        """
        magnitude = spec.abs() if gain == 1.0 else spec.abs() * gain
        estimates = smooth_over_frames(self.estimate_magnitudes(magnitude), self.smooth_frames)
        return ratio_mask(estimates, power=self.mask_power, eps=self.eps)

    def level_gain(self, rms: float) -> float:
        """The gain the networks' input gets for a recording of active level ``rms``
        (:func:`sepvae.loudness.active_rms`); 1 without level matching."""
        from sepvae.loudness import matching_gain

        return 1.0 if self.input_rms is None else matching_gain(self.input_rms, rms)

    def separate_tensor(self, mixture: Tensor, gain: float | None = None) -> tuple[Tensor, Tensor]:
        """Separate a mono mixture at the model's sample rate in one pass. ``gain``: the
        level matching gain (default: that of this mixture as a whole).

        Shape:
            mixture: (time,) -> waveforms (sources, time), masks (sources, bins, frames)
        """
        if gain is None:
            gain = self.level_gain(self.active_rms(mixture.cpu().numpy(), self.sample_rate))
        with torch.inference_mode():
            return separate_with_masks(
                mixture.to(self.device, torch.float32), lambda spec: self.mask(spec, gain), self.stft_config,
                self.sample_rate, self.phase_iterations, self.shifts,
            )

    def active_rms(self, waveform: np.ndarray, sample_rate: int) -> float:
        """A recording's active level, or 0 when this separator does not match levels (no need)."""
        from sepvae.loudness import active_rms

        return active_rms(waveform, sample_rate) if self.input_rms is not None else 0.0

    # -- recordings -----------------------------------------------------------------------

    def check_length(self, frames: int, sample_rate: int) -> None:
        """Raise SepvaeError if ``frames`` samples at ``sample_rate`` are less than one STFT window."""
        if frames < 1:
            raise SepvaeError("has zero samples")
        if frames * self.sample_rate < self.n_fft * sample_rate:
            needed = self.n_fft / self.sample_rate
            raise SepvaeError(
                f"too short: {frames} samples at {sample_rate} Hz ({1000 * frames / sample_rate:.1f} ms); "
                f"the model needs at least one STFT window ({1000 * needed:g} ms, "
                f"{math.ceil(needed * sample_rate)} samples at {sample_rate} Hz)"
            )

    def separate(self, waveform: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
        """Separate a recording at any sample rate; returns source -> float32 (time,).

        ``waveform`` is (time,) or (time, channels), float in [-1, 1] (integer arrays are
        scaled from their full range; float input peaking above 1.5 gets a warning, as its
        estimates scale with it). Channels are averaged to mono with a
        :class:`SeparationWarning`; the estimates have the input's rate and length, and
        hold nothing above half the model's rate (the models never saw that band).
        All-zero input gives all-zero estimates (with a warning).

        Raises SepvaeError for empty, too short (less than one STFT window) or non-finite
        input, ValueError for a wrong shape or a sample rate that is not a positive integer. The same streaming code path as ``sepvae separate``, so both give the same
        samples.
        """
        waveform = np.asarray(waveform)
        if waveform.ndim not in (1, 2):
            raise ValueError(f"waveform must be (time,) or (time, channels), got shape {waveform.shape}")
        if waveform.ndim == 2 and waveform.shape[1] > waveform.shape[0] > 0:
            raise ValueError(
                f"waveform of shape {waveform.shape} has more channels than samples; "
                f"pass (time, channels), e.g. waveform.T"
            )
        if np.issubdtype(waveform.dtype, np.integer):
            info = np.iinfo(waveform.dtype)
            waveform = (waveform.astype(np.float64) - (info.max + 1 + info.min) / 2) / ((info.max - info.min + 1) / 2)
        elif not np.issubdtype(waveform.dtype, np.floating):
            raise ValueError(f"waveform must be a real float or integer array, got {waveform.dtype}")
        else:
            _warn_if_loud(waveform)
        sample_rate = _positive_integer_rate(sample_rate)
        self.check_length(waveform.shape[0], sample_rate)
        if waveform.ndim == 2 and waveform.shape[1] > 1:
            warnings.warn(f"{waveform.shape[1]} channels averaged to mono", SeparationWarning, stacklevel=2)
        blocks = (to_mono(waveform[i : i + BLOCK_FRAMES]) for i in range(0, waveform.shape[0], BLOCK_FRAMES))
        rms = self.active_rms(to_mono(waveform), sample_rate) if np.isfinite(waveform).all() else 0.0
        out = np.concatenate(list(self.separate_blocks(blocks, sample_rate, rms)), axis=1)
        return {name: out[k] for k, name in enumerate(self.sources)}

    def separate_blocks(self, blocks: Iterable[np.ndarray], sample_rate: int,
                        rms: float | None = None) -> Iterator[np.ndarray]:
        """Stream a mono recording through the models: the core of :meth:`separate` and the CLI.

        ``blocks`` are consecutive float32 (frames,) pieces of one recording at
        ``sample_rate``; the blocks yielded are (sources, frames) pieces of the estimates at
        the same rate, as many samples in all as went in. Memory is bounded by the block
        and chunk sizes, not the recording's length. ``rms``: the whole recording's active
        level (:meth:`active_rms`), which a separator that matches levels needs up front.

        Raises SepvaeError on NaN or Inf samples (naming the time), warns
        (:class:`SeparationWarning`) if every sample is zero.
        """
        if rms is None and self.input_rms is not None:
            raise ValueError("this separator matches levels: pass the recording's rms (Separator.active_rms)")
        gain = self.level_gain(rms or 0.0)
        total = 0
        peak = 0.0

        def checked() -> Iterator[np.ndarray]:
            nonlocal total, peak
            for block in blocks:
                block = np.asarray(block, dtype=np.float32)
                if block.ndim != 1:
                    raise ValueError(f"blocks must be mono (frames,), got shape {block.shape}")
                if not block.size:
                    continue
                block_peak = float(np.abs(block).max())  # NaN or Inf if any sample is
                if not math.isfinite(block_peak):
                    first = total + int(np.argmin(np.isfinite(block)))
                    raise SepvaeError(f"contains NaN or Inf samples (first at {first / sample_rate:.3f} s, sample {first})")
                peak = max(peak, block_peak)
                total += block.size
                yield block

        resampling = sample_rate != self.sample_rate
        model_blocks: Iterable[np.ndarray] = checked()
        if resampling:
            model_blocks = _resampled(model_blocks, sample_rate, self.sample_rate, 1)
        estimates = self._separate_chunks(model_blocks, gain)
        if resampling:
            estimates = _resampled(estimates, self.sample_rate, sample_rate, len(self.models))
        emitted = 0
        for block in estimates:
            # The resamplers round lengths: never give more samples than came in ...
            block = block[:, : max(0, total - emitted)]
            if block.shape[1]:
                emitted += block.shape[1]
                yield block
        if total == 0:
            raise SepvaeError("has zero samples")
        if emitted < total:  # ... nor fewer.
            yield np.zeros((len(self.models), total - emitted), dtype=np.float32)
        if peak == 0.0:
            warnings.warn("input is silent (all samples are zero): the estimates are silent too", SeparationWarning, stacklevel=2)

    def _separate_chunks(self, blocks: Iterable[np.ndarray], gain: float) -> Iterator[np.ndarray]:
        """Chunked separation at the model's rate (see the module docstring).

        Shape: mono blocks (frames,) in -> (sources, frames) blocks out, same total length.
        """
        hop = self.hop_length
        margin = (math.ceil(self.n_fft / hop) + self.smooth_frames) * hop
        chunk = max(1, round(self.chunk_seconds * self.sample_rate / hop)) * hop
        pending: list[np.ndarray] = []
        pending_frames = 0
        start = 0  # recording index of the first pending sample (a multiple of hop)
        core = 0  # recording index of the next sample to yield (a multiple of chunk)
        for block in blocks:
            pending.append(block)
            pending_frames += block.size
            if start + pending_frames < core + chunk + margin:
                continue
            buffer = np.concatenate(pending)
            while start + buffer.size >= core + chunk + margin:
                segment_start = max(0, core - margin)
                segment = buffer[segment_start - start : core + chunk + margin - start]
                yield self._separate_segment(segment, gain)[:, core - segment_start : core - segment_start + chunk]
                core += chunk
                drop = max(0, core - margin - start)
                buffer, start = buffer[drop:], start + drop
            pending, pending_frames = [buffer], buffer.size
        if pending_frames and start + pending_frames > core:
            buffer = np.concatenate(pending)
            segment_start = max(0, core - margin)
            yield self._separate_segment(buffer[segment_start - start :], gain)[:, core - segment_start :]

    def _separate_segment(self, segment: np.ndarray, gain: float) -> np.ndarray:
        waveforms, _ = self.separate_tensor(torch.from_numpy(np.ascontiguousarray(segment)), gain)
        return waveforms.cpu().numpy()


def _positive_integer_rate(sample_rate) -> int:
    """``sample_rate`` as an int; ValueError unless it is a positive whole number (16000.0 is)."""
    try:
        rate = float(sample_rate)
    except (TypeError, ValueError):
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}") from None
    if not rate.is_integer() or rate < 1:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    return int(rate)


def _warn_if_loud(waveform: np.ndarray) -> None:
    """A SeparationWarning for float audio far outside [-1, 1], e.g. 16-bit values as floats."""
    # max and -min rather than abs: no temporary as large as the recording
    peak = max(float(waveform.max()), -float(waveform.min())) if waveform.size else 0.0
    if math.isfinite(peak) and peak > LOUD_PEAK:  # NaN and Inf: separate_blocks names them
        warnings.warn(
            f"float input has peak {peak:.6g}, far outside [-1, 1]: the estimates scale with it "
            f"(divide by 32768 if these are 16-bit sample values)", SeparationWarning, stacklevel=3,
        )


def _resampled(blocks: Iterable[np.ndarray], rate_in: int, rate_out: int, channels: int) -> Iterator[np.ndarray]:
    """Stream (frames,) or (channels, frames) blocks through soxr; the same layout comes out.

    soxr's stream gives the same samples as its one-shot ``soxr.resample`` of the whole
    signal, whatever the block sizes.
    """
    import soxr

    stream = soxr.ResampleStream(rate_in, rate_out, channels, dtype="float32", quality="HQ")
    for block in blocks:
        out = stream.resample_chunk(np.ascontiguousarray(block.T), last=False)
        if out.shape[0]:
            yield out.T
    shape = (0,) if channels == 1 else (0, channels)
    out = stream.resample_chunk(np.zeros(shape, dtype=np.float32), last=True)
    if out.shape[0]:
        yield out.T
