"""The experiment stages after mixing: train -> separate-set -> evaluate -> report.

Each stage loops over an experiment's methods and asks each method's registry entry
(:mod:`sepvae.methods`) what to do; where the results go is :mod:`sepvae.layout`'s. Outputs
are cached per method under a hash of what determines them, so methods shared between
experiments (the same model at the same settings) are trained, separated and scored once,
and a rerun with nothing changed does nothing.

A stage decides what is missing and hands one job per missing output (a model run, a
method's estimates, their scores) to an executor (:mod:`sepvae.executor`: this process, or
Ray tasks); the jobs are :mod:`sepvae.jobs`'s. A job that fails is reported once all the
others have finished, and a rerun does only what is still missing.

Only the mixing stage makes mixtures (:func:`manifest_of`); the later stages find the
manifest it wrote (:func:`find_manifest`) and say which command to run when it is missing.
Evaluate writes everything the report needs (scores, training times, the arrays of the
example spectrogram figure), so the report reads results and never runs a model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from sepvae.config import Experiment, Method, SourceMode
from sepvae.errors import SepvaeError
from sepvae.executor import Executor, Failure, Job, LocalExecutor, raise_failures
from sepvae.io import audio_info, csv_text, file_md5, write_text
from sepvae.layout import DONE, Layout, is_done
from sepvae.metrics import METRICS
from sepvae.mixing import read_manifest, training_key

Progress = Callable[[str, int, int], None]  # (what, done, total)


def manifest_of(experiment: Experiment, layout: Layout = Layout(),
                progress: Callable[[int, int], None] | None = None) -> Path:
    """The mixing stage: the experiment's manifest, made (or found made) from the corpus
    table, or the external manifest the experiment names."""
    from sepvae.corpus import read_corpus_csv
    from sepvae.mixing import make_mixtures

    if experiment.manifest:
        return find_manifest(experiment, layout)
    return make_mixtures(read_corpus_csv(layout.corpus), experiment.mix, layout.mixtures, progress)


def find_manifest(experiment: Experiment, layout: Layout = Layout()) -> Path:
    """The manifest the mixing stage made for ``experiment`` (or its external manifest);
    a one-line SepvaeError saying what to run when there is none."""
    from sepvae.corpus import read_corpus_csv
    from sepvae.mixing import mixtures_dir

    if experiment.manifest:
        manifest = Path(experiment.manifest)
    else:
        manifest = mixtures_dir(layout.mixtures, experiment.mix, read_corpus_csv(layout.corpus)) / "manifest.csv"
    if not manifest.is_file():
        raise SepvaeError(f"{manifest}: manifest not found (run `sepvae mix -c {experiment.path}` first)")
    return manifest


def sample_rate_of(manifest: Path) -> int:
    mixtures = read_manifest(manifest)
    if not mixtures:
        raise SepvaeError(f"{manifest}: lists no mixtures")
    return int(audio_info(mixtures[0].mixture_path).samplerate)


def run_of(method: Method, manifest: Path, rate: int, layout: Layout) -> Path | None:
    """A trained method's run folder (None for a method that does not train)."""
    if not method.entry.trains:
        return None
    return layout.model_run(method, training_key(manifest), rate)


def train_all(experiment: Experiment, layout: Layout = Layout(), device: str = "auto", on_epoch=None,
              executor: Executor | None = None) -> dict[str, Path]:
    """The training stage: every method that trains; label -> run folder. Finished runs are
    skipped before any job starts; a run two methods share is trained once."""
    from sepvae.jobs import training_jobs

    manifest = find_manifest(experiment, layout)
    rate = sample_rate_of(manifest)
    runs = {_key(m): run_of(m, manifest, rate, layout) for m in experiment.methods if m.entry.trains}
    todo = {}
    for method in experiment.methods:
        run = runs.get(_key(method))
        if run is not None and run not in todo and not is_done(run, model_run=True):
            todo[run] = method
    raise_failures(_run(executor, training_jobs(todo, manifest, rate, device), on_epoch))
    return runs


def _run(executor: Executor | None, jobs: list[Job], progress) -> list[Failure]:
    return (executor or LocalExecutor()).map(jobs, progress)


def _key(method: Method) -> str:
    return f"{method.label} ({method.source_mode})"


def _trained_run(method: Method, manifest: Path, rate: int, layout: Layout) -> Path | None:
    """The finished, intact run folder of a trained method; None for one that does not train."""
    from sepvae.checkpoint import verify_folder

    run = run_of(method, manifest, rate, layout)
    if run is None:
        return None
    if not (run / DONE).is_file():
        raise SepvaeError(f"method {method.label!r}: not trained yet (run `sepvae train` first): {run}")
    verify_folder(run)  # a one-line error naming a file that does not match the card
    return run


def _separate(methods: list[Method], manifest: Path, layout: Layout, rate: int, progress: Progress | None,
              executor: Executor | None) -> tuple[list[Path], list[Failure]]:
    """Each method's estimates folder, filling those not done; and the jobs that failed."""
    from sepvae.jobs import separation_jobs

    test_set = file_md5(manifest)
    outs, todo = [], {}
    for method in methods:
        run = _trained_run(method, manifest, rate, layout)
        outs.append(layout.separations(method, run, test_set))
        if not is_done(outs[-1]):
            todo.setdefault(outs[-1], (method, run))
    return outs, _run(executor, separation_jobs(todo, manifest, rate), progress)


def separate_method(method: Method, manifest: Path, layout: Layout = Layout(), rate: int | None = None,
                    progress: Progress | None = None) -> Path:
    """Separate every test mixture with one method; returns the folder of estimates."""
    outs, failures = _separate([method], manifest, layout, rate or sample_rate_of(manifest), progress, None)
    raise_failures(failures)
    return outs[0]


def separate_all(experiment: Experiment, layout: Layout = Layout(), progress: Progress | None = None,
                 executor: Executor | None = None) -> dict[str, Path]:
    """The separate-set stage: estimates of every test mixture for every method."""
    manifest = find_manifest(experiment, layout)
    outs, failures = _separate(list(experiment.methods), manifest, layout, sample_rate_of(manifest), progress, executor)
    raise_failures(failures)
    return {_key(m): out for m, out in zip(experiment.methods, outs)}


def _score(scored: list[tuple[Method, Path]], manifest: Path, layout: Layout, progress: Progress | None,
           executor: Executor | None) -> list[Failure]:
    """Score the estimates folders whose scores are not cached; the jobs that failed."""
    from sepvae.jobs import score_jobs

    todo = {}
    for method, separations in scored:
        if not layout.scores(separations).is_file():
            todo.setdefault(layout.scores(separations), (method, separations))
    return _run(executor, score_jobs(todo, manifest), progress)


def _read_scores(cache: Path) -> list[dict]:
    from sepvae.io import read_csv
    from sepvae.jobs import SCORE_FIELDS

    return read_csv(cache, "scores", tuple(SCORE_FIELDS))[1]


def evaluate_all(experiment: Experiment, layout: Layout = Layout(), progress: Progress | None = None,
                 executor: Executor | None = None) -> Path:
    """The evaluate stage: ``metrics.csv`` with one row per (test mixture, source, method)
    and the unprocessed mixture's own scores as ``input_*``; ``training.json`` and the
    example spectrogram's arrays for the report.

    Separating what is missing, then scoring, are jobs (every method's at once); when some
    fail, the others' estimates and scores are still written, and no metrics.csv.
    """
    from sepvae.results import COLUMNS

    manifest = find_manifest(experiment, layout)
    rate = sample_rate_of(manifest)
    methods = [Method(label="mixture", kind="mixture"), *experiment.methods]
    outs, failures = _separate(methods, manifest, layout, rate, None, executor)
    separated = [(m, out) for m, out in zip(methods, outs) if is_done(out)]
    raise_failures(failures + _score(separated, manifest, layout, progress, executor))
    inputs = {(r["mixture_id"], r["source"]): r for r in _read_scores(layout.scores(outs[0]))}
    rows = []
    for method, separations in zip(methods[1:], outs[1:]):
        for row in _read_scores(layout.scores(separations)):
            base = inputs[(row["mixture_id"], row["source"])]
            rows.append({
                "experiment": experiment.name, "method": method.label, "source_mode": str(method.source_mode),
                **row, **{f"input_{m}": base[m] for m in METRICS},
            })
    write_text(layout.training(experiment), json.dumps(training_times(experiment, manifest, rate, layout), indent=1) + "\n")
    example = layout.example(experiment)
    if not spectrogram_example(experiment, manifest, rate, layout, example):
        example.unlink(missing_ok=True)
    out = layout.metrics(experiment)
    write_text(out, csv_text(rows, list(COLUMNS)))
    return out


def undefined_counts(metrics_csv: Path) -> dict[str, int]:
    """How many scores of each metric are NaN (undefined) in a metrics.csv."""
    from sepvae.io import read_csv

    rows = read_csv(metrics_csv, "metrics table")[1]
    counts = {metric: sum(row[metric].lower() == "nan" for row in rows) for metric in METRICS}
    return {metric: count for metric, count in counts.items() if count}


def training_times(experiment: Experiment, manifest: Path, rate: int, layout: Layout) -> dict[str, dict]:
    """label -> wall time of each trained model method's run, from its history files."""
    from sepvae.results import training_summary

    times = {}
    for method in experiment.methods:
        run = run_of(method, manifest, rate, layout)
        histories = sorted(run.glob("history*.json")) if run is not None else []
        if not histories:
            continue
        history = [epoch for path in histories for epoch in json.loads(path.read_text())]
        times[method.label] = {
            "source_mode": str(method.source_mode), "run": run.name, **training_summary(history),
            "epoch_budget": method.train.epochs, "batch_size": method.train.batch_size,
        }
    return times


def spectrogram_example(experiment: Experiment, manifest: Path, rate: int, layout: Layout, out: Path) -> bool:
    """Save the arrays of the report's spectrogram figure (the first test mixture with the
    first gender-mode model method) to ``out`` (.npz); False if there is none to draw."""
    import io

    import numpy as np
    import torch

    from sepvae.features import load_mono, spectrogram
    from sepvae.io import atomic_output

    method = next((m for m in experiment.methods if m.entry.has_model and m.source_mode is SourceMode.GENDER), None)
    tests = read_manifest(manifest, "test")
    if method is None or not tests:
        return False
    mixture = tests[0]
    run = _trained_run(method, manifest, rate, layout)
    separations = layout.separations(method, run, file_md5(manifest))
    spec = spectrogram(load_mono(mixture.mixture_path, rate), method.stft, rate)
    with torch.no_grad():
        masks = method.entry.separator(method, run, rate).masks(mixture, spec)
    panels = {"mixture": spec.abs().numpy()}
    for name, path in mixture.source_paths.items():
        panels[f"true {name}"] = spectrogram(load_mono(path, rate), method.stft, rate).abs().numpy()
    for name in mixture.source_paths:
        estimate = load_mono(separations / mixture.id / f"{name}.wav", rate)
        panels[f"{method.label} {name}"] = spectrogram(estimate, method.stft, rate).abs().numpy()
    mask_panels = {f"{method.label} mask {n}": m.numpy() for n, m in zip(mixture.source_paths, masks)}
    meta = {"sample_rate": rate, "hop_length": method.stft.hop_length(rate), "mixture": mixture.id,
            "method": method.label, "spectrograms": list(panels), "masks": list(mask_panels)}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, meta=np.array(json.dumps(meta)),
                        **{f"panel{i}": a for i, a in enumerate([*panels.values(), *mask_panels.values()])})
    with atomic_output(out) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return True


def draw_example(example: Path, out_png: Path) -> Path | None:
    """The spectrogram figure from the arrays evaluate saved, or None if there are none."""
    import numpy as np

    from sepvae.results import spectrogram_figure

    if not example.is_file():
        return None
    with np.load(example) as saved:
        meta = json.loads(str(saved["meta"]))
        arrays = [saved[f"panel{i}"] for i in range(len(meta["spectrograms"]) + len(meta["masks"]))]
    n = len(meta["spectrograms"])
    spectrogram_figure(out_png, meta["sample_rate"], meta["hop_length"], dict(zip(meta["spectrograms"], arrays[:n])),
                       dict(zip(meta["masks"], arrays[n:])))
    return out_png


def report(experiment: Experiment, layout: Layout = Layout()) -> Path:
    """The report stage: report.md with violins, tables and the spectrogram figure, from
    what evaluate wrote."""
    from sepvae.results import write_report

    metrics = layout.metrics(experiment)
    if not metrics.is_file():
        raise SepvaeError(f"{metrics}: not found (run `sepvae evaluate` first)")
    out_dir = metrics.parent
    figure = draw_example(layout.example(experiment), out_dir / "spectrograms.png")
    return write_report(metrics, out_dir, f"sepvae: {experiment.name}", spectrogram_png=figure)


def export_model(experiment: Experiment, label: str = "best", name: str = "default",
                 root: Path | None = None, layout: Layout = Layout()) -> Path:
    """Ship a trained gender-mode model pair as ``sepvae/pretrained/<name>`` (``make pretrained``).

    ``label = "best"`` picks the model method with the highest median SDR in the
    experiment's metrics.csv; its evaluation medians go into the model card.
    """
    from sepvae.pretrained import export
    from sepvae.results import read_metrics, summary_table

    metrics = layout.metrics(experiment)
    if not metrics.is_file():
        raise SepvaeError(f"{metrics}: not found (run `sepvae evaluate -c {experiment.path}` first)")
    candidates = {m.label: m for m in experiment.methods if m.entry.has_model and m.source_mode is SourceMode.GENDER}
    scored = {row["method"]: row for row in summary_table(read_metrics(metrics))
              if row["source_mode"] == str(SourceMode.GENDER) and row["method"] in candidates}
    if label == "best":
        if not scored:
            raise SepvaeError(f"{metrics}: no gender-mode model method to export")
        label = max(scored.values(), key=lambda row: row["sdr_median"])["method"]
    if label not in scored:
        raise SepvaeError(f"no evaluated gender-mode model method {label!r} in {experiment.path}; have {', '.join(scored)}")
    manifest = find_manifest(experiment, layout)
    evaluation = {
        "experiment": experiment.path, "method": label, "test_estimates": scored[label]["n"],
        **{k: round(v, 3) for k, v in scored[label].items() if k.endswith("_median")},
    }
    licence = "TIMIT corpus sample, Copyright 1993 Linguistic Data Consortium, CC BY-NC-SA"
    run = _trained_run(candidates[label], manifest, sample_rate_of(manifest), layout)
    return export(run, name, root=root, extra={"evaluation": evaluation, "data_licence": licence})
