"""The models shipped inside the package: ``sepvae/pretrained/<name>/``.

A model folder holds one checkpoint per source, ``<source>.pt`` (see
:mod:`sepvae.checkpoint`), and a ``model.json`` card (README.md in this folder describes
it). ``Separator.from_pretrained(name)`` and ``sepvae separate --model NAME`` load them.

This module imports neither torch nor numpy, so ``sepvae models`` stays quick.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sepvae.errors import SepvaeError

ROOT = Path(__file__).resolve().parent
DEFAULT = "default"
CARD = "model.json"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def checkpoints_in(folder: Path) -> list[str]:
    """The source names of a model folder: its ``<source>.pt`` files, training states excluded."""
    return sorted(p.stem for p in Path(folder).glob("*.pt") if not p.stem.startswith("state-"))


def read_card(folder: Path) -> dict[str, Any]:
    """A model folder's ``model.json``, or ``{}`` when it has none."""
    path = Path(folder) / CARD
    if not path.is_file():
        return {}
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SepvaeError(f"{path}: not a readable model card ({exc})") from None
    if not isinstance(card, dict):
        raise SepvaeError(f"{path}: a model card must be a JSON object")
    return card


def sources_of(folder: Path) -> list[str]:
    """A model folder's sources: in the order its card lists them, then the others sorted."""
    available = checkpoints_in(folder)
    listed = [s for s in read_card(folder).get("sources", []) if s in available]
    return listed + [s for s in available if s not in listed]


def names() -> list[str]:
    """The shipped models that are installed (a folder here with checkpoints in it)."""
    return sorted(p.name for p in ROOT.iterdir() if p.is_dir() and checkpoints_in(p))


def is_name(text: str) -> bool:
    """Whether ``text`` reads as a model name rather than a path (no slash, no leading dot)."""
    return bool(NAME_PATTERN.match(text)) and not text.endswith(".pt")


def folder(name: str = DEFAULT) -> Path:
    """The folder of shipped model ``name``; a one-line SepvaeError if it is not installed."""
    if not is_name(name):
        raise SepvaeError(f"{name!r} is not a model name (letters, digits, '-', '_', '.')")
    path = ROOT / name
    if path.is_dir() and checkpoints_in(path):
        return path
    installed = ", ".join(names()) or "none installed"
    if name == DEFAULT:
        raise SepvaeError(
            f"the default model is not installed ({path} has no checkpoints); run `make pretrained`, "
            f"or give --model a folder of <source>.pt checkpoints such as a runs/models/ run"
        )
    raise SepvaeError(f"unknown model {name!r}: shipped models: {installed}; or give a folder of <source>.pt checkpoints")


def export(run: str | Path, name: str = DEFAULT, description: str = "", root: Path | None = None,
           extra: dict[str, Any] | None = None) -> Path:
    """Copy a finished gender-mode training run into a shipped model folder with its card.

    ``extra`` is merged into the card (e.g. evaluation scores). The folder is assembled
    beside its final place and swapped in whole, so an interrupted export leaves the old
    model intact. Returns the model folder.
    """
    run = Path(run)
    config_path = run / "config.json"
    if not (run / "done").is_file() or not config_path.is_file():
        raise SepvaeError(f"{run}: not a finished training run (no config.json and done)")
    config = json.loads(config_path.read_text())
    if config.get("source_mode") != "gender":
        raise SepvaeError(f"{run}: a shipped model separates gender classes; this run is {config.get('source_mode')!r} mode")
    sources = checkpoints_in(run)
    if len(sources) < 2:
        raise SepvaeError(f"{run}: needs two or more <source>.pt checkpoints, has {sources}")
    if not is_name(name):
        raise SepvaeError(f"{name!r} is not a model name (letters, digits, '-', '_', '.')")
    out = (root or ROOT) / name
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out.parent))
    for source in sources:
        shutil.copyfile(run / f"{source}.pt", staging / f"{source}.pt")
    card = {
        "name": name,
        "description": description or f"{config['kind']} per gender class, trained by sepvae {config.get('version', '?')}",
        "sources": sources,
        "kind": config["kind"],
        "source_mode": config["source_mode"],
        "sample_rate": config["sample_rate"],
        "stft": config["stft"],
        "n_bins": config["n_bins"],
        "model": config["model"],
        "train": config["train"],
        "training_mixtures": config.get("training_mixtures"),
        "run": run.name,
        "version": config.get("version"),
        **(extra or {}),
    }
    (staging / CARD).write_text(json.dumps(card, indent=2) + "\n")
    os.chmod(staging, 0o755)
    previous = out.with_name(f".{name}.old")
    if out.exists():
        os.replace(out, previous)
    os.replace(staging, out)
    shutil.rmtree(previous, ignore_errors=True)
    return out
