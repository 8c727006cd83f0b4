"""The experiment stages after mixing: train -> separate-set -> evaluate -> report.

Each stage loops over an experiment's methods and asks each method's registry entry
(:mod:`sepvae.methods`) what to do; where the results go is :mod:`sepvae.layout`'s. Outputs
are cached per method under a hash of what determines them, so methods shared between
experiments (the same model at the same settings) are trained, separated and scored once,
and a rerun with nothing changed does nothing.

A stage decides what is missing and hands the jobs that make it (a group of model runs that
train as stacks, a method's estimates, their scores) to an executor (:mod:`sepvae.executor`:
this process, or Ray tasks); the jobs are :mod:`sepvae.jobs`'s. A job that fails is
reported once all the others have finished, and a rerun does only what is still missing.

Only the mixing stage makes mixtures (:func:`mix_all`); the later stages find the
manifest it wrote (:func:`find_manifest`) and say which command to run when it is missing.
Evaluate writes everything the report needs (scores, training times, the arrays of the
example spectrogram figure), so the report reads results and never runs a model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from sepvae.config import INFERENCE_DEFAULTS, Experiment, Method, SourceMode
from sepvae.errors import SepvaeError
from sepvae.executor import Executor, Failure, Job, LocalExecutor, raise_failures
from sepvae.io import audio_info, csv_text, file_md5, write_text
from sepvae.layout import DONE, Layout, is_done, mark_done
from sepvae.metrics import METRICS
from sepvae.mixing import read_manifest, training_key
from sepvae.results.html import LISTEN_DEFAULT, Listening

Progress = Callable[[str, int, int], None]  # (what, done, total)


def mix_all(experiment: Experiment, layout: Layout = Layout(),
            progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """The mixing stage: the manifest of each fold of the experiment (one without folds has one)."""
    return [manifest_of(fold, layout, progress) for fold in experiment.folds()]


def manifest_of(experiment: Experiment, layout: Layout = Layout(),
                progress: Callable[[int, int], None] | None = None) -> Path:
    """The manifest of one (fold) experiment, made (or found made) from the corpus table,
    or the external manifest the experiment names."""
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


def _folds(experiment: Experiment, layout: Layout) -> list[tuple[Experiment, Path, int]]:
    """Each fold of the experiment (just it, without folds) with its manifest and sample
    rate, found once per stage."""
    folds = []
    for fold in experiment.folds():
        manifest = find_manifest(fold, layout)
        folds.append((fold, manifest, sample_rate_of(manifest)))
    return folds


def run_of(method: Method, manifest: Path, rate: int, layout: Layout) -> Path | None:
    """A trained method's run folder (None for a method that does not train); a method of
    several members: the folder their runs are joined into."""
    if not method.entry.trains:
        return None
    return layout.model_run(method, training_key(manifest), rate)


def member_runs(method: Method, manifest: Path, rate: int, layout: Layout) -> list[Path]:
    """The runs a trained method's networks come from: its own, or one per member."""
    return [run_of(method.member(k), manifest, rate, layout) for k in range(method.members)]


def train_all(experiment: Experiment, layout: Layout = Layout(), device: str = "auto", on_epoch=None,
              executor: Executor | None = None) -> dict[str, Path]:
    """The training stage: every method that trains, in every fold; label -> run folder.

    Finished runs are skipped before any job starts; a run two methods share trains once.
    The networks of every run still to train (all methods, sweep points and folds) train
    together in as few stacked ensembles as their sizes allow (:func:`train.train_plans`):
    one job per group that can stack (:func:`sepvae.jobs.training_jobs`). A method of
    several members trains each member's run (its seed's) and then joins them.
    """
    from sepvae.checkpoint import holds_members, join_members
    from sepvae.jobs import training_jobs
    from sepvae.train import training_data

    runs, todo, data, joins = {}, {}, {}, {}
    for fold, manifest, rate in _folds(experiment, layout):
        for method in fold.methods:
            run = run_of(method, manifest, rate, layout)
            if run is None:
                continue
            runs[_key(method, fold)] = run
            members = member_runs(method, manifest, rate, layout)
            done = [is_done(member, model_run=True) for member in members]
            if method.members > 1 and not (all(done) and is_done(run, model_run=True) and holds_members(run, members)):
                joins.setdefault(run, (members, method.label))  # anew when a member (re)trained
            for k, member in enumerate(members):
                if done[k] or member in todo:
                    continue
                if (manifest, method.stft) not in data:  # read once per fold and STFT, on this machine
                    data[manifest, method.stft] = training_data(manifest, method.stft, rate)
                todo[member] = (method.member(k), data[manifest, method.stft], rate)
    raise_failures(_run(executor, training_jobs(todo, device), on_epoch))
    for run, (members, label) in joins.items():
        (run / DONE).unlink(missing_ok=True)
        join_members(run, members, {"method": label})
        mark_done(run)
    return runs


def _run(executor: Executor | None, jobs: list[Job], progress) -> list[Failure]:
    return (executor or LocalExecutor()).map(jobs, progress)


def _key(method: Method, fold: Experiment) -> str:
    """How a stage names one method's output: ``label (mode)``, plus the fold in a cross-validation."""
    key = f"{method.label} ({method.source_mode})"
    return f"{key} [fold {fold.mix.fold}]" if len(fold.folds()) > 1 else key


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


def _separations(methods: list[Method], manifest: Path, rate: int, layout: Layout) -> tuple[list[Path], list[Job]]:
    """Each method's estimates folder for one (fold's) manifest, and the jobs that fill those not done."""
    from sepvae.jobs import separation_jobs

    test_set = file_md5(manifest)
    outs, todo = [], {}
    for method in methods:
        run = _trained_run(method, manifest, rate, layout)
        outs.append(layout.separations(method, run, test_set))
        if not is_done(outs[-1]):
            todo.setdefault(outs[-1], (method, run))
    return outs, separation_jobs(todo, manifest, rate)


def separate_all(experiment: Experiment, layout: Layout = Layout(), progress: Progress | None = None,
                 executor: Executor | None = None) -> dict[str, Path]:
    """The separate-set stage: estimates of every test mixture for every method (and fold)."""
    folders, jobs = {}, []
    for fold, manifest, rate in _folds(experiment, layout):
        outs, fold_jobs = _separations(fold.methods, manifest, rate, layout)
        folders.update({_key(m, fold): out for m, out in zip(fold.methods, outs)})
        jobs += fold_jobs
    raise_failures(_run(executor, jobs, progress))
    return folders


def _read_scores(cache: Path) -> list[dict]:
    from sepvae.io import read_csv
    from sepvae.jobs import SCORE_FIELDS

    return read_csv(cache, "scores", tuple(SCORE_FIELDS))[1]


def evaluate_all(experiment: Experiment, layout: Layout = Layout(), progress: Progress | None = None,
                 executor: Executor | None = None) -> Path:
    """The evaluate stage: ``metrics.csv`` with one row per (test mixture, source, method)
    and the unprocessed mixture's own scores as ``input_*``; ``training.json``, the example
    spectrogram's arrays and ``separations.json`` (where each method's estimates are) for
    the report.

    Separating what is missing, then scoring, are jobs (every method's and fold's at once);
    when some fail, the others' estimates and scores are still written, and no metrics.csv.
    """
    from sepvae.jobs import score_jobs
    from sepvae.results import COLUMNS

    folds = _folds(experiment, layout)
    mixture = Method(label="mixture", kind="mixture")  # scored first: every method's input_* scores
    estimates, jobs = [], []
    for fold, manifest, rate in folds:
        outs, fold_jobs = _separations([mixture, *fold.methods], manifest, rate, layout)
        estimates.append(outs)
        jobs += fold_jobs
    failures, scoring = _run(executor, jobs, None), []
    for (fold, manifest, _), outs in zip(folds, estimates):
        todo = {layout.scores(out): (m, out) for m, out in zip([mixture, *fold.methods], outs)
                if is_done(out) and not layout.scores(out).is_file()}
        scoring += score_jobs(todo, manifest)
    raise_failures(failures + _run(executor, scoring, progress))
    rows, index = [], []
    for (fold, manifest, _), outs in zip(folds, estimates):
        rows += _metric_rows(fold, outs, layout)
        index.append({"manifest": str(manifest), "methods": [
            {"method": m.label, "source_mode": str(m.source_mode), "separations": out.relative_to(layout.runs).as_posix()}
            for m, out in zip(fold.methods, outs[1:])]})
    write_text(layout.training(experiment), json.dumps(training_times(folds, layout), indent=1) + "\n")
    # The listening report finds the audio through this file: per fold, the references'
    # manifest and the estimates' folders under the layout's runs root (so a moved project
    # still finds them).
    write_text(layout.separations_index(experiment), json.dumps({"folds": index}, indent=1) + "\n")
    example = layout.example(experiment)
    if not spectrogram_example(*folds[0], layout, example):
        example.unlink(missing_ok=True)
    out = layout.metrics(experiment)
    write_text(out, csv_text(rows, list(COLUMNS)))
    return out


def _metric_rows(experiment: Experiment, outs: list[Path], layout: Layout) -> list[dict]:
    """metrics.csv rows of one (fold) experiment from the cached scores: each method's
    (``outs[1:]``: its estimates) beside the mixture's own (``outs[0]``)."""
    inputs = {(r["mixture_id"], r["source"]): r for r in _read_scores(layout.scores(outs[0]))}
    rows = []
    for method, separations in zip(experiment.methods, outs[1:]):
        for row in _read_scores(layout.scores(separations)):
            base = inputs[(row["mixture_id"], row["source"])]
            rows.append({
                "experiment": experiment.name, "method": method.label, "source_mode": str(method.source_mode),
                **row, **{f"input_{m}": base[m] for m in METRICS},
            })
    return rows


def undefined_counts(metrics_csv: Path) -> dict[str, int]:
    """How many scores of each metric are NaN (undefined) in a metrics.csv."""
    from sepvae.io import read_csv

    rows = read_csv(metrics_csv, "metrics table")[1]
    counts = {metric: sum(row[metric].lower() == "nan" for row in rows) for metric in METRICS}
    return {metric: count for metric, count in counts.items() if count}


def training_times(folds: list[tuple[Experiment, Path, int]], layout: Layout) -> dict[str, dict]:
    """label (gender mode) or ``label (speaker)`` -> wall time of each trained model method's
    runs (one per fold), from their history files."""
    from sepvae.results import training_summary

    histories: dict[str, list] = {}
    methods, runs = {}, {}
    for fold, manifest, rate in folds:
        for method in fold.methods:
            if not method.entry.trains:
                continue
            for run in member_runs(method, manifest, rate, layout):
                paths = sorted(run.glob("history*.json"))
                if not paths:
                    continue
                key = method.label if method.source_mode is SourceMode.GENDER else f"{method.label} ({method.source_mode})"
                histories.setdefault(key, []).extend(json.loads(path.read_text()) for path in paths)
                methods[key] = method
                runs.setdefault(key, []).append(run.name)
    return {
        key: {
            "source_mode": str(methods[key].source_mode),
            "run": runs[key][0] if len(runs[key]) == 1 else f"{len(runs[key])} runs",
            **training_summary(_run_history(jobs)),
            "epoch_budget": methods[key].train.epochs, "batch_size": methods[key].train.batch_size,
        }
        for key, jobs in histories.items()
    }


def _run_history(jobs: list[list[dict]]) -> list[dict]:
    """The histories of a method's jobs (speaker mode: one per speaker; one run per fold) as
    one, epoch by epoch. Jobs trained in one stack share each epoch's wall time, so an
    epoch's ``seconds`` sums the distinct times of the stacks it ran in, not every job's copy
    of the same one."""
    epochs: dict[int, dict] = {}
    for history in jobs:
        for logs in history:
            merged = epochs.setdefault(logs["epoch"], {"epoch": logs["epoch"], "stack_seconds": set()})
            merged.update({k: v for k, v in logs.items() if k not in ("epoch", "seconds")})
            merged["stack_seconds"].add(logs["seconds"])
    return [{**{k: v for k, v in e.items() if k != "stack_seconds"}, "seconds": sum(e["stack_seconds"])}
            for _, e in sorted(epochs.items())]


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


def report(experiment: Experiment, layout: Layout = Layout(), listen: int = LISTEN_DEFAULT) -> Path:
    """The report stage: report.md with violins, tables and the spectrogram figure, and
    index.html with the same plus audio players for the first ``listen`` test mixtures, from
    what evaluate wrote and the audio it points to."""
    from sepvae.results import write_report
    from sepvae.results.html import write_report_html

    if listen < 0:
        raise SepvaeError(f"--listen must be 0 or more, got {listen}")
    metrics = layout.metrics(experiment)
    if not metrics.is_file():
        raise SepvaeError(f"{metrics}: not found (run `sepvae evaluate` first)")
    out_dir = metrics.parent
    figure = draw_example(layout.example(experiment), out_dir / "spectrograms.png")
    path = write_report(metrics, out_dir, f"sepvae: {experiment.name}", spectrogram_png=figure)
    write_report_html(metrics, out_dir, f"sepvae: {experiment.name}", listening(experiment, layout, listen),
                      spectrogram_png=figure)
    return path


def listening(experiment: Experiment, layout: Layout, listen: int) -> Listening:
    """The audio of the first ``listen`` test mixtures, found through ``separations.json``;
    what is missing is said in ``Listening.problem``, never raised: the report reads
    results, and its tables stand without the audio."""
    from sepvae.results.html import MixtureAudio

    index = layout.separations_index(experiment)
    if not index.is_file():
        return Listening(problem=f"{index} not found (written by `sepvae evaluate` since the listening report)")
    try:
        folds = [
            (Path(fold["manifest"]),
             {(m["method"], m["source_mode"]): layout.runs / m["separations"] for m in fold["methods"]})
            for fold in json.loads(index.read_text())["folds"]
        ]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise SepvaeError(f"{index}: not a separations index ({type(exc).__name__}: {exc}); rerun `sepvae evaluate`") from None
    shown, total = [], 0
    for manifest, folders in folds:  # the first ``listen`` test mixtures, fold after fold
        if not manifest.is_file():
            return Listening(problem=f"the test mixtures' manifest {manifest} is not here")
        missing = [str(folder) for folder in folders.values() if not is_done(folder)]
        if missing:
            return Listening(problem=f"estimates not found: {', '.join(missing)} (run `sepvae separate-set -c {experiment.path}`)")
        tests = read_manifest(manifest, "test")
        total += len(tests)
        shown += [MixtureAudio(m.id, m.mixture_path, m.source_paths,
                               {key: {s: folder / m.id / f"{s}.wav" for s in m.source_paths}
                                for key, folder in folders.items()})
                  for m in tests[: max(0, listen - len(shown))]]
    return Listening(tuple(shown), total)


def export_model(experiment: Experiment, label: str = "best", name: str = "default",
                 root: Path | None = None, layout: Layout = Layout(), chosen_by: Experiment | None = None) -> Path:
    """Ship a trained gender-mode model pair as ``sepvae/pretrained/<name>`` (``make pretrained``).

    ``label = "best"`` picks the model method with the highest median SDR in the metrics.csv
    of ``chosen_by`` (the unseen-speaker cross-validation: how a user's recording will fare),
    else of ``experiment``; the medians it was chosen by go into the model card, beside the
    experiment's own.
    """
    from sepvae.pretrained import export

    if len(experiment.folds()) > 1:
        raise SepvaeError(f"{experiment.path}: a cross-validation trains one model per fold; export from an "
                          f"experiment that trains on every speaker")
    candidates = {m.label: m for m in experiment.methods if m.entry.has_model and m.source_mode is SourceMode.GENDER}
    scored = _gender_medians(experiment, layout, candidates)
    judged = _gender_medians(chosen_by, layout, candidates) if chosen_by is not None else scored
    if label == "best":
        if not judged:
            raise SepvaeError(f"{layout.metrics(chosen_by or experiment)}: no gender-mode model method of "
                              f"{experiment.path} to choose from")
        label = max(judged.values(), key=lambda row: row["sdr_median"])["method"]
    if label not in scored or label not in judged:
        raise SepvaeError(f"no evaluated gender-mode model method {label!r} in {experiment.path}"
                          f"{f' and {chosen_by.path}' if chosen_by else ''}; have {', '.join(scored)}")
    evaluation = {"method": label, **_card_medians(experiment, scored[label])}
    # What it was evaluated with: separate's defaults.
    chosen = candidates[label]
    extra = {"mask_power": chosen.mask_power, "match_level": chosen.match_level}
    extra.update({name: getattr(chosen, name) for name, paper in INFERENCE_DEFAULTS.items()
                  if getattr(chosen, name) != paper})
    if chosen_by is not None:
        evaluation["chosen_by"] = _card_medians(chosen_by, judged[label])
    manifest = find_manifest(experiment, layout)
    licence = "TIMIT corpus sample, Copyright 1993 Linguistic Data Consortium, CC BY-NC-SA"
    run = _trained_run(chosen, manifest, sample_rate_of(manifest), layout)
    return export(run, name, root=root, extra={**extra, "evaluation": evaluation, "data_licence": licence})


def _gender_medians(experiment: Experiment, layout: Layout, labels) -> dict[str, dict]:
    """method label -> summary row of each gender-mode method in ``labels`` in its metrics.csv."""
    from sepvae.results import read_metrics, summary_table

    metrics = layout.metrics(experiment)
    if not metrics.is_file():
        raise SepvaeError(f"{metrics}: not found (run `sepvae evaluate -c {experiment.path}` first)")
    return {row["method"]: row for row in summary_table(read_metrics(metrics))
            if row["source_mode"] == SourceMode.GENDER and row["method"] in labels}


def _card_medians(experiment: Experiment, row: dict) -> dict:
    return {"experiment": experiment.path, "test_estimates": row["n"],
            **{k: round(v, 3) for k, v in row.items() if k.endswith("_median")}}
