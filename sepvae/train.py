"""Training: one model per source, all sources of a configuration in the same pass.

:func:`fit` is the plain loop (Adam, shared batches, early stopping on a validation part,
a NaN guard, resume from the last finished epoch). :func:`train_models` and
:func:`train_nmf` fill a model folder with checkpoints and the folder's card
(:mod:`sepvae.checkpoint`) from :class:`TrainingData`; the training jobs of
:mod:`sepvae.jobs` call them through the method registry in a scratch folder of the machine
they run on, and the driver copies the result into the run folder :mod:`sepvae.layout` names.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

import sepvae
from sepvae.checkpoint import ModelCard, add_files, read_card, save_checkpoints, save_tensors, verify, write_card
from sepvae.config import Method, SourceMode, StftConfig, TrainConfig
from sepvae.io import atomic_output, write_text
from sepvae.errors import SepvaeError
from sepvae.features import FrameSet, fit_scale, load_frames
from sepvae.mixing import read_manifest, training_key

EpochCallback = Callable[[str, int, int, dict], None]  # (job, epoch, epochs, logs)


@dataclass
class Split:
    """Normalized inputs and per-source targets for the models trained together."""

    inputs: Tensor  # (frames, bins)
    targets: dict[str, Tensor]  # source -> (frames, bins)


def _validation_loss(model, inputs: Tensor, targets: Tensor, batch: int = 4096) -> float:
    """Mean over frames of the summed squared error of the deterministic estimate."""
    total = inputs.new_zeros(())
    with torch.no_grad():
        for start in range(0, len(inputs), batch):
            estimate = model.estimate(inputs[start : start + batch])
            total += (estimate - targets[start : start + batch]).pow(2).sum()
    return float(total) / max(1, len(inputs))


def fit(
    models: dict[str, torch.nn.Module],
    train: Split,
    valid: Split,
    config: TrainConfig,
    state_path: Path | None = None,
    on_epoch: EpochCallback | None = None,
    job: str = "",
) -> list[dict]:
    """Train ``models`` (source -> model) on shared batches; returns the per-epoch history.

    Each model keeps the weights of its best validation epoch. With ``state_path`` the loop
    saves its full state after every epoch and resumes from it, ending with the same weights
    as an uninterrupted run.
    """
    device = train.inputs.device
    params = [p for m in models.values() for p in m.parameters()]
    optimizer = torch.optim.Adam(params, lr=config.lr)  # Adam is per-parameter: one is as good as one per model
    shuffle = torch.Generator().manual_seed(config.seed)
    # The models' own randomness (VAE noise, ITL-AE prior samples) from a seeded generator
    # of the fit, not the global RNG, so a run does not depend on what ran before it.
    noise = torch.Generator(device=device).manual_seed(config.seed + 1)
    best = {name: math.inf for name in models}
    best_state = {name: copy.deepcopy(m.state_dict()) for name, m in models.items()}
    since_best = {name: 0 for name in models}
    history: list[dict] = []
    start_epoch = 1
    if state_path is not None and state_path.is_file():
        state = torch.load(state_path, map_location=device, weights_only=True)
        for name, model in models.items():
            model.load_state_dict(state["models"][name])
        optimizer.load_state_dict(state["optimizer"])
        shuffle.set_state(state["shuffle"])
        noise.set_state(state["noise"].cpu())
        best, best_state, since_best = state["best"], state["best_state"], state["since_best"]
        history = state["history"]
        start_epoch = history[-1]["epoch"] + 1 if history else 1
    n = len(train.inputs)
    for epoch in range(start_epoch, config.epochs + 1):
        if history and all(since_best[name] >= config.patience for name in models):
            break
        started = time.perf_counter()
        for model in models.values():
            model.train()
        sums = {name: torch.zeros(3, device=device) for name in models}
        order = torch.randperm(n, generator=shuffle).to(device)
        for start in range(0, n, config.batch_size):
            index = order[start : start + config.batch_size]
            inputs = train.inputs[index]
            total = 0.0
            for name, model in models.items():
                out = model(inputs, train.targets[name][index], noise)
                total = total + out.loss
                # Accumulated on the device: no host sync per step.
                sums[name] += torch.stack([out.loss, out.recon, out.reg]).detach() * len(index)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
        logs: dict = {"epoch": epoch}
        for name, model in models.items():
            loss, recon, reg = (sums[name] / n).tolist()
            if not all(math.isfinite(v) for v in (loss, recon, reg)):
                raise SepvaeError(
                    f"training {job or 'model'} ({name}): loss became {loss} at epoch {epoch}; "
                    f"lower the learning rate (now {config.lr}) or check the training data"
                )
            model.eval()
            val = _validation_loss(model, valid.inputs, valid.targets[name])
            if val < best[name]:
                best[name], since_best[name] = val, 0
                best_state[name] = copy.deepcopy(model.state_dict())
            else:
                since_best[name] += 1
            logs[name] = {"loss": loss, "recon": recon, "reg": reg, "val_recon": val}
        logs["seconds"] = time.perf_counter() - started  # wall time, kept across resumes
        history.append(logs)
        if state_path is not None:
            state = {
                "models": {name: m.state_dict() for name, m in models.items()},
                "optimizer": optimizer.state_dict(),
                "shuffle": shuffle.get_state(),
                "noise": noise.get_state(),
                "best": best, "best_state": best_state, "since_best": since_best,
                "history": history,
            }
            with atomic_output(state_path) as tmp:
                torch.save(state, tmp)
        if on_epoch:
            on_epoch(job, epoch, config.epochs, logs)
    for name, model in models.items():
        model.load_state_dict(best_state[name])
        model.eval()
    return history


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
    if SourceMode(source_mode) is SourceMode.GENDER:
        everything = np.ones(len(frames.mixture_index), dtype=bool)
        return {"all": {name: everything for name in frames.sources}}
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


@dataclass(frozen=True)
class TrainingData:
    """What a run trains on, read where the manifest is: the training mixtures' frames at one
    STFT, and what the card says about them. A Ray worker gets this, never the manifest."""

    frames: FrameSet
    training_mixtures: str  # mixing.training_key of the manifest
    manifest: str  # its path, for the card's info only


def training_data(manifest: Path, stft: StftConfig, sample_rate: int) -> TrainingData:
    frames = load_frames(read_manifest(manifest, "train"), stft, sample_rate)
    return TrainingData(frames, training_key(manifest), str(manifest))


def _card(method: Method, data: TrainingData, sample_rate: int, n_bins: int, sources: tuple[str, ...]) -> ModelCard:
    return ModelCard(
        kind=method.kind, source_mode=method.source_mode, sources=sources, sample_rate=sample_rate,
        stft=method.stft, n_bins=n_bins, model=method.model, train=method.train,
        training_mixtures=data.training_mixtures, version=sepvae.__version__,
        info={"method": method.label, "manifest": data.manifest},
    )


def train_models(
    method: Method,
    data: TrainingData,
    out: Path,
    sample_rate: int = 16_000,
    device: str = "auto",
    on_epoch: EpochCallback | None = None,
) -> None:
    """Train a model method's source models into run folder ``out``.

    A job (gender mode: both sources; speaker mode: one speaker) whose checkpoints are
    already in ``out`` and match its card is not trained again, so an interrupted stage
    resumes where it stopped.
    """
    from sepvae.device import pick_device, single_cpu_thread
    from sepvae.models import SourceModel, build_model

    if method.model is None:
        raise SepvaeError(f"method {method.label!r} ({method.kind}) has no model to train")
    out.mkdir(parents=True, exist_ok=True)
    torch_device = pick_device(device)
    frames = data.frames
    scale = fit_scale(frames.mixture)
    n_bins = scale.numel()
    normalized = FrameSet(
        mixture=frames.mixture / scale,
        sources={k: v / scale for k, v in frames.sources.items()},
        speakers=frames.speakers,
        mixture_index=frames.mixture_index,
    )
    jobs = training_jobs(normalized, method.source_mode)
    card = _card(method, data, sample_rate, n_bins, tuple(sorted(n for members in jobs.values() for n in members)))
    if read_card(out) is None:
        write_card(out, card)  # from the start: a resumed run checks finished jobs' checkpoints against it
    for job, members in jobs.items():
        if all(_intact(out, card.weights_file(name)) for name in members):
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
        save_checkpoints(out, {name: SourceModel(model.cpu(), scale) for name, model in models.items()}, card)
        history_name = "history.json" if job == "all" else f"history-{job}.json"
        write_text(out / history_name, json.dumps(history, indent=1) + "\n")
        state_path.unlink(missing_ok=True)


def _intact(folder: Path, name: str) -> bool:
    try:
        verify(folder, name)
    except SepvaeError:
        return False
    return True


def train_nmf(method: Method, data: TrainingData, out: Path, sample_rate: int) -> None:
    """Learn one NMF dictionary per source from the training sources' magnitudes into ``out``."""
    from sepvae.nmf import learn_dictionary

    frames = data.frames
    dictionaries = {
        name: learn_dictionary(source.T.contiguous(), method.nmf_components, n_iter=200, seed=method.train.seed)
        for name, source in frames.sources.items()
    }
    card = _card(method, data, sample_rate, method.stft.n_bins(sample_rate), tuple(dictionaries))
    add_files(out, card.replace(model=None), {"nmf.pt": lambda tmp: save_tensors(dictionaries, tmp)})
