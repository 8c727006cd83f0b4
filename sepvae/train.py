"""Training: one model per source, all sources of a configuration in the same pass.

:func:`fit` trains the models of one job as one stack of :mod:`sepvae.ensemble` (Adam,
early stopping on a validation part, a NaN guard, resume from the last finished epoch).
:func:`train_method` is the stage: it resolves a run directory from the hash of everything
that determines the weights, and does nothing when that run is finished.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

import sepvae
from sepvae.io import atomic_output, write_text
from sepvae.checkpoint import save_checkpoint
from sepvae.config import Method, TrainConfig, config_hash, to_dict
from sepvae.ensemble import EpochCallback, Member, fit_ensemble, merge_histories
from sepvae.errors import SepvaeError
from sepvae.features import FrameSet, fit_scale, load_frames
from sepvae.mixing import read_manifest, training_key


@dataclass
class Split:
    """Normalized inputs and per-source targets for the models trained together."""

    inputs: Tensor  # (frames, bins)
    targets: dict[str, Tensor]  # source -> (frames, bins)


def fit(
    models: dict[str, torch.nn.Module],
    train: Split,
    valid: Split,
    config: TrainConfig,
    state_path: Path | None = None,
    on_epoch: EpochCallback | None = None,
    job: str = "",
    precision: str | None = None,
) -> list[dict]:
    """Train ``models`` (source -> model) on ``train``; returns the job's per-epoch history.

    The models train as one :func:`sepvae.ensemble.fit_ensemble` stack, each from its
    current weights with ``config.seed``: the same batch order for every source, and each
    model its own noise stream. Each model ends with the weights of its best validation
    epoch; one that stops early is frozen while the others go on (it is absent from the
    history's later epochs). With ``state_path`` the loop saves its full state after every
    epoch and resumes from it, ending with the same weights as an uninterrupted run.
    """
    inputs = torch.cat([train.inputs, valid.inputs])
    n_train, n_valid = len(train.inputs), len(valid.inputs)
    train_index = torch.arange(n_train)
    val_index = torch.arange(n_train, n_train + n_valid)
    members = [
        Member(name, model.config, config, train_index, val_index, name, init=model.state_dict())
        for name, model in models.items()
    ]
    targets = {name: torch.cat([train.targets[name], valid.targets[name]]) for name in models}
    results = fit_ensemble(members, inputs, targets, inputs.device, state_path, on_epoch, precision, job)
    for name, model in models.items():
        model.load_state_dict(results[name][0])
        model.eval()
    return merge_histories({name: history for name, (_, history) in results.items()})


def run_dir(method: Method, manifest: Path, sample_rate: int, runs_root: Path) -> Path:
    """Where a method's models live: a hash of all that determines their weights."""
    key = config_hash(
        {"kind": method.kind, "source_mode": method.source_mode, "stft": method.stft,
         "model": method.model, "train": method.train, "nmf_components": method.nmf_components
         if method.kind == "nmf" else None},
        {"training_mixtures": training_key(manifest), "sample_rate": sample_rate},
    )
    return runs_root / "models" / f"{method.kind}-{method.source_mode}-{key}"


def _split_mixtures(n: int, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the mixtures held out for validation (whole mixtures, seeded)."""
    n_val = min(n - 1, max(1, round(fraction * n)))
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).choice(n, n_val, replace=False)] = True
    return mask


def training_jobs(frames: FrameSet, source_mode: str) -> dict[str, dict[str, np.ndarray]]:
    """Which models train together on which frames: job -> {model name: frame mask}.

    gender mode: one job, one model per source class, all frames. speaker mode: one job per
    speaker, on the frames of the mixtures that speaker is in.
    """
    if source_mode == "gender":
        everything = np.ones(len(frames.mixture_index), dtype=bool)
        return {"all": {name: everything for name in frames.sources}}
    if source_mode != "speaker":
        raise SepvaeError(f"unknown source mode {source_mode!r}; use gender or speaker")
    jobs = {}
    for source, speakers in frames.speakers.items():
        for speaker in sorted(set(speakers)):
            if not speaker:
                raise SepvaeError("speaker mode needs <source>_speaker columns in the manifest")
            jobs[str(speaker)] = {str(speaker): speakers == speaker}
    return jobs


def _targets_of(frames: FrameSet, name: str) -> Tensor:
    """The target frames of model ``name``: a source class, or the class a speaker is in."""
    if name in frames.sources:
        return frames.sources[name]
    for source, speakers in frames.speakers.items():
        if name in speakers:
            return frames.sources[source]
    raise KeyError(name)


def train_method(
    method: Method,
    manifest: Path,
    runs_root: Path = Path("runs"),
    device: str = "auto",
    on_epoch: EpochCallback | None = None,
    sample_rate: int = 16_000,
) -> Path:
    """The training stage for one method: returns its run directory (skips if finished)."""
    from sepvae.device import pick_device, single_cpu_thread
    from sepvae.models import build_model

    if method.model is None:
        raise SepvaeError(f"method {method.label!r} ({method.kind}) has no model to train")
    out = run_dir(method, manifest, sample_rate, runs_root)
    if (out / "done").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    torch_device = pick_device(device)
    mixtures = read_manifest(manifest, "train")
    frames = load_frames(mixtures, method.stft, sample_rate)
    scale = fit_scale(frames.mixture)
    n_bins = scale.numel()
    resolved = {
        "kind": method.kind, "source_mode": method.source_mode, "stft": to_dict(method.stft),
        "model": to_dict(method.model), "train": to_dict(method.train), "sample_rate": sample_rate,
        "n_bins": n_bins, "manifest": str(manifest), "training_mixtures": training_key(manifest),
        "version": sepvae.__version__,
    }
    write_text(out / "config.json", json.dumps(resolved, indent=2) + "\n")
    normalized = FrameSet(
        mixture=frames.mixture / scale,
        sources={k: v / scale for k, v in frames.sources.items()},
        speakers=frames.speakers,
        mixture_index=frames.mixture_index,
    )
    for job, members in training_jobs(normalized, method.source_mode).items():
        if all((out / f"{name}.pt").is_file() for name in members):
            continue
        # In gender mode all models share every frame; in speaker mode a job is one model.
        mask = next(iter(members.values()))
        job_mixtures = np.unique(normalized.mixture_index[mask])
        held_out = job_mixtures[_split_mixtures(len(job_mixtures), method.train.val_fraction, method.train.seed)]
        is_val = np.isin(normalized.mixture_index, held_out)
        torch.manual_seed(method.train.seed)
        models = {name: build_model(method.model, n_bins).to(torch_device) for name in sorted(members)}
        train_part, val_part = mask & ~is_val, mask & is_val
        if not val_part.any():  # one mixture only (a rare speaker): validate on what it trains on
            val_part = train_part
        splits = []
        for part in (train_part, val_part):
            subset = normalized.subset(part)
            splits.append(Split(
                inputs=subset.mixture.to(torch_device),
                targets={name: _targets_of(subset, name).to(torch_device) for name in models},
            ))
        state_path = out / f"state-{job}.pt"
        with single_cpu_thread(torch_device):
            history = fit(models, splits[0], splits[1], method.train, state_path, on_epoch, job)
        for name, model in models.items():
            save_checkpoint(out / f"{name}.pt", model, scale, {**resolved, "source": name})
        history_name = "history.json" if job == "all" else f"history-{job}.json"
        write_text(out / history_name, json.dumps(history, indent=1) + "\n")
        state_path.unlink(missing_ok=True)
    write_text(out / "done", "")
    return out


def train_nmf(method: Method, manifest: Path, runs_root: Path, sample_rate: int) -> Path:
    """Learn one NMF dictionary per source from the training sources' magnitudes."""
    from sepvae.nmf import learn_dictionary

    out = run_dir(method, manifest, sample_rate, runs_root)
    if (out / "done").is_file():
        return out
    frames = load_frames(read_manifest(manifest, "train"), method.stft, sample_rate)
    dictionaries = {
        name: learn_dictionary(source.T.contiguous(), method.nmf_components, n_iter=200, seed=method.train.seed)
        for name, source in frames.sources.items()
    }
    with atomic_output(out / "nmf.pt") as tmp:
        torch.save(dictionaries, tmp)
    write_text(out / "done", "")
    return out
