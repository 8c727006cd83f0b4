"""Training: one model per source, all sources of a configuration in the same pass.

:func:`fit` trains the models of one job as one stack of :mod:`sepvae.ensemble` (Adam,
early stopping on a validation part, a NaN guard, resume from the last finished epoch).
:func:`train_models` and :func:`train_nmf` fill a run folder (:mod:`sepvae.layout` names it,
the training stage in :mod:`sepvae.pipeline` calls them through the method registry) with
checkpoints and the folder's card (:mod:`sepvae.checkpoint`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

import sepvae
from sepvae.checkpoint import ModelCard, add_files, read_card, save_checkpoints, save_tensors, verify, write_card
from sepvae.config import Method, SourceMode, TrainConfig
from sepvae.io import write_text
from sepvae.ensemble import EpochCallback, Member, fit_ensemble, merge_histories
from sepvae.errors import SepvaeError
from sepvae.features import FrameSet, concat, fit_normalization, load_frames, remix_frames
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


def _card(method: Method, manifest: Path, sample_rate: int, n_bins: int, sources: tuple[str, ...]) -> ModelCard:
    return ModelCard(
        kind=method.kind, source_mode=method.source_mode, sources=sources, sample_rate=sample_rate,
        stft=method.stft, n_bins=n_bins, model=method.model, train=method.train,
        training_mixtures=training_key(manifest), version=sepvae.__version__,
        info={"method": method.label, "manifest": str(manifest)},
    )


def train_models(
    method: Method,
    manifest: Path,
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
    from sepvae.models import build_model

    if method.model is None:
        raise SepvaeError(f"method {method.label!r} ({method.kind}) has no model to train")
    out.mkdir(parents=True, exist_ok=True)
    torch_device = pick_device(device)
    mixtures = read_manifest(manifest, "train")
    frames = load_frames(mixtures, method.stft, sample_rate)
    recipe = method.train
    normalization = fit_normalization(frames.mixture, recipe.normalization == "bin", recipe.inputs == "log1p")
    n_bins = normalization.scale.numel()
    jobs = training_jobs(frames, method.source_mode)
    card = _card(method, manifest, sample_rate, n_bins, tuple(sorted(n for members in jobs.values() for n in members)))
    if read_card(out) is None:
        write_card(out, card)  # from the start, so `sepvae models` lists the run in progress
    for job, members in jobs.items():
        if all(_intact(out, card.weights_file(name)) for name in members):
            continue
        # In gender mode all models share every frame; in speaker mode a job is one model.
        mask = next(iter(members.values()))
        job_mixtures = np.unique(frames.mixture_index[mask])
        held_out = job_mixtures[_split_mixtures(len(job_mixtures), method.train.val_fraction, method.train.seed)]
        is_val = np.isin(frames.mixture_index, held_out)
        torch.manual_seed(method.train.seed)
        models = {name: build_model(method.model, n_bins).to(torch_device) for name in sorted(members)}
        train_part, val_part = mask & ~is_val, mask & is_val
        if not val_part.any():  # one mixture only (a rare speaker): validate on what it trains on
            val_part = train_part
        train_set, val_set = frames.subset(train_part), frames.subset(val_part)
        if recipe.remix:  # from the sources of the mixtures trained on, never the held-out ones
            kept = [mixtures[i] for i in np.unique(train_set.mixture_index)]
            remixed = remix_frames(kept, method.stft, sample_rate, recipe.remix, recipe.remix_gain_db,
                                   recipe.seed, first_index=len(mixtures))
            train_set = concat(train_set, remixed)
        splits = [
            Split(
                inputs=normalization.inputs(subset.mixture).to(torch_device),
                targets={name: normalization.targets(_targets_of(subset, name)).to(torch_device) for name in models},
            )
            for subset in (train_set, val_set)
        ]
        state_path = out / f"state-{job}.pt"
        with single_cpu_thread(torch_device):
            history = fit(models, splits[0], splits[1], method.train, state_path, on_epoch, job)
        save_checkpoints(out, {name: normalization.model(model.cpu()) for name, model in models.items()}, card)
        history_name = "history.json" if job == "all" else f"history-{job}.json"
        write_text(out / history_name, json.dumps(history, indent=1) + "\n")
        state_path.unlink(missing_ok=True)


def _intact(folder: Path, name: str) -> bool:
    try:
        verify(folder, name)
    except SepvaeError:
        return False
    return True


def train_nmf(method: Method, manifest: Path, out: Path, sample_rate: int) -> None:
    """Learn one NMF dictionary per source from the training sources' magnitudes into ``out``."""
    from sepvae.nmf import learn_dictionary

    frames = load_frames(read_manifest(manifest, "train"), method.stft, sample_rate)
    dictionaries = {
        name: learn_dictionary(source.T.contiguous(), method.nmf_components, n_iter=200, seed=method.train.seed)
        for name, source in frames.sources.items()
    }
    card = _card(method, manifest, sample_rate, method.stft.n_bins(sample_rate), tuple(dictionaries))
    add_files(out, card.replace(model=None), {"nmf.pt": lambda tmp: save_tensors(dictionaries, tmp)})
