"""Frozen, JSON-round-trippable configuration for every stage, and experiment files.

A run directory is named by :func:`config_hash` of the resolved config it holds, so a
stage whose inputs and config did not change finds its output and does nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from sepvae.errors import SepvaeError
from sepvae.validation import field_types, reject_unknown, require, shown, typed, within

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

SAMPLE_RATE = 16_000
PRIORS = ("gaussian", "laplacian")  # itl-ae priors (sepvae.models)
DIVERGENCES = ("cs", "euclidean")  # itl-ae divergences (sepvae.models)

# The paper's Figure 21 settings: (window ms, overlap ms).
STFT_SETTINGS: dict[str, tuple[float, float]] = {
    "A": (64, 16),
    "B": (64, 32),
    "C": (32, 8),
    "D": (32, 16),
    "E": (16, 8),
    "F": (16, 4),
    "G": (8, 4),
    "H": (8, 2),
}


def key_when_set(default: Any):
    """A field added after runs were cached under keys without it: it enters a run's key
    (:func:`key_dict`) only when set to another value than ``default``, so adding it keeps
    every existing run's key and cache."""
    return field(default=default, metadata={"key_when_set": True})


def key_dict(config) -> dict[str, Any]:
    """``to_dict(config)`` without the :func:`key_when_set` fields left at their defaults."""
    data = to_dict(config)
    for item in dataclasses.fields(config):
        if item.metadata.get("key_when_set") and getattr(config, item.name) == item.default:
            del data[item.name]
    return data


@dataclass(frozen=True)
class StftConfig:
    """STFT in milliseconds. ``reading`` says what the second number means.

    ``"overlap"`` (default, as scipy's ``noverlap``): hop = window - overlap.
    ``"hop"``: the second number is the hop itself (the other reading of the paper).
    """

    window_ms: float = 16.0
    overlap_ms: float = 8.0
    reading: str = "overlap"

    def __post_init__(self):
        require(self.reading in ("overlap", "hop"), "reading", self.reading, "'overlap' or 'hop'")
        require(self.window_ms > 0, "window_ms", self.window_ms, "> 0 (ms)")
        require(self.overlap_ms >= 0, "overlap_ms", self.overlap_ms, ">= 0 (ms)")
        if self.reading == "overlap":
            require(self.overlap_ms < self.window_ms, "overlap_ms", self.overlap_ms,
                     f"shorter than the window ({self.window_ms:g} ms)")

    @property
    def hop_ms(self) -> float:
        return self.window_ms - self.overlap_ms if self.reading == "overlap" else self.overlap_ms

    def n_fft(self, sample_rate: int) -> int:
        return int(round(self.window_ms * sample_rate / 1000))

    def hop_length(self, sample_rate: int) -> int:
        return max(1, int(round(self.hop_ms * sample_rate / 1000)))

    def n_bins(self, sample_rate: int) -> int:
        return self.n_fft(sample_rate) // 2 + 1

    @classmethod
    def setting(cls, letter: str, reading: str = "overlap") -> "StftConfig":
        """One of the paper's settings A-H."""
        try:
            window, overlap = STFT_SETTINGS[letter.upper()]
        except KeyError:
            raise SepvaeError(
                f"unknown STFT setting {letter!r}; choose one of {', '.join(STFT_SETTINGS)}"
            ) from None
        return cls(float(window), float(overlap), reading)


@dataclass(frozen=True)
class MixConfig:
    """The mixing protocol (README: "Mixing protocol")."""

    n_mixtures: int = 90
    n_test: int = 10
    seed: int = 0
    # "utterance": test utterances unseen; "speaker": test speakers unseen; "fold": speaker
    # cross-validation, fold k tests the k-th male and female speakers of each group of
    # ``folds`` (by dialect region, then id) and trains on all the others.
    split: str = "utterance"
    folds: int = 8  # split = "fold": how many folds an experiment runs
    fold: int = 0  # split = "fold": which fold this mixing config makes (set per fold)
    # Nested validation, for choosing a recipe without its test folds: the speakers of
    # ``outer_fold`` are left out of every mixture (they stay the outer test), so the folds
    # run here validate on the other speakers and train on the rest.
    outer_fold: int | None = key_when_set(None)
    fold_ids: tuple[int, ...] = key_when_set(())  # split = "fold": the folds an experiment runs (default: all)
    same_region: bool = False  # pair only speakers of the same dialect region
    snr_db: tuple[float, float] = (0.0, 0.0)  # male-to-female SNR drawn uniformly from [lo, hi]
    length: str = "shortest"  # "shortest": trim to the shorter; "longest": zero-pad the shorter
    peak: float = 0.9  # a common gain brings the mixture's peak to at most this
    sample_rate: int = SAMPLE_RATE
    # "distinct": n_test mixtures, each test utterance once (the paper's 10 mixtures).
    # "all": every compatible pair of those same test utterances (about n_test^2 mixtures),
    # with the same training mixtures: a larger test set for deciding close comparisons.
    test_pairs: str = "distinct"

    def __post_init__(self):
        require(self.split in ("utterance", "speaker", "fold"), "split", self.split, "'utterance', 'speaker' or 'fold'")
        require(self.folds >= 2, "folds", self.folds, ">= 2")
        require(0 <= self.fold < self.folds, "fold", self.fold, f"in [0, folds = {self.folds})")
        if self.outer_fold is not None or self.fold_ids:
            require(self.split == "fold", "split", self.split, "'fold' (outer_fold and fold_ids pick folds)")
        require(self.outer_fold is None or 0 <= self.outer_fold < self.folds, "outer_fold", self.outer_fold,
                f"in [0, folds = {self.folds})")
        require(all(0 <= k < self.folds and k != self.outer_fold for k in self.fold_ids), "fold_ids",
                self.fold_ids, f"folds in [0, {self.folds}) other than outer_fold")
        require(self.test_pairs in ("distinct", "all"), "test_pairs", self.test_pairs, "'distinct' or 'all'")
        require(self.length in ("shortest", "longest"), "length", self.length, "'shortest' or 'longest'")
        require(self.n_test >= 1, "n_test", self.n_test, ">= 1")
        require(self.n_mixtures > self.n_test, "n_mixtures", self.n_mixtures, f"more than n_test ({self.n_test})")
        require(self.snr_db[0] <= self.snr_db[1], "snr_db", self.snr_db, "[lo, hi] with lo <= hi")
        require(0 < self.peak <= 1, "peak", self.peak, "in (0, 1]")
        require(self.sample_rate >= 1, "sample_rate", self.sample_rate, ">= 1 (Hz)")


@dataclass(frozen=True)
class ModelConfig:
    """A fully connected model mapping a normalized mixture frame to one source's frame.

    encoder = [M, *hidden, latent], decoder = [latent, *decoder_hidden, M]; the paper's
    default is hidden (256, 256), latent 128, decoder_hidden (256, 256).
    """

    name: str = "vae"  # a model method of the registry (sepvae.methods), a key of sepvae.models.MODELS
    hidden: tuple[int, ...] = (256, 256)
    latent: int = 128
    decoder_hidden: tuple[int, ...] = (256, 256)
    beta: float = 1.0  # KL weight (vae / beta-vae)
    eps_std: float = 0.01  # std of the reparameterization noise (the paper's finding)
    divergence: str = "cs"  # itl-ae: "cs" (eq. 83) or "euclidean" (eq. 85)
    prior: str = "gaussian"  # itl-ae: "gaussian" or "laplacian"
    # itl-ae: Gaussian kernel bandwidth sigma; None = sqrt(latent). Squared distances between
    # prior samples grow like 2 * latent, so a fixed sigma = 1 gives kernel values that
    # underflow in 128 dims and a divergence that rewards collapsed codes.
    kernel_sigma: float | None = None
    itl_lambda: float = 1.0  # itl-ae: regularizer weight

    def __post_init__(self):
        for name in ("hidden", "decoder_hidden"):
            sizes = getattr(self, name)
            if not isinstance(sizes, tuple) or not all(type(n) is int and n > 0 for n in sizes):
                raise SepvaeError(f"model {name} must be a list of positive layer sizes, got {sizes!r}")
        require(type(self.latent) is int and self.latent >= 1, "latent", self.latent, "a positive integer")
        require(self.beta >= 0, "beta", self.beta, ">= 0")
        require(self.eps_std >= 0, "eps_std", self.eps_std, ">= 0")
        require(self.kernel_sigma is None or self.kernel_sigma > 0, "kernel_sigma", self.kernel_sigma, "> 0")
        require(self.itl_lambda >= 0, "itl_lambda", self.itl_lambda, ">= 0")
        require(self.divergence in DIVERGENCES, "divergence", self.divergence, " or ".join(map(repr, DIVERGENCES)))
        require(self.prior in PRIORS, "prior", self.prior, " or ".join(map(repr, PRIORS)))


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 70
    epochs: int = 30
    lr: float = 1e-3
    patience: int = 6  # early stopping: epochs without validation improvement
    val_fraction: float = 0.1  # part of the training mixtures held out for early stopping
    seed: int = 0
    # The recipe around the models (sepvae.features): the paper's is the default.
    normalization: str = "bin"  # "bin": one scale per frequency bin; "global": one for all bins
    inputs: str = "linear"  # "log1p": compressed network inputs, standardized per bin
    remix: int = 0  # rounds of extra training mixtures re-paired from the training sources
    remix_gain_db: float = 0.0  # their relative level, uniform in +-this many dB
    # Speaker augmentation of the remixed sources (sepvae.features.perturb): new voices from
    # the few training speakers. Speed: resampled by 1 +- up to this (pitch, formants and
    # tempo move together); warp: frequency axis scaled by 1 +- up to this (vocal tract
    # length: formants move, pitch and tempo do not); tilt: a spectral slope of +- up to this
    # many dB from 0 Hz to Nyquist.
    remix_speed: float = key_when_set(0.0)
    remix_warp: float = key_when_set(0.0)
    remix_tilt_db: float = key_when_set(0.0)
    # A common gain of each remixed mixture, uniform in +-this many dB: recordings come at
    # any level, and the networks' inputs are not level-invariant.
    remix_level_db: float = key_when_set(0.0)
    # "bf16": the forward pass under bf16 autocast (weights, gradients and Adam stay float32):
    # faster only where the device computes bf16 natively (GPUs, CPUs with AVX512-BF16/AMX),
    # and it changes the trained weights, so it is part of a run's key.
    precision: str = key_when_set("fp32")

    def __post_init__(self):
        for name in ("batch_size", "epochs", "patience"):
            require(getattr(self, name) >= 1, name, getattr(self, name),
                     ">= 1 (batch_size, epochs and patience must be >= 1)")
        require(self.lr > 0, "lr", self.lr, "> 0")
        require(0 <= self.val_fraction < 1, "val_fraction", self.val_fraction, "in [0, 1)")
        require(self.normalization in ("bin", "global"), "normalization", self.normalization, "'bin' or 'global'")
        require(self.inputs in ("linear", "log1p"), "inputs", self.inputs, "'linear' or 'log1p'")
        require(self.precision in ("fp32", "bf16"), "precision", self.precision, "'fp32' or 'bf16'")
        require(self.remix >= 0, "remix", self.remix, ">= 0")
        require(self.remix_gain_db >= 0, "remix_gain_db", self.remix_gain_db, ">= 0")
        for name in ("remix_speed", "remix_warp"):
            require(0 <= getattr(self, name) < 0.5, name, getattr(self, name), "in [0, 0.5)")
        for name in ("remix_tilt_db", "remix_level_db"):
            require(getattr(self, name) >= 0, name, getattr(self, name), ">= 0")
        if (self.remix_speed or self.remix_warp or self.remix_tilt_db or self.remix_level_db) and not self.remix:
            raise SepvaeError("train remix_speed, remix_warp, remix_tilt_db and remix_level_db perturb the remixed "
                              "mixtures; they need remix >= 1")


FIT_DIVERGENCES = ("euclidean", "kl", "is")
FIT_INITS = ("encoder", "zeros")


@dataclass(frozen=True)
class FitConfig:
    """How a fitting method (vae-fit) separates: latent codes fitted to each mixture frame
    so that the decoded sources add up to it (:mod:`sepvae.fitting`)."""

    # Defaults chosen on four *training* mixtures of reproduce.toml's protocol, never the test
    # set: median SDR 4.6 dB; changing one setting: prior weight 1: 4.1, 30: 3.8, 100: 2.2;
    # euclidean 4.1, is 4.3; zeros init 3.6. N(0, I) restarts never beat the encoder start.
    divergence: str = "kl"  # of the mixture from the sum of the decoded sources: euclidean | kl | is
    prior_weight: float = 10.0  # weight of the N(0, I) prior term 0.5 * ||z||^2
    steps: int = 100  # Adam steps
    lr: float = 0.02  # the trained VAEs' codes spread ~0.1 per dimension: steps must be small
    init: str = "encoder"  # "encoder": each source's encoder applied to the mixture frame; "zeros"
    restarts: int = 1  # starting points: `init`, then draws from N(0, I); per frame the lowest fit loss wins
    seed: int = 0  # of the restarts' draws

    def __post_init__(self):
        if self.divergence not in FIT_DIVERGENCES or self.init not in FIT_INITS:
            raise SepvaeError(
                f"fit divergence must be one of {', '.join(FIT_DIVERGENCES)} and init one of "
                f"{', '.join(FIT_INITS)}, got {self.divergence!r}, {self.init!r}"
            )
        if self.prior_weight < 0 or self.steps < 0 or self.restarts < 1 or not self.lr > 0:
            raise SepvaeError(
                f"fit needs prior_weight >= 0, steps >= 0, restarts >= 1 and lr > 0, got "
                f"{self.prior_weight}, {self.steps}, {self.restarts}, {self.lr}"
            )


class SourceMode(str, Enum):
    """What one source model stands for: a gender class, or one individual speaker."""

    GENDER = "gender"  # one model per gender class (male, female)
    SPEAKER = "speaker"  # one model per training speaker

    def __str__(self) -> str:  # the value in f-strings and folder names, on every Python
        return self.value

    __format__ = str.__format__


# The inference settings a method carries and a model card recommends (``info``), each with
# the paper's value, which is also the least one allowed: rounds of MISI phase reconstruction,
# passes on shifted frame grids, frames of smoothing on each side (sepvae.separator).
INFERENCE_DEFAULTS = {"phase_iterations": 0, "shifts": 1, "smooth_frames": 0}


@dataclass(frozen=True)
class Method:
    """One column of a report: a model type or a reference method, with its settings."""

    label: str
    kind: str  # a key of the method registry, sepvae.methods.METHODS
    source_mode: SourceMode = SourceMode.GENDER
    stft: StftConfig = field(default_factory=StftConfig)
    model: ModelConfig | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    mask_power: float = 1.0
    # Inference: bring each mixture to the training mixtures' active level before the
    # networks see it (sepvae.loudness); the masks then apply to the mixture as it is.
    match_level: bool = False
    nmf_components: int = 32
    fit: FitConfig | None = None  # the fitting settings of a fitting method (vae-fit)
    # Inference: rounds of MISI phase reconstruction after the mask (sepvae.separator); 0
    # keeps the mixture's phase (eq. 90).
    phase_iterations: int = 0
    # Inference: the mean of this many networks' magnitude estimates per source, trained
    # alike but for their seeds (train.seed, train.seed + 1, ...). Each member is the run of
    # the same method with that seed, shared with any method that trains it alone.
    members: int = 1
    # Inference: the mean of this many passes whose STFT frames are shifted by fractions of
    # a hop (sepvae.separator.separate_with_masks); 1 is the paper's single pass.
    shifts: int = 1
    # Inference: the sources' magnitude estimates averaged over this many frames on each side
    # (triangular weights) before the mask (sepvae.filtering.smooth_over_frames); 0 is the
    # paper's frame-by-frame estimate.
    smooth_frames: int = 0

    def __post_init__(self):
        from sepvae.methods import entry

        entry(self.kind)  # an unknown kind is a one-line error listing the known ones
        try:
            object.__setattr__(self, "source_mode", SourceMode(self.source_mode))
        except ValueError:
            raise SepvaeError(f"unknown source mode {self.source_mode!r}; use gender or speaker") from None
        if self.train.remix and self.source_mode is SourceMode.SPEAKER:
            raise SepvaeError(f"method {self.label!r}: train remix re-pairs gender classes; it needs source_mode = 'gender'")
        if self.match_level and not self.entry.has_model:
            raise SepvaeError(f"method {self.label!r}: match_level is for trained models, not {self.kind}")
        for name, least in INFERENCE_DEFAULTS.items():
            value = getattr(self, name)
            if value < least:
                raise SepvaeError(f"method {self.label!r}: {name} must be >= {least}, got {value}")
            # Passes on shifted frames and smoothing work on a model's mask of the mixture
            # alone; phase reconstruction also follows an oracle's.
            if name != "phase_iterations" and value != least and not self.entry.has_model:
                raise SepvaeError(f"method {self.label!r}: {name} is for a trained model's estimates; "
                                  f"{self.kind} has no model")
        if self.members < 1:
            raise SepvaeError(f"method {self.label!r}: members must be >= 1, got {self.members}")
        if self.members > 1 and (not self.entry.has_model or self.entry.fits):
            what = "fits codes to each mixture" if self.entry.has_model else "has no networks"
            raise SepvaeError(f"method {self.label!r}: members average networks' estimates of the mixture; "
                              f"{self.kind} {what}")
        if not self.mask_power > 0 or self.nmf_components < 1:
            raise SepvaeError(
                f"method {self.label!r}: mask_power must be > 0 and nmf_components >= 1, "
                f"got {self.mask_power}, {self.nmf_components}"
            )

    @property
    def entry(self):
        """This method's registry entry (:class:`sepvae.methods.MethodEntry`)."""
        from sepvae.methods import entry

        return entry(self.kind)

    def member(self, k: int) -> "Method":
        """Member ``k`` of this method's networks: the same method alone, seed train.seed + k."""
        if not 0 <= k < self.members:
            raise ValueError(f"method {self.label!r} has {self.members} member(s), not a member {k}")
        train = dataclasses.replace(self.train, seed=self.train.seed + k)
        return dataclasses.replace(self, train=train, members=1)


@dataclass(frozen=True)
class Experiment:
    name: str
    mix: MixConfig
    methods: tuple[Method, ...]
    sweep: str = ""  # the x-axis name of a sweep, shown in its report
    manifest: str = ""  # an external manifest used instead of generated mixtures
    path: str = ""

    def folds(self) -> tuple["Experiment", ...]:
        """What a run of this experiment is: one experiment per cross-validation fold (mix
        split "fold"), else just this one."""
        if self.mix.split != "fold":
            return (self,)
        ids = self.mix.fold_ids or [k for k in range(self.mix.folds) if k != self.mix.outer_fold]
        return tuple(dataclasses.replace(self, mix=dataclasses.replace(self.mix, fold=k)) for k in ids)


def to_dict(obj) -> Any:
    """A JSON-able view of a (nested) config dataclass."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(x) for x in obj]
    if isinstance(obj, dict):
        return {key: to_dict(value) for key, value in obj.items()}
    return obj


def from_dict(cls, data: dict[str, Any], where: str = ""):
    """Build config dataclass ``cls`` from a dict (a TOML table or a checkpoint's JSON).

    Every key is checked against the field's annotation (an int is not a float's or a
    bool's place, a float takes ints) and by ``cls`` for its range; unknown keys are
    refused with a "did you mean". SepvaeError names ``where`` (e.g. ``methods[2].train``)
    with the key, the value and what is expected.
    """
    if data is None:
        return None
    with within(where):
        if not isinstance(data, dict):
            raise SepvaeError(f"expected a table of {cls.__name__} options, got {shown(data)}")
        hints = field_types(cls)
        reject_unknown(data, list(hints), f"{cls.__name__} option")
        return cls(**{key: typed(key, value, hints[key]) for key, value in data.items()})


def config_hash(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (configs, file hashes)."""
    text = json.dumps([to_dict(p) for p in parts], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def model_config(data: dict[str, Any]) -> ModelConfig:
    """A ModelConfig from a dict, with the defaults its model's registry entry implies
    (beta-vae: beta = 4) for the keys the dict does not give."""
    from sepvae.methods import entry

    data = dict(data)
    for key, value in entry(data.get("name", "vae")).model_defaults.items():
        data.setdefault(key, value)
    return from_dict(ModelConfig, data)


def load_experiment(path: str | Path) -> Experiment:
    """Read an experiment TOML file (see experiments/README.md for its keys).

    Top-level tables ``stft``, ``model``, ``train`` are defaults that each ``[[methods]]``
    entry may override key by key.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SepvaeError(f"{path}: experiment file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise SepvaeError(f"{path}: not valid TOML ({exc})") from None
    try:
        return _experiment_from_raw(raw, path)
    except (TypeError, ValueError) as exc:
        raise SepvaeError(f"{path}: {exc}") from None
    except SepvaeError as exc:
        raise SepvaeError(f"{path}: {exc}") from None


# The top-level keys of an experiment file and their types; the tables hold config options.
EXPERIMENT_KEYS: dict[str, type] = {
    "name": str, "description": str, "sweep": str, "manifest": str,
    "mix": dict, "stft": dict, "model": dict, "train": dict, "fit": dict, "methods": list,
}
TABLES = ("stft", "model", "train", "fit")  # defaults that each [[methods]] entry may override


def _experiment_from_raw(raw: dict[str, Any], path: Path) -> Experiment:
    from sepvae.methods import entry as method_entry

    reject_unknown(raw, list(EXPERIMENT_KEYS), "top-level key")
    for key, value in raw.items():
        typed(key, value, EXPERIMENT_KEYS[key])
    mix = from_dict(MixConfig, raw.get("mix", {}), "mix")
    base = {table: raw.get(table, {}) for table in TABLES}
    # Each default table is checked alone first, so that an error in it is reported there
    # and not in the first [[methods]] entry that inherits it.
    _stft_from_raw(base["stft"], mix.sample_rate, "stft")
    from_dict(TrainConfig, base["train"], "train")
    from_dict(FitConfig, base["fit"], "fit")
    with within("model"):
        model_config(base["model"])
    methods = []
    for number, entry in enumerate(raw.get("methods", []), start=1):
        where = f"methods[{number}]"
        with within(where):
            if not isinstance(entry, dict):
                raise SepvaeError(f"expected a table ([[methods]] entry), got {shown(entry)}")
            hints = field_types(Method)
            reject_unknown(entry, list(hints), "[[methods]] key")
            entry = {k: v if k in TABLES else typed(k, v, hints[k]) for k, v in entry.items()}
        if "kind" not in entry:
            raise SepvaeError(f"[[methods]] entry {number} has no kind")
        kind = entry.pop("kind")
        label = entry.pop("label", kind)
        stft = _stft_from_raw({**base["stft"], **entry.pop("stft", {})}, mix.sample_rate, f"{where}.stft")
        train = from_dict(TrainConfig, {**base["train"], **entry.pop("train", {})}, f"{where}.train")
        model_overrides = entry.pop("model", {})
        model = None
        with within(where):
            kind_entry = method_entry(kind)
        if kind_entry.has_model:
            with within(f"{where}.model"):
                model = model_config({**base["model"], **model_overrides, "name": kind})
        fit_overrides = entry.pop("fit", {})
        fit = None
        if kind_entry.fits:
            fit = from_dict(FitConfig, {**base["fit"], **fit_overrides}, f"{where}.fit")
        elif fit_overrides:
            raise SepvaeError(f"{where} ({kind}): fit settings are for vae-fit methods only")
        with within(where):
            methods.append(
                Method(label=label, kind=kind, stft=stft, model=model, train=train, fit=fit, **entry)
            )
    if not methods:
        raise SepvaeError("no [[methods]] listed")
    labels = [(m.label, m.source_mode) for m in methods]
    if len(set(labels)) != len(labels):
        raise SepvaeError("method labels must be unique within a source mode")
    return Experiment(
        name=raw.get("name", path.stem),
        mix=mix,
        methods=tuple(methods),
        sweep=raw.get("sweep", ""),
        manifest=raw.get("manifest", ""),
        path=str(path),
    )


def _stft_from_raw(data: dict[str, Any], sample_rate: int, where: str) -> StftConfig:
    """An experiment's STFT table (a paper ``setting`` A-H and/or window_ms, overlap_ms,
    reading), checked to give a window of at least 2 samples at ``sample_rate``."""
    with within(where):
        if not isinstance(data, dict):
            raise SepvaeError(f"expected a table of StftConfig options, got {shown(data)}")
        data = dict(data)
        if "setting" in data:
            letter = data.pop("setting")
            require(isinstance(letter, str), "setting", letter, f"one of {', '.join(STFT_SETTINGS)}")
            preset = StftConfig.setting(letter)
            data = {"window_ms": preset.window_ms, "overlap_ms": preset.overlap_ms, **data}
        stft = from_dict(StftConfig, data)
        require(stft.n_fft(sample_rate) >= 2, "window_ms", stft.window_ms,
                 f"a window of at least 2 samples ({2000 / sample_rate:g} ms at {sample_rate} Hz)")
    return stft
