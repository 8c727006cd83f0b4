"""The stages' independent jobs: what runs on a worker, what goes to it, what comes back.

A job function gets what the driver read (training frames, a model folder's files as bytes,
the test set's audio as arrays) and returns what it made (a model folder's files, estimates,
score rows); it never opens a path of the driver's, so Ray workers need no shared
filesystem. The driver's sinks write the results into the run layout (:mod:`sepvae.layout`)
atomically and mark them done. The local executor calls the same functions in-process
(:mod:`sepvae.executor`), so both make the same files.

One job per output folder (one method's estimates of a test set, the scores of one set of
estimates, an NMF run) or, for training networks, per group of model runs whose networks
stack (:func:`sepvae.train.train_plans`), across methods, sweep points and folds. The
stages in :mod:`sepvae.pipeline` decide which are missing; the builders here describe them
(the training builder plans the model runs on the driver, as the stage always did).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from sepvae.config import Method
from sepvae.errors import SepvaeError
from sepvae.executor import Job, Shared
from sepvae.io import atomic_output, csv_text, read_audio, write_text, write_wav
from sepvae.layout import mark_done
from sepvae.metrics import METRICS
from sepvae.mixing import Mixture, read_manifest

if TYPE_CHECKING:
    from sepvae.train import RunPlan, TrainingData

SCORE_FIELDS = ["mixture_id", "source", *METRICS]
Estimates = dict[str, dict[str, np.ndarray]]  # mixture id -> source -> (time,)


@dataclass(frozen=True)
class FolderFiles:
    """A folder's files as bytes: how a model run travels between driver and worker."""

    files: dict[str, bytes]

    @classmethod
    def of_run(cls, run: Path) -> "FolderFiles":
        """A finished run's card and the files it lists (what a separator loads)."""
        from sepvae.checkpoint import CARD, card_of

        return cls({name: (run / name).read_bytes() for name in (CARD, *card_of(run).sha256)})

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in self.files.items():
            (folder / name).write_bytes(data)
        return folder


@dataclass(frozen=True)
class TestSet:
    """A manifest's test mixtures and the audio of every file they name, read on the driver."""

    __test__ = False  # a test set, not a pytest test class

    mixtures: tuple[Mixture, ...]
    audio: dict[str, tuple[np.ndarray, int]]  # the driver's path -> read_audio's (samples, rate)

    @classmethod
    def read(cls, manifest: Path) -> "TestSet":
        mixtures = tuple(read_manifest(manifest, "test"))
        paths = [p for m in mixtures for p in (m.mixture_path, *m.source_paths.values())]
        return cls(mixtures, {str(p): read_audio(p) for p in paths})

    def sources(self, mixture: Mixture) -> tuple[dict[str, np.ndarray], int]:
        """A mixture's true sources and their sample rate."""
        references, rate = {}, 0
        for name, path in mixture.source_paths.items():
            references[name], rate = self.audio[str(path)]
        return references, rate

    def materialize(self, folder: Path) -> list[Mixture]:
        """The mixtures with their audio written into ``folder`` (float WAV: the same samples
        read back), for the separators, which read the files a mixture names."""
        local = {path: folder / f"{n}.wav" for n, path in enumerate(self.audio)}
        for path, (samples, rate) in self.audio.items():
            write_wav(local[path], samples, rate)
        return [
            replace(m, mixture_path=local[str(m.mixture_path)],
                    source_paths={name: local[str(p)] for name, p in m.source_paths.items()})
            for m in self.mixtures
        ]


# -- training -------------------------------------------------------------------------

def train_stack(plans: list[RunPlan], scratch_keys: tuple[str, ...], device: str,
                progress: Callable | None = None) -> list[FolderFiles]:
    """Train runs planned on the driver (:func:`sepvae.train.plan_models`) together, as the
    stage stacks them (:func:`sepvae.train.train_plans`), each in a scratch folder of the
    machine the job runs on; return each run's files. The scratch folder of one run is
    ``<scratch>/<key>/<key>``, the stack's resume state beside the runs' folders. The job's
    CPUs (the torch threads the executor gave it) train the stacks' parts side by side."""
    import torch

    from sepvae.checkpoint import read_card, write_card
    from sepvae.train import train_plans

    keys = "\n".join(scratch_keys)
    stack = _scratch(keys if len(scratch_keys) == 1 else f"stack-{hashlib.sha256(keys.encode()).hexdigest()[:16]}")
    scratch = [stack / key for key in scratch_keys]
    for plan, folder in zip(plans, scratch):
        folder.mkdir(parents=True, exist_ok=True)
        if read_card(folder) is None:
            write_card(folder, plan.card)
    train_plans([replace(plan, out=folder) for plan, folder in zip(plans, scratch)], device, progress,
                workers=torch.get_num_threads())
    files = [_collect(folder) for folder in scratch]
    shutil.rmtree(stack, ignore_errors=True)
    return files


def train_run(method: Method, data: TrainingData, scratch_key: str, sample_rate: int, device: str,
              progress: Callable | None = None) -> FolderFiles:
    """Train a run by its registry entry's ``train`` (NMF) in a scratch folder; return its files."""
    scratch = _scratch(scratch_key)
    method.entry.train(method, data, scratch, sample_rate, device, progress)
    files = _collect(scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    return files


def _scratch(key: str) -> Path:
    """A run's scratch folder (``key``: :func:`scratch_name`). Kept when training fails, so a
    retry or a rerun on the same machine resumes from the last finished epoch or speaker, as
    training in the run folder did."""
    return Path(tempfile.gettempdir()) / "sepvae-train" / key


def _collect(scratch: Path) -> FolderFiles:
    from sepvae.checkpoint import read_card

    if read_card(scratch) is None:
        raise SepvaeError(f"training wrote no model card into {scratch}")
    return FolderFiles({p.name: p.read_bytes() for p in sorted(scratch.iterdir()) if p.is_file()})


def scratch_name(run: Path) -> str:
    """The run's cache key and a hash of where it lives: two checkouts (or test sessions) on
    one machine training the same configuration do not share a scratch folder."""
    return f"{run.name}-{hashlib.sha256(str(run.resolve()).encode()).hexdigest()[:8]}"


def write_run(run: Path, trained: FolderFiles) -> None:
    """The training sink: a run's files into its folder (weights through the card, so its
    sha256 is of the bytes written here, beside those of intact earlier ones), then ``done``."""
    from sepvae.checkpoint import CARD, ModelCard, add_files

    card = ModelCard.from_json(json.loads(trained.files[CARD]), f"{run}/{CARD} (from the training job)")
    for name, data in trained.files.items():
        if name != CARD and name not in card.sha256:  # histories: not part of the weights
            _write_bytes(run / name, data)
    written = add_files(run, card, {name: partial(Path.write_bytes, data=trained.files[name]) for name in card.sha256})
    if any(written.sha256[name] != sha for name, sha in card.sha256.items()):
        raise SepvaeError(f"{run}: files arrived from the training job with other sha256 than its card lists")
    mark_done(run)


def write_runs(runs: list[Path], trained: list[FolderFiles]) -> None:
    for run, files in zip(runs, trained):
        write_run(run, files)


def training_jobs(todo: dict[Path, tuple[Method, TrainingData, int]], device: str) -> list[Job]:
    """The jobs that fill the run folders in ``todo`` (run folder -> a method it trains, the
    training data, the sample rate): one per group of model runs whose networks can stack
    (layer and batch sizes: :func:`sepvae.stack.stack_key`, and frequency bins), planned
    here on the driver, and one per run of a method without networks (NMF), sharing each
    training data."""
    from sepvae.stack import stack_key
    from sepvae.train import join_frames

    stacks: dict[tuple, dict[Path, RunPlan]] = {}
    shared: dict[int, Shared] = {}
    jobs = []
    for run, (method, data, rate) in todo.items():
        if method.entry.plan is None:
            data = shared.setdefault(id(data), Shared(data))
            jobs.append(Job(train_run, (method, data, scratch_name(run), rate, device), _described({run: method}),
                            partial(write_run, run)))
            continue
        plan = method.entry.plan(method, data, run, rate)
        if not plan.jobs:  # every checkpoint intact (an interrupted stage): only the marker is missing
            mark_done(run)
            continue
        # Runs of one stack share one frame tensor: the same STFT bins, too (sweep-window).
        key = (stack_key(next(iter(plan.jobs.values()))[0]), plan.inputs.shape[1])
        stacks.setdefault(key, {})[run] = plan
    plan = None  # the loop's last plan holds its own frames no longer
    for plans in stacks.values():
        runs = list(plans)
        # One buffer of frames per stack; each run's own tensors are freed once copied.
        joined = list(plans.values())
        plans.clear()
        join_frames(joined)
        jobs.append(Job(train_stack, (joined, tuple(map(scratch_name, runs)), device),
                        _described({run: plan.method for run, plan in zip(runs, joined)}), partial(write_runs, runs)))
    return jobs


def _described(runs: dict[Path, Method]) -> str:
    return "train " + ", ".join(f"{m.label} ({m.source_mode}) [{run.name}]" for run, m in runs.items())


# -- separation -----------------------------------------------------------------------

def separate_test_set(method: Method, run: FolderFiles | None, test: TestSet, sample_rate: int,
                      progress: Callable | None = None) -> Estimates:
    """One method's estimates of every test mixture (``run``: its trained model folder)."""
    from sepvae.features import load_mono

    with tempfile.TemporaryDirectory(prefix="sepvae-separate-") as scratch:
        folder = run.write(Path(scratch) / "run") if run is not None else None
        mixtures = test.materialize(Path(scratch) / "audio")
        separator = method.entry.separator(method, folder, sample_rate)
        estimates = {}
        for done, mixture in enumerate(mixtures, start=1):
            estimates[mixture.id] = separator.separate(mixture, load_mono(mixture.mixture_path, sample_rate))
            if progress:
                progress(method.label, done, len(mixtures))
    return estimates


def write_estimates(out: Path, sample_rate: int, estimates: Estimates) -> None:
    """The separation sink: ``<mixture>/<source>.wav`` under ``out``, then ``done``."""
    for mixture_id, sources in estimates.items():
        for name, estimate in sources.items():
            write_wav(out / mixture_id / f"{name}.wav", estimate, sample_rate)
    mark_done(out)


def separation_jobs(todo: dict[Path, tuple[Method, Path | None]], manifest: Path, sample_rate: int) -> list[Job]:
    """A job per estimates folder to fill (``todo``: folder -> (method, its trained run));
    the test set's audio, and each run's files, are read once and shared."""
    if not todo:
        return []
    test = Shared(TestSet.read(manifest))
    runs: dict[Path, Shared] = {}
    jobs = []
    for out, (method, run) in todo.items():
        if run is not None and run not in runs:
            runs[run] = Shared(FolderFiles.of_run(run))
        jobs.append(Job(
            separate_test_set, (method, runs.get(run), test, sample_rate),
            f"separate {method.label} ({method.source_mode}) [{out.name}]", partial(write_estimates, out, sample_rate),
        ))
    return jobs


# -- scoring --------------------------------------------------------------------------

def score_test_set(test: TestSet, estimates: Estimates, label: str, progress: Callable | None = None) -> list[dict]:
    """Score rows (SCORE_FIELDS, 4 decimals) of one method's estimates of the test set."""
    from sepvae.metrics import score

    rows = []
    for done, mixture in enumerate(test.mixtures, start=1):
        references, rate = test.sources(mixture)
        for name, scores in score(references, estimates[mixture.id], rate).items():
            rows.append({"mixture_id": mixture.id, "source": name, **{k: f"{v:.4f}" for k, v in scores.items()}})
        if progress:
            progress(label, done, len(test.mixtures))
    return rows


def write_scores(cache: Path, rows: list[dict]) -> None:
    write_text(cache, csv_text(rows, SCORE_FIELDS))


def score_jobs(todo: dict[Path, tuple[Method, Path]], manifest: Path) -> list[Job]:
    """A job per scores file to write (``todo``: cache -> (method, its estimates folder)); the
    estimates are read here, on the driver."""
    if not todo:
        return []
    test = TestSet.read(manifest)
    shared = Shared(test)
    jobs = []
    for cache, (method, separations) in todo.items():
        estimates = {
            m.id: {name: read_audio(separations / m.id / f"{name}.wav")[0] for name in m.source_paths}
            for m in test.mixtures
        }
        jobs.append(Job(
            score_test_set, (shared, estimates, method.label),
            f"score {method.label} ({method.source_mode}) [{separations.name}]", partial(write_scores, cache),
        ))
    return jobs


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
