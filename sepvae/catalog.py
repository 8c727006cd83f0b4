"""Finding models: what ``sepvae models`` lists and what ``sepvae separate --model`` loads.

``--model`` names a model: a shipped one (``sepvae/pretrained/<name>/``) or a folder of
``<source>.pt`` checkpoints, such as a gender-mode run under ``runs/models/``. A single
``.pt`` is refused: it holds one source's model, and separating needs one per source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sepvae import pretrained
from sepvae.config import SourceMode, to_dict
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
    members: int = 1  # networks per source, their estimates averaged
    done: bool = False
    note: str = ""

    @property
    def usable(self) -> bool:
        return self.done and self.source_mode == str(SourceMode.GENDER) and len(self.sources) >= 2

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "path": str(self.path), "origin": self.origin, "kind": self.kind,
            "source_mode": self.source_mode, "sources": self.sources, "sample_rate": self.sample_rate,
            "stft": self.stft, "members": self.members, "done": self.done, "usable": self.usable, "note": self.note,
        }


def describe_model(folder: Path, name: str, origin: str) -> ModelInfo:
    """What a model folder holds, from its card (no torch needed). A folder without a
    readable card is still described, with a note saying what is wrong."""
    from sepvae.checkpoint import read_card
    from sepvae.layout import DONE

    folder = Path(folder)
    model = ModelInfo(name=name, path=folder, origin=origin)
    try:
        card = read_card(folder)
    except SepvaeError as exc:
        model.note = str(exc)
        return model
    if card is None:
        model.note = "not installed (make pretrained)" if origin == "shipped" else "no model.json card"
        return model
    model.kind, model.source_mode, model.sources = card.kind, str(card.source_mode), list(card.sources)
    model.sample_rate, model.stft, model.members = card.sample_rate, to_dict(card.stft), card.members
    model.done = (folder / DONE).is_file() if origin == "run" else True
    if card.source_mode is SourceMode.SPEAKER:
        model.note = "speaker mode: one model per training speaker, not usable by separate"
    elif not model.done:
        model.note = "training not finished"
    return model


def list_models(runs: Path = Path("runs")) -> list[ModelInfo]:
    """Shipped models (``default`` even if not installed), then the runs under ``runs/models/``."""
    models = []
    shipped = sorted(p.name for p in pretrained.ROOT.iterdir() if p.is_dir() and pretrained.is_name(p.name))
    for name in sorted(set(shipped) | {pretrained.DEFAULT}, key=lambda n: (n != pretrained.DEFAULT, n)):
        models.append(describe_model(pretrained.ROOT / name, name, "shipped"))
    root = Path(runs) / "models"
    if root.is_dir():
        from sepvae.checkpoint import CARD
        from sepvae.methods import model_kinds

        prefixes = tuple(f"{kind}-" for kind in model_kinds())  # not NMF runs: no network to load
        for folder in sorted(p for p in root.iterdir() if (p / CARD).is_file() and p.name.startswith(prefixes)):
            models.append(describe_model(folder, str(folder), "run"))
    return models


def models_table(models: list[ModelInfo]) -> str:
    """What ``sepvae models`` prints: one aligned row per model."""
    rows = [("NAME / PATH", "TYPE", "SOURCES", "STFT", "DONE")]
    for m in models:
        speakers = m.source_mode == str(SourceMode.SPEAKER)
        sources = f"{len(m.sources)} speakers" if speakers else ", ".join(m.sources) or "-"
        stft = "-"
        if m.stft:
            second = "hop" if m.stft.get("reading") == "hop" else "overlap"
            stft = f"{m.stft.get('window_ms'):g} ms window, {m.stft.get('overlap_ms'):g} ms {second}"
            if m.sample_rate:
                stft += f" @ {m.sample_rate} Hz"
        kind = (m.kind or "-") + (f" x{m.members}" if m.members > 1 else "") + (f" ({m.source_mode})" if m.source_mode else "")
        done = ("yes" if m.done else "no") + (f"  {m.note}" if m.note else "")
        rows.append((m.name, kind, sources, stft, done))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4] for row in rows)


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
    if described.kind is None:
        raise SepvaeError(f"{path}: {described.note}")
    if described.source_mode == str(SourceMode.SPEAKER):
        raise SepvaeError(f"{path}: a speaker-mode run (one model per training speaker); separate needs a gender-mode run")
    if len(described.sources) < 2:
        raise SepvaeError(f"{path}: needs one <source>.pt checkpoint per source, found {described.sources or 'none'}")
    return described


def load_separator(model: str = pretrained.DEFAULT, device: str = "auto", match_level: bool | None = None,
                   phase_iterations: int | None = None, shifts: int | None = None,
                   smooth_frames: int | None = None):
    """(Separator, ModelInfo) for ``--model``; one-line SepvaeError for anything wrong.
    ``match_level``, ``phase_iterations``, ``shifts``, ``smooth_frames`` None: as the model's
    card recommends."""
    from sepvae.separator import Separator

    info = resolve_model(model)
    separator = Separator.from_run(info.path, device=device, match_level=match_level, phase_iterations=phase_iterations,
                                   shifts=shifts, smooth_frames=smooth_frames)
    info.sources = separator.sources
    return separator, info
