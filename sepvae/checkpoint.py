"""Checkpoints: tensors plus a JSON-able config, loadable with ``weights_only=True``.

A checkpoint never pickles classes: it is ``{"format", "config", "state_dict", "scale"}``
where ``config`` holds the model name and sizes, STFT settings, sample rate, source name,
seed, training-data hash and package version, and ``scale`` the normalization statistics.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from sepvae.io import atomic_output
from sepvae.config import model_config
from sepvae.errors import SepvaeError

FORMAT = "sepvae-checkpoint-1"


def save_checkpoint(path: Path, model: torch.nn.Module, scale: torch.Tensor, config: dict[str, Any]) -> None:
    config = json.loads(json.dumps(config))  # plain JSON types only (no numpy scalars)
    payload = {
        "format": FORMAT,
        "config": config,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "scale": scale.detach().cpu(),
    }
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, device="cpu"):
    """Load a checkpoint; returns (model in eval mode, scale, config dict).

    Raises SepvaeError naming the file for anything that is not a valid checkpoint.
    """
    from sepvae.models import build_model

    path = Path(path)
    if not path.is_file():
        raise SepvaeError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise SepvaeError(f"{path}: not a readable sepvae checkpoint ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise SepvaeError(f"{path}: not a sepvae checkpoint (format {payload.get('format') if isinstance(payload, dict) else '?'})")
    config = payload["config"]
    try:
        model = build_model(model_config(config["model"]), int(config["n_bins"]))
        model.load_state_dict(payload["state_dict"], strict=True)
    except (RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise SepvaeError(f"{path}: checkpoint tensors do not match its config ({first})") from None
    scale = payload["scale"]
    if scale.shape != (int(config["n_bins"]),):
        raise SepvaeError(f"{path}: normalization has shape {tuple(scale.shape)}, expected ({config['n_bins']},)")
    return model.to(device).eval(), scale.to(device), config
