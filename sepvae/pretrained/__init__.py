"""The models shipped inside the package: ``sepvae/pretrained/<name>/``.

A model folder holds one checkpoint per source, ``<source>.pt``, and its ``model.json``
card (:mod:`sepvae.checkpoint` owns both; README.md in this folder describes them). ``Separator.from_pretrained(name)`` and ``sepvae separate --model NAME`` load them.

This module imports neither torch nor numpy, so ``sepvae models`` stays quick.
"""

from __future__ import annotations

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


def names() -> list[str]:
    """The shipped models that are installed (a folder here with checkpoints in it)."""
    return sorted(p.name for p in ROOT.iterdir() if p.is_dir() and (p / CARD).is_file())


def is_name(text: str) -> bool:
    """Whether ``text`` reads as a model name rather than a path (no slash, no leading dot)."""
    return bool(NAME_PATTERN.match(text)) and not text.endswith(".pt")


def folder(name: str = DEFAULT) -> Path:
    """The folder of shipped model ``name``; a one-line SepvaeError if it is not installed."""
    if not is_name(name):
        raise SepvaeError(f"{name!r} is not a model name (letters, digits, '-', '_', '.')")
    path = ROOT / name
    if path.is_dir() and (path / CARD).is_file():
        return path
    installed = ", ".join(names()) or "none installed"
    if name == DEFAULT:
        raise SepvaeError(
            f"the default model is not installed ({path} has no {CARD}); run `make pretrained`, "
            f"or give --model a model folder such as a gender-mode runs/models/ run"
        )
    raise SepvaeError(f"unknown model {name!r}: shipped models: {installed}; or give a model folder such as a runs/models/ run")


def export(run: str | Path, name: str = DEFAULT, description: str = "", root: Path | None = None,
           extra: dict[str, Any] | None = None) -> Path:
    """Copy a finished gender-mode training run into a shipped model folder with its card.

    ``extra`` is merged into the card (e.g. evaluation scores). The folder is assembled
    beside its final place and swapped in whole, so an interrupted export leaves the old
    model intact. Returns the model folder.
    """
    from sepvae.checkpoint import verify_folder, write_card
    from sepvae.config import SourceMode
    from sepvae.layout import DONE

    run = Path(run)
    if not (run / DONE).is_file():
        raise SepvaeError(f"{run}: not a finished training run (no {DONE} marker)")
    card = verify_folder(run)
    if card.source_mode is not SourceMode.GENDER:
        raise SepvaeError(f"{run}: a shipped model separates gender classes; this run is {str(card.source_mode)!r} mode")
    if card.model is None or len(card.sources) < 2:
        raise SepvaeError(f"{run}: needs a model with two or more sources, has {list(card.sources)}")
    if not is_name(name):
        raise SepvaeError(f"{name!r} is not a model name (letters, digits, '-', '_', '.')")
    out = (root or ROOT) / name
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out.parent))
    for file in card.sha256:
        shutil.copyfile(run / file, staging / file)
    members = f", {card.members} networks of different seeds averaged" if card.members > 1 else ""
    info = {
        "name": name,
        "description": description or (
            f"{card.kind} per gender class{members} "
            f"(method {card.info.get('method', card.kind)!r}), "
            f"trained by sepvae {card.version or '?'}"
        ),
        "run": run.name,
        **card.info,
        **(extra or {}),
    }
    write_card(staging, card.replace(info=info))
    verify_folder(staging)
    os.chmod(staging, 0o755)
    previous = out.with_name(f".{name}.old")
    if out.exists():
        os.replace(out, previous)
    os.replace(staging, out)
    shutil.rmtree(previous, ignore_errors=True)
    return out
