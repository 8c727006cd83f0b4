"""Frozen, JSON-round-trippable configuration for every stage, and experiment files.

A run directory is named by :func:`config_hash` of the resolved config it holds, so a
stage whose inputs and config did not change finds its output and does nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from sepvae.errors import SepvaeError

SAMPLE_RATE = 16_000

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
        if self.reading not in ("overlap", "hop"):
            raise SepvaeError(f"stft reading must be 'overlap' or 'hop', got {self.reading!r}")
        if self.window_ms <= 0 or self.overlap_ms < 0:
            raise SepvaeError("stft window must be > 0 ms and overlap >= 0 ms")
        if self.reading == "overlap" and self.overlap_ms >= self.window_ms:
            raise SepvaeError(
                f"stft overlap ({self.overlap_ms} ms) must be shorter than the window "
                f"({self.window_ms} ms)"
            )

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
    split: str = "utterance"  # "utterance": test utterances unseen; "speaker": test speakers unseen
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
        if self.split not in ("utterance", "speaker"):
            raise SepvaeError(f"mix split must be 'utterance' or 'speaker', got {self.split!r}")
        if self.test_pairs not in ("distinct", "all"):
            raise SepvaeError(f"mix test_pairs must be 'distinct' or 'all', got {self.test_pairs!r}")
        if self.length not in ("shortest", "longest"):
            raise SepvaeError(f"mix length must be 'shortest' or 'longest', got {self.length!r}")
        if self.n_test < 1 or self.n_mixtures <= self.n_test:
            raise SepvaeError(
                f"need n_mixtures > n_test >= 1, got n_mixtures={self.n_mixtures}, "
                f"n_test={self.n_test}"
            )
        lo, hi = self.snr_db
        if lo > hi:
            raise SepvaeError(f"mix snr_db range is reversed: {list(self.snr_db)}")
        if not 0 < self.peak <= 1:
            raise SepvaeError(f"mix peak must be in (0, 1], got {self.peak}")


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
            if not isinstance(sizes, tuple) or not all(isinstance(n, int) and n > 0 for n in sizes):
                raise SepvaeError(f"model {name} must be a list of positive layer sizes, got {sizes!r}")
        if not isinstance(self.latent, int) or self.latent < 1:
            raise SepvaeError(f"model latent must be a positive integer, got {self.latent!r}")


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 70
    epochs: int = 30
    lr: float = 1e-3
    patience: int = 6  # early stopping: epochs without validation improvement
    val_fraction: float = 0.1  # part of the training mixtures held out for early stopping
    seed: int = 0

    def __post_init__(self):
        if self.batch_size < 1 or self.epochs < 1 or self.patience < 1:
            raise SepvaeError(
                f"train batch_size, epochs and patience must be >= 1, got {self.batch_size}, "
                f"{self.epochs}, {self.patience}"
            )
        if not self.lr > 0 or not 0 <= self.val_fraction < 1:
            raise SepvaeError(f"train needs lr > 0 and 0 <= val_fraction < 1, got {self.lr}, {self.val_fraction}")


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
    nmf_components: int = 32
    fit: FitConfig | None = None  # the fitting settings of a fitting method (vae-fit)

    def __post_init__(self):
        from sepvae.methods import entry

        entry(self.kind)  # an unknown kind is a one-line error listing the known ones
        try:
            object.__setattr__(self, "source_mode", SourceMode(self.source_mode))
        except ValueError:
            raise SepvaeError(f"unknown source mode {self.source_mode!r}; use gender or speaker") from None
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

@dataclass(frozen=True)
class Experiment:
    name: str
    mix: MixConfig
    methods: tuple[Method, ...]
    sweep: str = ""  # the x-axis name of a sweep, shown in its report
    manifest: str = ""  # an external manifest used instead of generated mixtures
    path: str = ""


def to_dict(obj) -> Any:
    """A JSON-able view of a (nested) config dataclass."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(x) for x in obj]
    if isinstance(obj, dict):
        return {key: to_dict(value) for key, value in obj.items()}
    return obj


def from_dict(cls, data: dict[str, Any]):
    """Build config dataclass ``cls`` from a dict, rejecting unknown keys by name."""
    if data is None:
        return None
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise SepvaeError(
            f"unknown {cls.__name__} option(s): {', '.join(unknown)}; "
            f"known: {', '.join(names)}"
        )
    kwargs = {}
    for key, value in data.items():
        default = names[key].default
        if isinstance(value, list):
            value = tuple(value)
        elif isinstance(default, float) and isinstance(value, int):
            value = float(value)
        kwargs[key] = value
    return cls(**kwargs)


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


def _experiment_from_raw(raw: dict[str, Any], path: Path) -> Experiment:
    from sepvae.methods import entry as method_entry

    known = {"name", "sweep", "manifest", "mix", "stft", "model", "train", "fit", "methods", "description"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SepvaeError(f"unknown top-level key(s): {', '.join(unknown)}")
    mix = from_dict(MixConfig, raw.get("mix", {}))
    base_stft = raw.get("stft", {})
    base_model = raw.get("model", {})
    base_train = raw.get("train", {})
    methods = []
    for number, entry in enumerate(raw.get("methods", []), start=1):
        entry = dict(entry)
        if "kind" not in entry:
            raise SepvaeError(f"[[methods]] entry {number} has no kind")
        kind = entry.pop("kind")
        label = entry.pop("label", kind)
        stft_raw = {**base_stft, **entry.pop("stft", {})}
        if "setting" in stft_raw:
            stft_raw = dict(stft_raw)
            preset = StftConfig.setting(stft_raw.pop("setting"))
            stft_raw = {"window_ms": preset.window_ms, "overlap_ms": preset.overlap_ms, **stft_raw}
        stft = from_dict(StftConfig, stft_raw)
        train = from_dict(TrainConfig, {**base_train, **entry.pop("train", {})})
        model_overrides = entry.pop("model", {})
        model = None
        if method_entry(kind).has_model:
            model = model_config({**base_model, **model_overrides, "name": kind})
        fit_overrides = entry.pop("fit", {})
        fit = None
        if method_entry(kind).fits:
            fit = from_dict(FitConfig, {**raw.get("fit", {}), **fit_overrides})
        elif fit_overrides:
            raise SepvaeError(f"[[methods]] entry {number} ({kind}): fit settings are for vae-fit methods only")
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
