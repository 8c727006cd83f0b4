"""The experiment stages after mixing: train -> separate-set -> evaluate -> report.

Each stage loops over an experiment's methods and asks each method's registry entry
(:mod:`sepvae.methods`) what to do; where the results go is :mod:`sepvae.layout`'s. Outputs
are cached per method under a hash of what determines them, so methods shared between
experiments (the same model at the same settings) are trained, separated and scored once,
and a rerun with nothing changed does nothing.

Only the mixing stage makes mixtures (:func:`mix_all`); the later stages find the
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
from sepvae.io import audio_info, csv_text, file_md5, read_audio, write_text, write_wav
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


def run_of(method: Method, manifest: Path, rate: int, layout: Layout) -> Path | None:
    """A trained method's run folder (None for a method that does not train)."""
    if not method.entry.trains:
        return None
    return layout.model_run(method, training_key(manifest), rate)


def train_all(experiment: Experiment, layout: Layout = Layout(), device: str = "auto", on_epoch=None) -> dict[str, Path]:
    """The training stage: every method that trains, in every fold; label -> run folder.

    The networks of every run still to train (all methods, sweep points and folds) train
    together in as few stacked ensembles as their sizes allow (:func:`train.train_plans`).
    """
    from sepvae.train import train_plans

    runs, plans = {}, {}
    for fold in experiment.folds():
        manifest = find_manifest(fold, layout)
        rate = sample_rate_of(manifest)
        for method in fold.methods:
            run = run_of(method, manifest, rate, layout)
            if run is None:
                continue
            runs[_key(method, fold)] = run
            if run in plans or is_done(run, model_run=True):
                continue
            if method.entry.plan is not None:
                plans[run] = method.entry.plan(method, manifest, run, rate)
            else:
                method.entry.train(method, manifest, run, rate, device, on_epoch)
                mark_done(run)
    train_plans(list(plans.values()), device, on_epoch)
    for run in plans:
        mark_done(run)
    return runs


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


def separate_method(method: Method, manifest: Path, layout: Layout = Layout(), rate: int | None = None,
                    progress: Progress | None = None) -> Path:
    """Separate every test mixture with one method; returns the folder of estimates."""
    from sepvae.features import load_mono

    rate = rate or sample_rate_of(manifest)
    run = _trained_run(method, manifest, rate, layout)
    out = layout.separations(method, run, file_md5(manifest))
    if is_done(out):
        return out
    separator = method.entry.separator(method, run, rate)
    mixtures = read_manifest(manifest, "test")
    for done, mixture in enumerate(mixtures, start=1):
        estimates = separator.separate(mixture, load_mono(mixture.mixture_path, rate))
        for name, estimate in estimates.items():
            write_wav(out / mixture.id / f"{name}.wav", estimate, rate)
        if progress:
            progress(method.label, done, len(mixtures))
    mark_done(out)
    return out


def separate_all(experiment: Experiment, layout: Layout = Layout(), progress: Progress | None = None) -> dict[str, Path]:
    """The separate-set stage: estimates of every test mixture for every method (and fold)."""
    folders = {}
    for fold in experiment.folds():
        manifest = find_manifest(fold, layout)
        rate = sample_rate_of(manifest)
        folders.update({_key(m, fold): separate_method(m, manifest, layout, rate, progress) for m in fold.methods})
    return folders


SCORE_FIELDS = ["mixture_id", "source", *METRICS]


def score_separations(separations: Path, manifest: Path, layout: Layout = Layout(),
                      progress: Progress | None = None, label: str = "") -> list[dict]:
    """Scores of one method's estimates (cached beside the estimates, see the layout)."""
    from sepvae.io import read_csv
    from sepvae.metrics import score

    cache = layout.scores(separations)
    if cache.is_file():
        return read_csv(cache, "scores", tuple(SCORE_FIELDS))[1]
    mixtures = read_manifest(manifest, "test")
    rows = []
    for done, mixture in enumerate(mixtures, start=1):
        references, estimates, rate = {}, {}, None
        for name, path in mixture.source_paths.items():
            references[name], rate = read_audio(path)
            estimates[name], _ = read_audio(separations / mixture.id / f"{name}.wav")
        for name, scores in score(references, estimates, rate).items():
            rows.append({"mixture_id": mixture.id, "source": name, **{k: f"{v:.4f}" for k, v in scores.items()}})
        if progress:
            progress(label, done, len(mixtures))
    write_text(cache, csv_text(rows, SCORE_FIELDS))
    return rows


def evaluate_all(experiment: Experiment, layout: Layout = Layout(), progress: Progress | None = None) -> Path:
    """The evaluate stage: ``metrics.csv`` with one row per (test mixture, source, method)
    and the unprocessed mixture's own scores as ``input_*``; ``training.json``, the example
    spectrogram's arrays and ``separations.json`` (where each method's estimates are) for
    the report."""
    from sepvae.results import COLUMNS

    rows, times, folds = [], {}, []
    for fold in experiment.folds():
        manifest = find_manifest(fold, layout)
        rate = sample_rate_of(manifest)
        fold_rows, folders = _metric_rows(fold, manifest, rate, layout, progress)
        rows += fold_rows
        folds.append({"manifest": str(manifest), "methods": folders})
        for label, fold_times in training_times(fold, manifest, rate, layout).items():
            times.setdefault(label, []).append(fold_times)
    write_text(layout.training(experiment), json.dumps({k: _summed(v) for k, v in times.items()}, indent=1) + "\n")
    # The listening report finds the audio through this file: per fold, the references'
    # manifest and the estimates' folders under the layout's runs root (so a moved project
    # still finds them).
    write_text(layout.separations_index(experiment), json.dumps({"folds": folds}, indent=1) + "\n")
    first = experiment.folds()[0]
    manifest = find_manifest(first, layout)
    example = layout.example(experiment)
    if not spectrogram_example(first, manifest, sample_rate_of(manifest), layout, example):
        example.unlink(missing_ok=True)
    out = layout.metrics(experiment)
    write_text(out, csv_text(rows, list(COLUMNS)))
    return out


def _metric_rows(experiment: Experiment, manifest: Path, rate: int, layout: Layout,
                 progress: Progress | None) -> tuple[list[dict], list[dict]]:
    """metrics.csv rows of one (fold) experiment, each method's scores beside the mixture's,
    and where each method's estimates are (for separations.json)."""
    mixture_method = Method(label="mixture", kind="mixture")
    inputs = {
        (r["mixture_id"], r["source"]): r
        for r in score_separations(separate_method(mixture_method, manifest, layout, rate), manifest, layout,
                                   progress, "mixture")
    }
    rows, folders = [], []
    for method in experiment.methods:
        separations = separate_method(method, manifest, layout, rate)
        folders.append({"method": method.label, "source_mode": str(method.source_mode),
                        "separations": separations.relative_to(layout.runs).as_posix()})
        for row in score_separations(separations, manifest, layout, progress, method.label):
            base = inputs[(row["mixture_id"], row["source"])]
            rows.append({
                "experiment": experiment.name, "method": method.label, "source_mode": str(method.source_mode),
                **row, **{f"input_{m}": base[m] for m in METRICS},
            })
    return rows, folders


def _summed(folds: list[dict]) -> dict:
    """One method's training times over the folds of a cross-validation (one fold: as is)."""
    if len(folds) == 1:
        return folds[0]
    epochs, seconds = sum(f["epochs"] for f in folds), sum(f["seconds"] for f in folds)
    return {**folds[0], "run": f"{len(folds)} folds", "epochs": epochs, "seconds": seconds,
            "seconds_per_epoch": seconds / epochs, "best_epoch": None}


def undefined_counts(metrics_csv: Path) -> dict[str, int]:
    """How many scores of each metric are NaN (undefined) in a metrics.csv."""
    from sepvae.io import read_csv

    rows = read_csv(metrics_csv, "metrics table")[1]
    counts = {metric: sum(row[metric].lower() == "nan" for row in rows) for metric in METRICS}
    return {metric: count for metric, count in counts.items() if count}


def training_times(experiment: Experiment, manifest: Path, rate: int, layout: Layout) -> dict[str, dict]:
    """label (gender mode) or ``label (speaker)`` -> wall time of each trained model method's
    run, from its history files."""
    from sepvae.results import training_summary

    times = {}
    for method in experiment.methods:
        run = run_of(method, manifest, rate, layout)
        histories = sorted(run.glob("history*.json")) if run is not None else []
        if not histories:
            continue
        history = _run_history([json.loads(path.read_text()) for path in histories])
        key = method.label if method.source_mode is SourceMode.GENDER else f"{method.label} ({method.source_mode})"
        times[key] = {
            "source_mode": str(method.source_mode), "run": run.name, **training_summary(history),
            "epoch_budget": method.train.epochs, "batch_size": method.train.batch_size,
        }
    return times


def _run_history(jobs: list[list[dict]]) -> list[dict]:
    """A run's jobs' histories (speaker mode: one per speaker) as one, epoch by epoch. Jobs
    trained in one stack share each epoch's wall time, so an epoch's ``seconds`` sums the
    distinct times of the stacks it ran in, not every job's copy of the same one."""
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
    extra = {"mask_power": candidates[label].mask_power}  # what it was evaluated with: separate's default
    if chosen_by is not None:
        evaluation["chosen_by"] = _card_medians(chosen_by, judged[label])
    manifest = find_manifest(experiment, layout)
    licence = "TIMIT corpus sample, Copyright 1993 Linguistic Data Consortium, CC BY-NC-SA"
    run = _trained_run(candidates[label], manifest, sample_rate_of(manifest), layout)
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
