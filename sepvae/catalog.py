"""Finding models: what ``sepvae models`` lists and what ``sepvae separate --model`` loads.

``--model`` names a model: a shipped one (``sepvae/pretrained/<name>/``) or a folder of
``<source>.pt`` checkpoints, such as a gender-mode run under ``runs/models/``. A single
``.pt`` is refused: it holds one source's model, and separating needs one per source.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sepvae import pretrained
from sepvae.errors import SepvaeError



@dataclass
class ModelInfo:
    """A model ``sepvae separate --model`` can be given, as ``sepvae models`` lists it."""

    name: str  # the shipped name, or the run folder's path
    path: Path
    origin: str  # "shipped" or "run"
    kind: str | None = None
    source_mode: str | None = None
    sources: list[str] = field(default_factory=list)
    sample_rate: int | None = None
    stft: dict[str, Any] | None = None
    done: bool = False
    note: str = ""

    @property
    def usable(self) -> bool:
        return self.done and self.source_mode in (None, "gender") and len(self.sources) >= 2

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "path": str(self.path), "origin": self.origin, "kind": self.kind,
            "source_mode": self.source_mode, "sources": self.sources, "sample_rate": self.sample_rate,
            "stft": self.stft, "done": self.done, "usable": self.usable, "note": self.note,
        }


def describe_model(folder: Path, name: str, origin: str) -> ModelInfo:
    """What a model folder holds, from its model.json / config.json (no torch needed)."""
    folder = Path(folder)
    card = pretrained.read_card(folder)
    config: dict[str, Any] = {}
    if (folder / "config.json").is_file():
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError):
            config = {}
    info = {**config, **card}
    checkpoints = pretrained.checkpoints_in(folder)
    sources = pretrained.sources_of(folder)
    done = (folder / "done").is_file() if origin == "run" else bool(checkpoints)
    model = ModelInfo(
        name=name, path=folder, origin=origin, kind=info.get("kind"), source_mode=info.get("source_mode"),
        sources=sources, sample_rate=info.get("sample_rate"), stft=info.get("stft"), done=done,
    )
    if checkpoints and (model.stft is None or model.sample_rate is None):
        model.stft, model.sample_rate, model.kind = _checkpoint_facts(folder / f"{checkpoints[0]}.pt", model.kind)
    if model.source_mode == "speaker":
        model.note = "speaker mode: one model per training speaker, not usable by separate"
    elif not checkpoints:
        model.note = "not installed (make pretrained)" if origin == "shipped" else "no checkpoints yet"
    elif not done:
        model.note = "training not finished"
    return model


def _checkpoint_facts(path: Path, kind: str | None):
    """STFT, sample rate and kind read from a checkpoint, for a folder without a card."""
    import torch

    try:
        config = torch.load(path, map_location="cpu", weights_only=True)["config"]
        return config.get("stft"), config.get("sample_rate"), kind or config.get("kind")
    except Exception:  # a broken checkpoint still gets listed; separate will say what is wrong
        return None, None, kind


def list_models(runs: Path = Path("runs")) -> list[ModelInfo]:
    """Shipped models (``default`` even if not installed), then the runs under ``runs/models/``."""
    models = []
    shipped = sorted(p.name for p in pretrained.ROOT.iterdir() if p.is_dir() and pretrained.is_name(p.name))
    for name in sorted(set(shipped) | {pretrained.DEFAULT}, key=lambda n: (n != pretrained.DEFAULT, n)):
        models.append(describe_model(pretrained.ROOT / name, name, "shipped"))
    root = Path(runs) / "models"
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if (p / "config.json").is_file()):
            models.append(describe_model(folder, str(folder), "run"))
    return models


def resolve_model(model: str = pretrained.DEFAULT) -> ModelInfo:
    """What ``--model`` names: a shipped model, else a folder of checkpoints (checked usable).

    A shipped name wins over a folder of the same name in the working directory; write
    ``./name`` for the folder.
    """
    if pretrained.is_name(model) and (
        (pretrained.ROOT / model).is_dir() or model == pretrained.DEFAULT or not Path(model).exists()
    ):
        return describe_model(pretrained.folder(model), model, "shipped")
    path = Path(model)
    if not path.exists():
        raise SepvaeError(f"{path}: no such model folder")
    if path.is_file():
        if path.suffix == ".pt":
            raise SepvaeError(
                f"{path}: a single checkpoint holds one source's model; give the folder with one "
                f"<source>.pt per source ({path.parent})"
            )
        raise SepvaeError(f"{path}: not a model folder (a folder of <source>.pt checkpoints)")
    described = describe_model(path, str(path), "run")
    if described.source_mode == "speaker":
        raise SepvaeError(f"{path}: a speaker-mode run (one model per training speaker); separate needs a gender-mode run")
    if len(described.sources) < 2:
        raise SepvaeError(f"{path}: needs one <source>.pt checkpoint per source, found {described.sources or 'none'}")
    return described


def load_separator(model: str = pretrained.DEFAULT, device: str = "auto"):
    """(Separator, ModelInfo) for ``--model``; one-line SepvaeError for anything wrong."""
    from sepvae.separator import Separator

    info = resolve_model(model)
    separator = Separator.from_run(info.path, device=device)
    info.sources = separator.sources
    return separator, info
