"""The method registry: every column of a report is one entry of :data:`METHODS`.

After nussl's separators, the learned models and the reference methods (the mixture as its
own estimate, oracle masks, supervised NMF) share one interface. An entry says

- whether and how the method trains (``train``: fills a run folder from the training
  mixtures' frames; or ``plan``: networks to train in the stage's stacked ensembles) and
  what its trained run depends on (``run_fields``),
- how it separates a test mixture (``separator``: an object with ``masks`` and
  ``separate``),
- whether it has a per-source network configured by ``[model]`` (``has_model``) and the
  model settings its name implies (``model_defaults``: beta-vae has beta = 4),
- how its source models turn a mixture's magnitudes into the sources' (``estimator``, for
  the :class:`~sepvae.separator.Separator`): each network maps the mixture frame directly
  (None), or, for the fitting methods (``fits``, configured by ``[fit]``), decoders of clean
  speech get codes fitted to the mixture (:mod:`sepvae.fitting`).

The pipeline stages loop over an experiment's methods and call their entries; no other
module branches on a method's kind. A new method is its model (or algorithm) plus one entry.

This module imports neither torch nor numpy: the CLI reads experiment files with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from sepvae.config import Method, SourceMode, key_dict, to_dict
from sepvae.errors import SepvaeError

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor

    from sepvae.mixing import Mixture
    from sepvae.train import TrainingData

# The layer sizes every frame model has; each kind adds the fields its loss reads.
_LAYERS = ("hidden", "latent", "decoder_hidden")


class MixtureSeparator:
    """How one method turns a test mixture into estimates (nussl's ``Separator`` role).

    ``masks`` gives per-source masks of the mixture's spectrogram; ``separate`` applies
    them (eq. 90: masked mixture magnitude with the mixture phase, or phases reconstructed
    with the method's ``phase_iterations``, then iSTFT; the mean of the method's ``shifts``
    passes on shifted frames).
    """

    def __init__(self, method: Method, run: Path | None, sample_rate: int):
        self.method = method
        self.run = run
        self.sample_rate = sample_rate

    def masks(self, mixture: Mixture, spec: Tensor) -> Tensor:
        """Shape: spec (bins, frames) complex -> masks (sources, bins, frames), in the
        order of ``mixture.source_paths``."""
        raise NotImplementedError

    def separate(self, mixture: Mixture, waveform: Tensor) -> dict[str, np.ndarray]:
        """Estimates of ``mixture`` (its waveform at the sample rate), source -> (time,)."""
        import torch

        from sepvae.separator import separate_with_masks

        with torch.no_grad():
            separated, _ = separate_with_masks(
                waveform, lambda spec: self.masks(mixture, spec), self.method.stft, self.sample_rate,
                self.method.phase_iterations, self.method.shifts,
            )
        return {name: estimate.numpy() for name, estimate in zip(mixture.source_paths, separated)}


class MixtureAsEstimate(MixtureSeparator):
    """The unprocessed mixture as every source's estimate: the scores before separation."""

    def separate(self, mixture: Mixture, waveform: Tensor) -> dict[str, np.ndarray]:
        return {name: waveform.numpy() for name in mixture.source_paths}


class OracleMask(MixtureSeparator):
    """Masks from the true sources: the ceiling of mask-based separation."""

    binary = False

    def masks(self, mixture: Mixture, spec: Tensor) -> Tensor:
        import torch

        from sepvae.features import load_mono, spectrogram
        from sepvae.filtering import ideal_binary_mask, ideal_ratio_mask

        sources = torch.stack([load_mono(path, self.sample_rate) for path in mixture.source_paths.values()])
        specs = spectrogram(sources, self.method.stft, self.sample_rate)
        if self.binary:
            return ideal_binary_mask(specs)
        return ideal_ratio_mask(specs, power=self.method.mask_power)


class OracleBinaryMask(OracleMask):
    binary = True


class NmfMask(MixtureSeparator):
    """Supervised NMF: per-source dictionaries from training, activations fitted on the mixture."""

    def __init__(self, method: Method, run: Path | None, sample_rate: int):
        import torch

        from sepvae.checkpoint import verified_load

        super().__init__(method, run, sample_rate)
        self.dictionaries = verified_load(run, "nmf.pt", lambda path: torch.load(path, weights_only=True))

    def masks(self, mixture: Mixture, spec: Tensor) -> Tensor:
        import torch

        from sepvae.filtering import ratio_mask
        from sepvae.nmf import nmf_estimates

        names = list(mixture.source_paths)
        estimates = nmf_estimates(spec.abs(), {n: self.dictionaries[n] for n in names}, n_iter=100)
        return ratio_mask(torch.stack([estimates[n] for n in names]), power=self.method.mask_power)


class ModelMask(MixtureSeparator):
    """The trained per-source models' ratio mask (eq. 90), one model per gender class or,
    in speaker mode, the models of the mixture's two speakers."""

    def __init__(self, method: Method, run: Path | None, sample_rate: int):
        super().__init__(method, run, sample_rate)
        self._separators: dict[tuple[str, ...], Any] = {}

    def _models_of(self, mixture: Mixture) -> dict[str, str]:
        """source -> the model (checkpoint stem) of the run that estimates it."""
        if self.method.source_mode is SourceMode.SPEAKER:
            return {name: mixture.speakers[name] for name in mixture.source_paths}
        return {name: name for name in mixture.source_paths}

    def masks(self, mixture: Mixture, spec: Tensor) -> Tensor:
        separator = self._separator(mixture)
        gain = 1.0
        if separator.input_rms is not None:  # level matching: the mixture's own level
            from sepvae.features import load_mono

            waveform = load_mono(mixture.mixture_path, self.sample_rate).numpy()
            gain = separator.level_gain(separator.active_rms(waveform, self.sample_rate))
        return separator.mask(spec, gain)

    def _separator(self, mixture: Mixture):
        from sepvae.separator import Separator

        models = self._models_of(mixture)
        key = tuple(models.values())
        if key not in self._separators:
            missing = [m for m in key if not (self.run / f"{m}.pt").is_file()]
            if missing:
                raise SepvaeError(
                    f"mixture {mixture.id}: no model {', '.join(missing)} in {self.run}; speaker mode "
                    f"needs test speakers seen in training (mix split = 'utterance')"
                )
            self._separators[key] = Separator.from_run(
                self.run, models=models, device="cpu", mask_power=self.method.mask_power,
                match_level=self.method.match_level, smooth_frames=self.method.smooth_frames,
            )
        return self._separators[key]


def _plan_models(method: Method, data: TrainingData, out: Path, sample_rate: int):
    from sepvae.train import plan_models

    return plan_models(method, data, out, sample_rate)


def _plan_clean_models(method: Method, data: TrainingData, out: Path, sample_rate: int):
    from sepvae.train import plan_clean_models

    return plan_clean_models(method, data, out, sample_rate)


def _latent_fit(card) -> Callable:
    from sepvae.config import FitConfig
    from sepvae.fitting import LatentFit

    return LatentFit(card.fit or FitConfig())


def _train_nmf(method: Method, data: TrainingData, out: Path, sample_rate: int, device: str, on_epoch) -> None:
    from sepvae.train import train_nmf

    train_nmf(method, data, out, sample_rate)


@dataclass(frozen=True)
class MethodEntry:
    """One method of the registry (see the module docstring)."""

    kind: str
    description: str
    separator: Callable[[Method, Path | None, int], MixtureSeparator]
    # (method, sepvae.train.TrainingData, run folder, sample rate, device, on_epoch): fill the
    # run folder from the training frames (never from the manifest's files: see sepvae.jobs).
    train: Callable[..., None] | None = None
    # Or (method, TrainingData, run folder, sample rate) -> a train.RunPlan, made on the driver:
    # networks the training stage stacks with the other runs' into few batched ensembles.
    plan: Callable[..., Any] | None = None
    # The settings a trained run depends on (beside the training data and sample rate).
    run_fields: Callable[[Method], dict[str, Any]] | None = None
    has_model: bool = False
    model_defaults: Mapping[str, Any] = field(default_factory=dict)
    uses_stft: bool = True  # False: the estimates do not depend on the STFT (the mixture)
    # A model folder's card -> (models, mixture magnitude) -> source magnitudes; None: direct.
    estimator: Callable[[Any], Callable] | None = None

    @property
    def fits(self) -> bool:
        return self.estimator is not None

    @property
    def trains(self) -> bool:
        return self.train is not None or self.plan is not None


def _model_fields(*loss_fields: str) -> Callable[[Method], dict[str, Any]]:
    """What a model run depends on: its kind, source mode, STFT, the model fields its
    loss reads (so changing an ITL-AE setting does not retrain the VAEs) and training."""

    def fields(method: Method) -> dict[str, Any]:
        model = to_dict(method.model)
        return {
            "kind": method.kind, "source_mode": str(method.source_mode), "stft": to_dict(method.stft),
            "model": {name: model[name] for name in (*_LAYERS, *loss_fields)}, "train": key_dict(method.train),
        }

    return fields


def _fit_fields(*loss_fields: str) -> Callable[[Method], dict[str, Any]]:
    """A fitting method's run also depends on its fitting settings, which its card records
    so that ``sepvae separate --model`` fits as the experiment did."""
    from sepvae.config import FitConfig

    model_fields = _model_fields(*loss_fields)
    return lambda method: {**model_fields(method), "fit": to_dict(method.fit or FitConfig())}


def _nmf_fields(method: Method) -> dict[str, Any]:
    return {"kind": method.kind, "stft": to_dict(method.stft), "components": method.nmf_components,
            "seed": method.train.seed}


def _model_entry(kind: str, description: str, loss_fields: tuple[str, ...], **defaults: Any) -> MethodEntry:
    return MethodEntry(
        kind, description, ModelMask, plan=_plan_models, run_fields=_model_fields(*loss_fields),
        has_model=True, model_defaults=defaults,
    )


_VAE_FIELDS = ("beta", "eps_std")
_ITL_FIELDS = ("divergence", "prior", "kernel_sigma", "itl_lambda")


def _fit_entry(kind: str, description: str, **defaults: Any) -> MethodEntry:
    return MethodEntry(
        kind, description, ModelMask, plan=_plan_clean_models, run_fields=_fit_fields(*_VAE_FIELDS),
        has_model=True, model_defaults=defaults, estimator=_latent_fit,
    )


METHODS: dict[str, MethodEntry] = {
    entry.kind: entry
    for entry in (
        _model_entry("vae", "VAE per source (beta = 1)", _VAE_FIELDS),
        _model_entry("beta-vae", "beta-VAE per source (beta = 4 unless set)", _VAE_FIELDS, beta=4.0),
        _model_entry("itl-ae", "ITL autoencoder per source (Cauchy-Schwarz or Euclidean divergence)", _ITL_FIELDS),
        _model_entry("ae", "plain autoencoder per source (no regularizer)", ()),
        _fit_entry("vae-fit", "VAE per source on clean speech; codes fitted to the mixture"),
        _fit_entry("beta-vae-fit", "beta-VAE (beta = 4 unless set) on clean speech; codes fitted", beta=4.0),
        MethodEntry("nmf", "supervised KL-NMF, one dictionary per source", NmfMask, train=_train_nmf,
                    run_fields=_nmf_fields),
        MethodEntry("oracle-irm", "ideal ratio mask from the true sources (ceiling)", OracleMask),
        MethodEntry("oracle-ibm", "ideal binary mask from the true sources", OracleBinaryMask),
        MethodEntry("mixture", "the unprocessed mixture as each estimate", MixtureAsEstimate, uses_stft=False),
    )
}


def entry(kind: str) -> MethodEntry:
    """The registry entry of ``kind``; a one-line SepvaeError listing the known kinds."""
    try:
        return METHODS[kind]
    except (KeyError, TypeError):
        models = ", ".join(k for k, e in METHODS.items() if e.has_model)
        references = ", ".join(k for k, e in METHODS.items() if not e.has_model)
        raise SepvaeError(
            f"unknown method kind {kind!r}; choose a model ({models}) or a reference ({references})"
        ) from None


def model_kinds() -> tuple[str, ...]:
    """The kinds with a per-source network (what ``sepvae.models.MODELS`` builds)."""
    return tuple(kind for kind, e in METHODS.items() if e.has_model)
