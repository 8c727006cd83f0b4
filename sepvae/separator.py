"""The Separator: STFT -> normalized frames -> one model per source -> mask -> iSTFT.

A ``Separator`` holds ``{source: model}`` plus what every checkpoint of a run shares (STFT
settings, sample rate, normalization). The reconstruction is the paper's eq. 90: the
Wiener-style mask S_k / sum_j S_j on the mixture magnitude with the mixture phase.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from sepvae.config import StftConfig, from_dict
from sepvae.errors import SepvaeError
from sepvae.filtering import apply_masks, ratio_mask
from sepvae.stft import istft, stft

def separate_with_masks(
    mixture: Tensor,
    mask_fn: Callable[[Tensor], Tensor],
    stft_config: StftConfig,
    sample_rate: int,
) -> tuple[Tensor, Tensor]:
    """STFT -> masks -> masked mixture (eq. 90) -> iSTFT, exactly as long as the mixture.

    ``mask_fn`` maps the mixture's complex spectrogram (bins, frames) to per-source masks
    (sources, bins, frames): a model's ratio mask, an NMF's, or an oracle's.

    Shape:
        mixture: (time,) -> waveforms (sources, time), masks (sources, bins, frames)
    """
    if mixture.ndim != 1:
        raise ValueError(f"mixture must be (time,), got {tuple(mixture.shape)}")
    n_fft, hop = stft_config.n_fft(sample_rate), stft_config.hop_length(sample_rate)
    spec = stft(mixture, n_fft, hop)
    masks = mask_fn(spec)
    return istft(apply_masks(spec, masks), n_fft, hop, mixture.shape[-1]), masks


class Separator:
    """Separates a mixture into one waveform per source with ``{source: model}``.

    Args:
        models: source name -> model with ``estimate(frames (n, bins)) -> (n, bins)``.
        scale: per-bin normalization (bins,), shared by all the models.
        stft_config, sample_rate: the analysis the models were trained with.
    """

    def __init__(
        self,
        models: dict[str, torch.nn.Module],
        scale: Tensor,
        stft_config: StftConfig,
        sample_rate: int,
        mask_power: float = 1.0,
        eps: float = 1e-8,
    ):
        if len(models) < 2:
            raise SepvaeError(f"a Separator needs at least two source models, got {list(models)}")
        self.models = models
        self.scale = scale
        self.stft_config = stft_config
        self.sample_rate = sample_rate
        self.mask_power = mask_power
        self.eps = eps
        self.device = scale.device

    @property
    def sources(self) -> list[str]:
        return list(self.models)

    @classmethod
    def from_checkpoints(cls, paths: dict[str, str | Path], device: str = "auto", mask_power: float = 1.0) -> "Separator":
        """Load one checkpoint per source; they must share STFT, sample rate and normalization."""
        from sepvae.checkpoint import load_checkpoint
        from sepvae.device import pick_device

        torch_device = pick_device(device)
        models, reference = {}, None
        for name, path in paths.items():
            model, scale, config = load_checkpoint(path, torch_device)
            shared = (config["stft"], config["sample_rate"], scale.cpu())
            if reference is None:
                reference = shared
            elif shared[:2] != reference[:2] or not torch.equal(shared[2], reference[2]):
                raise SepvaeError(f"{path}: STFT, sample rate or normalization differ from the other source models")
            models[name] = model
        stft_config = from_dict(StftConfig, reference[0])
        return cls(models, reference[2].to(torch_device), stft_config, int(reference[1]), mask_power)

    @classmethod
    def from_run(cls, run: str | Path, sources: list[str] | None = None, device: str = "auto", mask_power: float = 1.0) -> "Separator":
        """Load a training run's models (all of them, or those named in ``sources``)."""
        run = Path(run)
        available = sorted(p.stem for p in run.glob("*.pt") if not p.stem.startswith("state-"))
        names = sources or available
        missing = [n for n in names if n not in available]
        if missing:
            raise SepvaeError(f"{run}: no model for source(s) {', '.join(missing)} (has {', '.join(available) or 'none'})")
        return cls.from_checkpoints({n: run / f"{n}.pt" for n in names}, device, mask_power)

    def estimate_magnitudes(self, magnitude: Tensor) -> Tensor:
        """Per-source magnitude estimates of a mixture magnitude spectrogram.

        Shape:
            magnitude: (bins, frames) -> (sources, bins, frames)
        """
        if magnitude.ndim != 2 or magnitude.shape[0] != self.scale.numel():
            raise ValueError(f"magnitude must be ({self.scale.numel()}, frames), got {tuple(magnitude.shape)}")
        frames = magnitude.transpose(0, 1) / self.scale
        with torch.no_grad():
            estimates = [self.models[name].estimate(frames) * self.scale for name in self.sources]
        return torch.stack(estimates).transpose(1, 2)

    def mask(self, spec: Tensor) -> Tensor:
        """The ratio masks of the models' magnitude estimates (the paper's eq. 90).

        Shape:
            spec: (bins, frames) complex -> (sources, bins, frames)
        """
        return ratio_mask(self.estimate_magnitudes(spec.abs()), power=self.mask_power, eps=self.eps)

    def separate_tensor(self, mixture: Tensor) -> tuple[Tensor, Tensor]:
        """Separate a mono mixture at the model's sample rate.

        Shape:
            mixture: (time,) -> waveforms (sources, time), masks (sources, bins, frames)
        """
        with torch.no_grad():
            return separate_with_masks(
                mixture.to(self.device, torch.float32), self.mask, self.stft_config, self.sample_rate
            )

    def separate(self, waveform: np.ndarray, sample_rate: int) -> dict[str, np.ndarray]:
        """Separate a mono waveform (time,) at the model's sample rate; source -> (time,)."""
        waveform = np.asarray(waveform, dtype=np.float32)
        if waveform.ndim != 1:
            raise ValueError(f"waveform must be mono (time,), got shape {waveform.shape}")
        if sample_rate != self.sample_rate:
            raise SepvaeError(f"sample rate {sample_rate} Hz: this model expects {self.sample_rate} Hz")
        waveforms, _ = self.separate_tensor(torch.from_numpy(waveform))
        return {name: w.cpu().numpy() for name, w in zip(self.sources, waveforms)}
