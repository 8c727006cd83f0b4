"""Training: one model per source, all sources of a configuration in the same pass.

:func:`plan_models`, :func:`plan_clean_models` and :func:`train_nmf` work from
:class:`TrainingData`, the training frames read where the manifest is; the training jobs of
:mod:`sepvae.jobs` (through the method registry) train in a scratch folder of the machine they
run on, and the driver copies the checkpoints and the folder's card (:mod:`sepvae.checkpoint`)
into the run folder :mod:`sepvae.layout` names. :func:`train_plans` trains planned runs as
stacks of :mod:`sepvae.ensemble` (Adam, early stopping on a validation part, a NaN guard,
resume from the last finished epoch); :func:`train_models` is the one-run case, in place.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

import sepvae
from sepvae.checkpoint import ModelCard, add_files, read_card, save_checkpoints, save_tensors, verify, write_card
from sepvae.config import FitConfig, Method, SourceMode, StftConfig, TrainConfig, config_hash
from sepvae.io import write_text
from sepvae.ensemble import EpochCallback, Member, fit_ensemble, group_members, merge_histories, whole
from sepvae.errors import SepvaeError
from sepvae.executor import Job, LocalExecutor, Resources, raise_failures
from sepvae.features import FrameSet, Normalization, concat, fit_normalization, fit_scale, load_frames, remix_frames
from sepvae.models import build_model
from sepvae.mixing import Mixture, read_manifest, training_key
from sepvae.stack import batches_per_epoch, model_family


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


def _source_of(frames: FrameSet, name: str) -> str:
    """The source class whose frames model ``name`` estimates: itself, or a speaker's class."""
    if name in frames.sources:
        return name
    for source, speakers in frames.speakers.items():
        if name in speakers:
            return source
    raise KeyError(name)


@dataclass(frozen=True)
class TrainingData:
    """What a run trains on, read where the manifest is: the training mixtures' frames at one
    STFT, the mixtures (remixing reads their sources' files: :func:`plan_models` runs on the
    driver) and what the card says about them. A training job gets frames, never paths."""

    frames: FrameSet
    mixtures: tuple[Mixture, ...]
    training_mixtures: str  # mixing.training_key of the manifest
    manifest: str  # its path, for the card's info only
    input_rms: float | None = None  # the mixtures' median active level (sepvae.loudness)


def training_data(manifest: Path, stft: StftConfig, sample_rate: int) -> TrainingData:
    from sepvae.features import load_mono
    from sepvae.loudness import active_rms

    mixtures = tuple(read_manifest(manifest, "train"))
    level = float(np.median([active_rms(load_mono(m.mixture_path, sample_rate).numpy(), sample_rate) for m in mixtures]))
    return TrainingData(load_frames(list(mixtures), stft, sample_rate), mixtures, training_key(manifest), str(manifest),
                        level)


def _data(method: Method, data: TrainingData | Path, sample_rate: int) -> TrainingData:
    """``data``, or what a manifest given instead holds (:func:`train_models` in tests)."""
    return data if isinstance(data, TrainingData) else training_data(Path(data), method.stft, sample_rate)


def _card(method: Method, data: TrainingData, sample_rate: int, n_bins: int, sources: tuple[str, ...]) -> ModelCard:
    return ModelCard(
        kind=method.kind, source_mode=method.source_mode, sources=sources, sample_rate=sample_rate,
        stft=method.stft, n_bins=n_bins, model=method.model, train=method.train,
        training_mixtures=data.training_mixtures, input_rms=data.input_rms, version=sepvae.__version__,
        info={"method": method.label, "manifest": data.manifest},
    )


@dataclass
class RunPlan:
    """A model method's run folder to fill, ready to train: its frames as the networks see
    them (every job's, training then validation parts) and one ensemble member per model."""

    method: Method
    out: Path
    card: ModelCard
    normalizations: dict[str, Normalization]  # model -> what its network sees
    inputs: Tensor  # (frames, bins)
    targets: dict[str, Tensor]  # source class -> (frames, bins)
    jobs: dict[str, list[Member]]  # job (gender mode: "all"; speaker mode: a speaker) -> its models


def plan_models(method: Method, data: TrainingData | Path, out: Path, sample_rate: int = 16_000) -> RunPlan:
    """What training a model method into run folder ``out`` takes; writes the folder's card.
    ``data``: the training data read once per STFT (or its manifest).

    A job (gender mode: both sources; speaker mode: one speaker) whose checkpoints are
    already in ``out`` and match its card is left out, so an interrupted stage resumes
    where it stopped.
    """
    if method.model is None:
        raise SepvaeError(f"method {method.label!r} ({method.kind}) has no model to train")
    out.mkdir(parents=True, exist_ok=True)
    data = _data(method, data, sample_rate)
    mixtures, frames = data.mixtures, data.frames
    recipe = method.train
    normalization = fit_normalization(frames.mixture, recipe.normalization == "bin", recipe.inputs == "log1p")
    n_bins = normalization.scale.numel()
    if recipe.remix:  # from the sources of the mixtures trained on, never the held-out ones
        held_out = set(_held_out(frames.mixture_index, np.ones(len(frames.mixture_index), dtype=bool), recipe).tolist())
        kept = [m for i, m in enumerate(mixtures) if i not in held_out]
        frames = concat(frames, remix_frames(kept, method.stft, sample_rate, recipe.remix, recipe.remix_gain_db,
                                             recipe.seed, len(mixtures), recipe.remix_speed, recipe.remix_warp,
                                             recipe.remix_tilt_db, recipe.remix_level_db))
    original = frames.mixture_index < len(mixtures)  # remixed mixtures are never held out
    jobs = training_jobs(frames, method.source_mode)
    card = _card(method, data, sample_rate, n_bins, tuple(sorted(n for members in jobs.values() for n in members)))
    if read_card(out) is None:
        write_card(out, card)  # from the start, so `sepvae models` lists the run in progress
    planned: dict[str, list[Member]] = {}
    for job, masks in jobs.items():
        if all(_intact(out, card.weights_file(name)) for name in masks):
            continue
        # In gender mode all models share every frame; in speaker mode a job is one model.
        mask = next(iter(masks.values()))
        is_val = np.isin(frames.mixture_index, _held_out(frames.mixture_index, mask & original, recipe))
        train_part, val_part = mask & ~is_val, mask & is_val
        if not val_part.any():  # one mixture only (a rare speaker): validate on what it trains on
            val_part = train_part
        torch.manual_seed(recipe.seed)  # the sources of a job draw their initial weights in turn
        planned[job] = [
            Member(name, method.model, recipe, torch.from_numpy(np.flatnonzero(train_part)),
                   torch.from_numpy(np.flatnonzero(val_part)), _source_of(frames, name),
                   init=build_model(method.model, n_bins).state_dict())
            for name in sorted(masks)
        ]
    return RunPlan(method, out, card, {name: normalization for name in card.sources}, normalization.inputs(frames.mixture),
                   {k: normalization.targets(v) for k, v in frames.sources.items()}, planned)


def _held_out(mixture_index: np.ndarray, mask: np.ndarray, recipe: TrainConfig) -> np.ndarray:
    """The mixtures (indices) of a job held out for validation; remixed ones never are."""
    job_mixtures = np.unique(mixture_index[mask])
    return job_mixtures[_split_mixtures(len(job_mixtures), recipe.val_fraction, recipe.seed)]


def train_plans(plans: list[RunPlan], device: str = "auto", on_epoch: EpochCallback | None = None,
                workers: int = 1) -> None:
    """Train every job of every plan, as few stacked ensembles as the layer sizes, batch sizes
    and frame counts allow (runs of several methods, sweep points and folds train together),
    then write each run's checkpoints, histories and card. ``workers``: see :func:`fit_stacks`.
    """
    from sepvae.device import pick_device

    torch_device = pick_device(device)
    plans = [plan for plan in plans if plan.jobs]
    if not plans:
        return
    sources = set(plans[0].targets)
    if any(set(plan.targets) != sources for plan in plans):
        raise SepvaeError(f"runs trained together must have the same sources, got {[sorted(p.targets) for p in plans]}")
    if len({plan.inputs.shape[1] for plan in plans}) > 1:
        raise SepvaeError(f"runs trained together must have the same frequency bins, got {[p.inputs.shape[1] for p in plans]}")
    # One frame tensor for all runs; a member's indices point into its own run's part.
    plans, all_inputs, target_stack = join_frames(list(plans))
    all_inputs, target_stack = all_inputs.to(torch_device), target_stack.to(torch_device)
    all_targets = {k: target_stack[i] for i, k in enumerate(sorted(sources))}
    members, owner, offset = [], {}, 0
    for number, plan in enumerate(plans):
        for job, job_members in plan.jobs.items():
            for member in job_members:
                name = f"{number}:{job}:{member.name}"
                owner[name] = (plan, job, member.name)
                members.append(dataclasses.replace(
                    member, name=name, train_index=member.train_index + offset, val_index=member.val_index + offset,
                ))
        offset += len(plan.inputs)

    def label(group):
        return ", ".join(sorted({f"{owner[m.name][0].method.label}" for m in group})) + f" ({len(group)} models)"

    def state(group):
        return plans[0].out.parent / f".stack-{config_hash(sorted(m.name for m in group), [str(p.out) for p in plans])}.pt"

    results = fit_stacks(_stacks(members), all_inputs, all_targets, torch_device, workers, on_epoch, label, state)
    for plan in plans:
        for job in plan.jobs:
            names = {member: f"{plans.index(plan)}:{job}:{member}" for member in (m.name for m in plan.jobs[job])}
            models = {}
            for member, name in names.items():
                network = build_model(plan.method.model, plan.card.n_bins)
                network.load_state_dict(results[name][0])
                models[member] = plan.normalizations[member].model(network.eval())
            save_checkpoints(plan.out, models, plan.card)
            history = merge_histories({member: results[name][1] for member, name in names.items()})
            write_text(plan.out / ("history.json" if job == "all" else f"history-{job}.json"),
                       json.dumps(_renamed(history, names), indent=1) + "\n")


def join_frames(plans: list[RunPlan]) -> tuple[list[RunPlan], Tensor, Tensor]:
    """The runs' frames (as their networks see them) one after the other in one buffer, and
    the plans with theirs as slices of it: ``(plans, inputs, targets)``.

    Each item of the list ``plans`` is replaced by its joined plan as soon as it is copied,
    so that a run's own tensors are freed then unless the caller holds them elsewhere. The
    stage joins each stack's plans so on the driver (:func:`sepvae.jobs.training_jobs`), and
    plans joined before come back as they are, without a copy: the frames of a large stack
    are in memory once while it trains, not also as per-run tensors and their concatenation
    (the 24 runs of unseen-augmented: 4.6 GB of frames, a peak of 5.9 GB resident once
    planned and joined, against 13.0 GB before).

    Shape:
        inputs: ``(frames, bins)``; targets: ``(sources, frames, bins)``, the sources sorted
    """
    keys = sorted(plans[0].targets)
    inputs = whole([plan.inputs for plan in plans])
    targets = whole([plan.targets[k] for k in keys for plan in plans])
    if inputs is not None and targets is not None and targets.shape[0] == len(keys):
        return plans, inputs, targets
    total, bins = sum(len(plan.inputs) for plan in plans), plans[0].inputs.shape[1]
    inputs = plans[0].inputs.new_empty(total, bins)
    targets = plans[0].inputs.new_empty(len(keys), total, bins)
    offset = 0
    for number, plan in enumerate(plans):
        part = slice(offset, offset + len(plan.inputs))
        inputs[part] = plan.inputs
        for i, k in enumerate(keys):
            targets[i, part] = plan.targets[k]
        plans[number] = dataclasses.replace(plan, inputs=inputs[part], targets={k: targets[i, part] for i, k in enumerate(keys)})
        offset = part.stop
    return plans, inputs, targets


def _stacks(members: list[Member]) -> list[list[Member]]:
    """Stacks that waste little: same layer and batch sizes, and frame counts within 1.5x
    (a member with fewer batches idles in the stack while the others finish their epoch)."""
    stacks = []
    for group in group_members(members):
        group = sorted(group, key=lambda m: len(m.train_index))
        current = [group[0]]
        for member in group[1:]:
            if len(member.train_index) > 1.5 * len(current[0].train_index):
                stacks.append(current)
                current = []
            current.append(member)
        stacks.append(current)
    return stacks


def fit_stacks(stacks: list[list[Member]], inputs: Tensor, targets: dict[str, Tensor], device: torch.device,
               workers: int = 1, on_epoch: EpochCallback | None = None,
               label: Callable[[list[Member]], str] = lambda group: f"{len(group)} models",
               state: Callable[[list[Member]], Path | None] = lambda group: None) -> dict[str, tuple]:
    """Each stack by :func:`fit_ensemble` (``label``: its job name in ``on_epoch``; ``state``:
    its resume file, removed when it is done); ``{member name: (best state dict, history)}``.

    With ``workers`` > 1 on the CPU, each stack is split into ``workers`` parts of about equal
    work (:func:`split_stack`), which train side by side in single-thread worker processes of
    a :class:`~sepvae.executor.LocalExecutor` (spawned; tensors reach them in shared memory,
    not copied), the most work first. Otherwise they train one after another here, with this
    process's threads. A stack's small ops between its matmuls run on one core in one
    process, so on 2 cores two single-thread processes beat one of two threads (README:
    Speed); a network trains the same in any part, to float tolerance (tests).
    """
    side_by_side = workers > 1 and device.type == "cpu"
    if side_by_side:
        stacks = sorted((part for stack in stacks for part in split_stack(stack, workers)), key=_work, reverse=True)
    fits = [(group, inputs, targets, device, state(group), label(group)) for group in stacks]
    results: dict[str, tuple] = {}
    if side_by_side and len(fits) > 1:
        jobs = [Job(_fit_stack, args, f"train {args[-1]}", results.update) for args in fits]
        raise_failures(LocalExecutor(Resources(1), workers=workers).map(jobs, on_epoch))
    else:
        for args in fits:
            results.update(_fit_stack(*args, progress=on_epoch))
    return results


def _fit_stack(members: list[Member], inputs: Tensor, targets: dict[str, Tensor], device: torch.device,
               state: Path | None, job: str, progress: EpochCallback | None = None) -> dict[str, tuple]:
    results = fit_ensemble(members, inputs, targets, device, state, progress, job)
    if state is not None:
        state.unlink(missing_ok=True)
    return results


def _work(members: list[Member] | Member) -> int:
    """Adam steps of a member's (or a stack's members') longest possible training."""
    if isinstance(members, Member):
        return batches_per_epoch(members) * members.train.epochs
    return sum(map(_work, members))


def split_stack(stack: list[Member], parts: int) -> list[list[Member]]:
    """``stack`` cut into up to ``parts`` stacks of about equal work, members of one model
    family side by side: the stack ordered VAEs, plain autoencoders, ITL-AEs (in their order
    within each), then cut where the work done crosses each ``k / parts`` of the total. A part
    without VAEs skips their noise and wider heads, one without ITL-AEs their divergence: two
    parts of 4 of the bench's 8 networks train ~15-20 % faster so than with every family in both."""
    ordered = sorted(stack, key=lambda m: model_family(m.model))
    total, done, cut = _work(ordered), 0, [[]]
    for member in ordered:
        # A member goes to the next part when more than half of its work lies past the boundary.
        if cut[-1] and len(cut) < parts and done + _work(member) / 2 > total * len(cut) / parts:
            cut.append([])
        cut[-1].append(member)
        done += _work(member)
    return [sorted(part, key=stack.index) for part in cut]


def _renamed(history: list[dict], names: dict[str, str]) -> list[dict]:
    """A job's history with the stack's member names replaced by the run's model names."""
    back = {name: member for member, name in names.items()}
    return [{back.get(k, k): v for k, v in epoch.items()} for epoch in history]


def train_models(method: Method, data: TrainingData | Path, out: Path, sample_rate: int = 16_000, device: str = "auto",
                 on_epoch: EpochCallback | None = None) -> None:
    """Train a model method's source models into run folder ``out`` (one plan, one stack)."""
    train_plans([plan_models(method, data, out, sample_rate)], device, on_epoch)


def _intact(folder: Path, name: str) -> bool:
    try:
        verify(folder, name)
    except SepvaeError:
        return False
    return True


def train_nmf(method: Method, data: TrainingData | Path, out: Path, sample_rate: int) -> None:
    """Learn one NMF dictionary per source from the training sources' magnitudes into ``out``."""
    from sepvae.nmf import learn_dictionary

    data = _data(method, data, sample_rate)
    frames = data.frames
    dictionaries = {
        name: learn_dictionary(source.T.contiguous(), method.nmf_components, n_iter=200, seed=method.train.seed)
        for name, source in frames.sources.items()
    }
    card = _card(method, data, sample_rate, method.stft.n_bins(sample_rate), tuple(dictionaries))
    add_files(out, card.replace(model=None), {"nmf.pt": lambda tmp: save_tensors(dictionaries, tmp)})


def plan_clean_models(method: Method, data: TrainingData | Path, out: Path, sample_rate: int = 16_000) -> RunPlan:
    """What training a fitting method's source models (:mod:`sepvae.fitting`) into run folder
    ``out`` takes; writes the folder's card.

    Each model learns its source's clean frames: input and target are the same normalized
    source frame, so no mixture pairing is needed. The frames are the sources of the
    manifest's training mixtures (with the gains mixing gave them; in speaker mode, a
    speaker's frames), normalized by the source's own RMS per bin. Every model is a job of
    its own, with its own part of the plan's frames and the validation mixtures held out as in
    :func:`plan_models`; the training stage stacks them with the other runs' networks. A model
    already in ``out`` and matching its card is left out.
    """
    if method.model is None:
        raise SepvaeError(f"method {method.label!r} ({method.kind}) has no model to train")
    out.mkdir(parents=True, exist_ok=True)
    data = _data(method, data, sample_rate)
    frames = data.frames
    n_bins = frames.mixture.shape[1]
    masks = {name: mask for job in training_jobs(frames, method.source_mode).values() for name, mask in job.items()}
    fit_config = method.fit or FitConfig()  # explicit in the card: what `sepvae separate` will do
    card = _card(method, data, sample_rate, n_bins, tuple(sorted(masks))).replace(fit=fit_config)
    if read_card(out) is None:
        write_card(out, card)
    normalizations, parts, planned, offset = {}, [], {}, 0
    for name, mask in sorted(masks.items()):
        if _intact(out, card.weights_file(name)):
            continue
        source = frames.subset(mask).sources[_source_of(frames, name)]
        normalizations[name] = Normalization(fit_scale(source))
        is_val = np.isin(frames.mixture_index[mask], _held_out(frames.mixture_index, mask, method.train))
        # One mixture only (a rare speaker): validate on what it trains on.
        train_part, val_part = ~is_val, is_val if is_val.any() else ~is_val
        torch.manual_seed(method.train.seed)  # every source's model starts from the same draw
        planned[name] = [Member(name, method.model, method.train, torch.from_numpy(np.flatnonzero(train_part)) + offset,
                                torch.from_numpy(np.flatnonzero(val_part)) + offset, _source_of(frames, name),
                                init=build_model(method.model, n_bins).state_dict())]
        parts.append(normalizations[name].targets(source))
        offset += len(source)
    inputs = torch.cat(parts) if parts else frames.mixture[:0]
    # A model's target is its own input: every source class reads the same frames.
    return RunPlan(method, out, card, normalizations, inputs, {k: inputs for k in frames.sources}, planned)
