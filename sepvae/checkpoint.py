"""Model folders, their cards and checkpoints: the one owner of the on-disk model schema.

A model folder (a training run under ``runs/models/`` or a shipped model under
``sepvae/pretrained/``) holds

- ``model.json``, its :class:`ModelCard`: kind, source mode, sources, sample rate, STFT,
  model, training and (a fitting method's) fitting settings, training-data hash, package
  version, free ``info`` (name, description, evaluation, licence) and the sha256 of every
  weights file in the folder;
- one checkpoint per source, ``<source>.pt`` (an NMF run: ``nmf.pt``); a folder of
  ``members`` > 1 networks per source (trained alike but for their seeds, whose estimates
  are averaged) adds ``<source>.<k>.pt`` for member k = 1, 2, ... (:func:`join_members`):
  ``{"format", "card", "state_dict"}``, tensors and JSON types only, loaded with
  ``torch.load(weights_only=True)``; never pickled classes. The state dict is a
  :class:`~sepvae.models.SourceModel`'s, normalization included, so a checkpoint is
  self-contained; its ``card`` is the folder's card for that one source, without hashes.

Every load verifies the file against the card's sha256 and refuses a mismatch with one
line naming the file (after asteroid's ``serialize()`` / ``from_pretrained``). Reading a
card needs neither torch nor numpy, so ``sepvae models`` stays quick.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from sepvae.config import FitConfig, ModelConfig, SourceMode, StftConfig, TrainConfig, from_dict, model_config, to_dict
from sepvae.errors import SepvaeError
from sepvae.io import atomic_output, write_text

FORMAT = "sepvae-checkpoint-2"
CARD = "model.json"
T = TypeVar("T")


@dataclass(frozen=True)
class ModelCard:
    """What a model folder holds (see the module docstring)."""

    kind: str
    source_mode: SourceMode
    sources: tuple[str, ...]
    sample_rate: int
    stft: StftConfig
    n_bins: int
    model: ModelConfig | None = None
    train: TrainConfig | None = None
    fit: FitConfig | None = None  # a fitting method's settings (sepvae.fitting)
    training_mixtures: str = ""
    # The median active level (RMS, sepvae.loudness) of the training mixtures: what level
    # matching brings a recording to before the networks see it. None: not measured.
    input_rms: float | None = None
    members: int = 1  # networks per source, their estimates averaged (train: member 0's)
    version: str = ""
    sha256: dict[str, str] = field(default_factory=dict)  # file name -> hex digest
    info: dict[str, Any] = field(default_factory=dict)  # name, description, run, evaluation, ...

    def to_json(self) -> dict[str, Any]:
        data = to_dict(self)
        data["source_mode"] = str(self.source_mode)
        data["info"] = json.loads(json.dumps(self.info))  # plain JSON types only (no numpy scalars)
        return data

    @classmethod
    def from_json(cls, data: Any, where: str) -> "ModelCard":
        """A card from its JSON; a one-line SepvaeError naming ``where`` if it is not one."""
        if not isinstance(data, dict):
            raise SepvaeError(f"{where}: a model card must be a JSON object")
        try:
            return cls(
                kind=str(data["kind"]), source_mode=SourceMode(data["source_mode"]),
                sources=tuple(data["sources"]), sample_rate=int(data["sample_rate"]),
                stft=from_dict(StftConfig, data["stft"]), n_bins=int(data["n_bins"]),
                model=model_config(data["model"]) if data.get("model") else None,
                train=from_dict(TrainConfig, data["train"]) if data.get("train") else None,
                fit=from_dict(FitConfig, data["fit"]) if data.get("fit") else None,
                training_mixtures=str(data.get("training_mixtures", "")),
                input_rms=float(data["input_rms"]) if data.get("input_rms") is not None else None,
                members=int(data.get("members", 1)),
                version=str(data.get("version", "")),
                sha256=dict(data.get("sha256", {})), info=dict(data.get("info", {})),
            )
        except (KeyError, TypeError, ValueError, SepvaeError) as exc:
            raise SepvaeError(f"{where}: not a valid sepvae model card ({type(exc).__name__}: {exc})") from None

    def __post_init__(self):
        if self.members < 1:
            raise ValueError(f"members must be >= 1, got {self.members}")

    def replace(self, **changes: Any) -> "ModelCard":
        return dataclasses.replace(self, **changes)

    def weights_file(self, source: str, member: int = 0) -> str:
        """The checkpoint of ``source``'s network ``member`` (0: ``<source>.pt``)."""
        if not 0 <= member < self.members:
            raise SepvaeError(f"model {source!r} has {self.members} member(s), not a member {member}")
        return f"{source}.pt" if member == 0 else f"{source}.{member}.pt"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_card(folder: Path) -> ModelCard | None:
    """A model folder's card, or None when it has no ``model.json``."""
    path = Path(folder) / CARD
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SepvaeError(f"{path}: not a readable model card ({exc})") from None
    return ModelCard.from_json(data, str(path))


def write_card(folder: Path, card: ModelCard) -> None:
    write_text(Path(folder) / CARD, json.dumps(card.to_json(), indent=2) + "\n")


def card_of(folder: Path) -> ModelCard:
    """A model folder's card; a one-line SepvaeError if the folder has none."""
    card = read_card(folder)
    if card is None:
        raise SepvaeError(f"{folder}: no {CARD} (not a sepvae model folder, or its training has not started)")
    return card


def verify(folder: Path, name: str, card: ModelCard | None = None) -> Path:
    """The path of ``folder/name`` after checking it against the card's sha256."""
    folder = Path(folder)
    card = card or card_of(folder)
    path = folder / name
    if not path.is_file():
        raise SepvaeError(f"{path}: not found")
    expected = card.sha256.get(name)
    if expected is None:
        raise SepvaeError(f"{path}: not listed in {folder / CARD} (an unfinished run?)")
    if sha256_of(path) != expected:
        raise SepvaeError(f"{path}: sha256 does not match {folder / CARD}: the file is corrupted or was replaced")
    return path


def verify_folder(folder: Path) -> ModelCard:
    """Check every file a folder's card lists; returns the card."""
    card = card_of(folder)
    for name in card.sha256:
        verify(folder, name, card)
    return card


def verified_load(folder: Path, name: str, load: Callable[[Path], T]) -> T:
    """``load(path)`` of a model folder's file after checking its sha256."""
    return load(verify(folder, name))


def add_files(folder: Path, card: ModelCard, write: dict[str, Callable[[Path], None]]) -> ModelCard:
    """Write files into a model folder (each atomically by ``write[name](tmp)``) and the
    card with their sha256 added to those it already lists; returns that card."""
    folder = Path(folder)
    listed = read_card(folder)
    hashes = dict(listed.sha256) if listed is not None else {}
    for name, writer in write.items():
        with atomic_output(folder / name) as tmp:
            writer(tmp)
        hashes[name] = sha256_of(folder / name)
    card = card.replace(sha256=hashes)
    write_card(folder, card)
    return card


def save_checkpoints(folder: Path, models: dict[str, Any], card: ModelCard) -> ModelCard:
    """Write ``<source>.pt`` for each ``{source: SourceModel}`` and the folder's card."""

    def writer(source: str, model) -> Callable[[Path], None]:
        source_card = card.replace(sources=(source,), sha256={}).to_json()
        payload = {
            "format": FORMAT,
            "card": source_card,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        }
        return lambda tmp: save_tensors(payload, tmp)

    return add_files(folder, card, {card.weights_file(s): writer(s, m) for s, m in models.items()})


def join_members(folder: Path, runs: list[Path], info: dict[str, Any] | None = None) -> ModelCard:
    """Copy the checkpoints of runs that differ only in their seed into one model folder of
    ``len(runs)`` members per source (run k's ``<source>.pt`` becomes ``<source>.<k>.pt``);
    its card is the first run's with ``members`` set and ``info`` added. Each run is
    verified first; runs that differ in anything but the seed (data, model, STFT, level,
    other training settings) are refused with one line naming both."""
    import shutil

    cards = [verify_folder(run) for run in runs]
    first = cards[0]

    def alike(card: ModelCard) -> ModelCard:
        return card.replace(train=dataclasses.replace(card.train, seed=0) if card.train else None,
                            version="", sha256={}, info={})

    for run, card in zip(runs[1:], cards[1:]):
        if alike(card) != alike(first) or card.members != 1:
            raise SepvaeError(f"{run}: cannot be a member beside {runs[0]}: the runs differ in more than their seed")
    info = {**first.info, **(info or {}), "member_runs": [run.name for run in runs]}
    card = first.replace(members=len(runs), sha256={}, info=info)
    Path(folder).mkdir(parents=True, exist_ok=True)
    copies = {
        card.weights_file(source, k): (lambda tmp, path=run / first.weights_file(source): shutil.copyfile(path, tmp))
        for k, run in enumerate(runs) for source in card.sources
    }
    return add_files(folder, card, copies)


def holds_members(folder: Path, runs: list[Path]) -> bool:
    """Whether ``folder``'s card lists, as member k, the checkpoints run k's card lists now
    (False after a member run was trained again with other weights, or never joined)."""
    card = read_card(folder)
    cards = [read_card(run) for run in runs]
    if card is None or card.members != len(runs) or any(c is None for c in cards):
        return False
    return all(card.sha256.get(card.weights_file(source, k)) == member.sha256.get(member.weights_file(source))
               for k, member in enumerate(cards) for source in card.sources)


def init_model_folder(folder: Path, card: ModelCard, scale=None) -> ModelCard:
    """A model folder of untrained source models, source k built under ``torch.manual_seed(k)``
    (``scale``: their normalization, default 1): for tests and speed benchmarks."""
    import torch

    from sepvae.models import SourceModel, build_model

    scale = torch.ones(card.n_bins) if scale is None else scale
    models = {}
    for seed, source in enumerate(card.sources):
        torch.manual_seed(seed)
        models[source] = SourceModel(build_model(card.model, card.n_bins), scale)
    Path(folder).mkdir(parents=True, exist_ok=True)
    return save_checkpoints(folder, models, card)


def save_tensors(payload: Any, path: Path) -> None:
    """``torch.save`` through a file object: the archive inside is then always named
    "archive", not after the temporary file, so equal tensors give equal bytes (and sha256)."""
    import torch

    with open(path, "wb") as handle:
        torch.save(payload, handle)


def load_checkpoint(path: str | Path, device="cpu", card: ModelCard | None = None):
    """One source's model from a model folder: ``(SourceModel in eval mode, ModelCard of
    that source)``, after checking the file against its folder's card.

    Raises SepvaeError naming the file for anything that is not a valid, intact checkpoint.
    """
    import torch

    from sepvae.models import SourceModel, build_model

    path = Path(path)
    verify(path.parent, path.name, card)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise SepvaeError(f"{path}: not a readable sepvae checkpoint ({type(exc).__name__})") from None
    found = payload.get("format") if isinstance(payload, dict) else "?"
    if found != FORMAT:
        hint = "; it was written by an older sepvae: retrain it" if str(found).startswith("sepvae-checkpoint") else ""
        raise SepvaeError(f"{path}: not a {FORMAT} checkpoint (format {found}){hint}")
    source_card = ModelCard.from_json(payload.get("card"), str(path))
    if source_card.model is None:
        raise SepvaeError(f"{path}: its card has no model settings")
    try:
        network = build_model(source_card.model, source_card.n_bins)
        ones = torch.ones(source_card.n_bins)
        log_inputs = source_card.train is not None and source_card.train.inputs == "log1p"
        model = SourceModel(network, ones, *((torch.zeros_like(ones), ones) if log_inputs else ()))
        model.load_state_dict(payload["state_dict"], strict=True)
    except (RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise SepvaeError(f"{path}: checkpoint tensors do not match its card ({first})") from None
    return model.to(device).eval(), source_card
