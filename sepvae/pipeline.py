"""The experiment stages after mixing: train -> separate-set -> evaluate -> report.

Each stage works on every method of an experiment file and caches per method in ``runs/``
under a hash of what determines its output, so methods shared between experiments (the
same model at the same settings) are trained, separated and scored once, and a rerun with
nothing changed does nothing.

Layout:
    runs/models/<kind>-<mode>-<hash>/          checkpoints, config.json, history.json
    runs/separations/<key>/<mixture>/<src>.wav estimates of the test mixtures
    runs/scores/<key>.csv                      scores of those estimates
    reports/<experiment>/metrics.csv, report.md, *.png, summary.json
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sepvae.io import audio_info, csv_text, file_md5, read_audio, write_text, write_wav
from sepvae.config import Experiment, Method, config_hash
from sepvae.errors import SepvaeError
from sepvae.metrics import METRICS
from sepvae.mixing import Mixture, read_manifest

Progress = Callable[[str, int, int], None]  # (what, done, total)


@dataclass(frozen=True)
class Paths:
    corpus: Path = Path("data/corpus.csv")
    mixtures: Path = Path("data/mixtures")
    runs: Path = Path("runs")
    reports: Path = Path("reports")


def manifest_of(experiment: Experiment, paths: Paths = Paths(), progress: Callable[[int, int], None] | None = None,
                make: bool = True) -> Path:
    """The mixing stage: the experiment's manifest, made (or found made) from the corpus
    table, or the external manifest the experiment names. ``make=False`` only says where
    it is (or would be), without mixing."""
    from sepvae.corpus import read_corpus_csv
    from sepvae.mixing import make_mixtures, mixtures_dir

    if experiment.manifest:
        manifest = Path(experiment.manifest)
        if make and not manifest.is_file():
            raise SepvaeError(f"{manifest}: manifest not found")
        return manifest
    utterances = read_corpus_csv(paths.corpus)
    if not make:
        return mixtures_dir(paths.mixtures, experiment.mix, utterances) / "manifest.csv"
    return make_mixtures(utterances, experiment.mix, paths.mixtures, progress)


def sample_rate_of(manifest: Path) -> int:
    mixtures = read_manifest(manifest)
    if not mixtures:
        raise SepvaeError(f"{manifest}: lists no mixtures")
    return int(audio_info(mixtures[0].mixture_path).samplerate)


def train_all(experiment: Experiment, paths: Paths = Paths(), device: str = "auto", on_epoch=None) -> dict[str, Path]:
    """The training stage: every model method of the experiment; label -> run directory."""
    from sepvae.train import train_method, train_nmf

    manifest = manifest_of(experiment, paths)
    rate = sample_rate_of(manifest)
    runs = {}
    for method in experiment.methods:
        if method.model is not None:
            runs[_key(method)] = train_method(method, manifest, paths.runs, device, on_epoch, rate)
        elif method.kind == "nmf":
            runs[_key(method)] = train_nmf(method, manifest, paths.runs, rate)
    return runs


def _key(method: Method) -> str:
    return f"{method.label} ({method.source_mode})"


def _separation_key(method: Method, manifest: Path, paths: Paths, rate: int) -> str:
    from sepvae.train import run_dir

    # Models depend on the training mixtures only; their estimates on the test mixtures too
    # (the -large experiments share models but not test sets).
    test_set = file_md5(manifest)
    if method.kind == "nmf" or method.model is not None:
        return f"{run_dir(method, manifest, rate, paths.runs).name}-{config_hash(test_set)}-p{method.mask_power:g}"
    return f"{method.kind}-{config_hash(method.stft if method.kind != 'mixture' else None, test_set)}-p{method.mask_power:g}"


def _mask_function(method: Method, run: Path | None, mixture: Mixture, rate: int, cache: dict):
    """mask_fn(spec (bins, frames)) -> masks (sources, bins, frames), and the source names."""
    import torch

    from sepvae.features import load_mono, spectrogram
    from sepvae.filtering import ideal_binary_mask, ideal_ratio_mask, ratio_mask

    names = list(mixture.source_paths)
    if method.kind in ("oracle-irm", "oracle-ibm"):
        specs = spectrogram(torch.stack([load_mono(mixture.source_paths[n], rate) for n in names]), method.stft, rate)
        if method.kind == "oracle-irm":
            return (lambda spec: ideal_ratio_mask(specs, power=method.mask_power)), names
        return (lambda spec: ideal_binary_mask(specs)), names
    if method.kind == "nmf":
        from sepvae.nmf import nmf_estimates

        if "nmf" not in cache:
            cache["nmf"] = torch.load(run / "nmf.pt", weights_only=True)
        dictionaries = {n: cache["nmf"][n] for n in names}

        def nmf_mask(spec):
            estimates = nmf_estimates(spec.abs(), dictionaries, n_iter=100)
            return ratio_mask(torch.stack([estimates[n] for n in names]), power=method.mask_power)

        return nmf_mask, names
    from sepvae.separator import Separator

    if method.source_mode == "speaker":
        checkpoints = {n: run / f"{mixture.speakers[n]}.pt" for n in names}
        missing = [str(p) for p in checkpoints.values() if not p.is_file()]
        if missing:
            raise SepvaeError(
                f"mixture {mixture.id}: no speaker model {', '.join(missing)}; speaker mode needs "
                f"test speakers seen in training (mix split = 'utterance')"
            )
        key = tuple(checkpoints.values())
        if key not in cache:
            cache[key] = Separator.from_checkpoints(checkpoints, device="cpu", mask_power=method.mask_power)
        separator = cache[key]
    else:
        if "separator" not in cache:
            cache["separator"] = Separator.from_run(run, names, device="cpu", mask_power=method.mask_power)
        separator = cache["separator"]
    return separator.mask, names


def separate_method(method: Method, manifest: Path, paths: Paths = Paths(), rate: int | None = None,
                    progress: Progress | None = None) -> Path:
    """Separate every test mixture with one method; returns the folder of estimates."""
    import torch

    from sepvae.features import load_mono
    from sepvae.separator import separate_with_masks
    from sepvae.train import run_dir

    rate = rate or sample_rate_of(manifest)
    out = paths.runs / "separations" / _separation_key(method, manifest, paths, rate)
    if (out / "done").is_file():
        return out
    run = run_dir(method, manifest, rate, paths.runs) if (method.model is not None or method.kind == "nmf") else None
    if run is not None and not (run / "done").is_file():
        raise SepvaeError(f"method {method.label!r}: not trained yet (run `sepvae train` first)")
    mixtures = read_manifest(manifest, "test")
    cache: dict = {}
    for done, mixture in enumerate(mixtures, start=1):
        waveform = load_mono(mixture.mixture_path, rate)
        if method.kind == "mixture":
            estimates = {n: waveform.numpy() for n in mixture.source_paths}
        else:
            mask_fn, names = _mask_function(method, run, mixture, rate, cache)
            with torch.no_grad():
                separated, _ = separate_with_masks(waveform, mask_fn, method.stft, rate)
            estimates = {n: s.numpy() for n, s in zip(names, separated)}
        for name, estimate in estimates.items():
            write_wav(out / mixture.id / f"{name}.wav", estimate, rate)
        if progress:
            progress(method.label, done, len(mixtures))
    write_text(out / "done", "")
    return out


def separate_all(experiment: Experiment, paths: Paths = Paths(), progress: Progress | None = None) -> dict[str, Path]:
    """The separate-set stage: estimates of every test mixture for every method."""
    manifest = manifest_of(experiment, paths)
    rate = sample_rate_of(manifest)
    return {_key(m): separate_method(m, manifest, paths, rate, progress) for m in experiment.methods}


SCORE_FIELDS = ["mixture_id", "source", *METRICS]


def score_separations(separations: Path, manifest: Path, progress: Progress | None = None, label: str = "") -> list[dict]:
    """Scores of one method's estimates (cached as runs/scores/<key>.csv)."""
    from sepvae.metrics import score

    cache = separations.parent.parent / "scores" / f"{separations.name}.csv"
    if cache.is_file():
        with open(cache, newline="") as handle:
            return list(csv.DictReader(handle))
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


def metrics_path(experiment: Experiment, paths: Paths = Paths()) -> Path:
    return paths.reports / experiment.name / "metrics.csv"


def evaluate_all(experiment: Experiment, paths: Paths = Paths(), progress: Progress | None = None) -> Path:
    """The evaluate stage: one row per (test mixture, source, method) in metrics.csv,
    with the unprocessed mixture's own scores as ``input_*``."""
    manifest = manifest_of(experiment, paths)
    rate = sample_rate_of(manifest)
    mixture_method = Method(label="mixture", kind="mixture")
    inputs = {
        (r["mixture_id"], r["source"]): r
        for r in score_separations(separate_method(mixture_method, manifest, paths, rate), manifest, progress, "mixture")
    }
    rows = []
    for method in experiment.methods:
        separations = separate_method(method, manifest, paths, rate)
        for row in score_separations(separations, manifest, progress, method.label):
            base = inputs[(row["mixture_id"], row["source"])]
            rows.append({
                "experiment": experiment.name, "method": method.label, "source_mode": method.source_mode,
                **row, **{f"input_{m}": base[m] for m in METRICS},
            })
    from sepvae.report import COLUMNS

    out = metrics_path(experiment, paths)
    write_text(out, csv_text(rows, list(COLUMNS)))
    return out


def spectrogram_example(experiment: Experiment, paths: Paths, out_png: Path) -> Path | None:
    """The spectrogram figure of the first test mixture with the first model method."""
    import torch

    from sepvae.features import load_mono, spectrogram
    from sepvae.report import spectrogram_figure
    from sepvae.train import run_dir

    method = next((m for m in experiment.methods if m.model is not None and m.source_mode == "gender"), None)
    if method is None:
        return None
    manifest = manifest_of(experiment, paths)
    rate = sample_rate_of(manifest)
    tests = read_manifest(manifest, "test")
    if not tests:
        return None
    mixture = tests[0]
    separations = paths.runs / "separations" / _separation_key(method, manifest, paths, rate)
    mask_fn, names = _mask_function(method, run_dir(method, manifest, rate, paths.runs), mixture, rate, {})
    waveform = load_mono(mixture.mixture_path, rate)
    spec = spectrogram(waveform, method.stft, rate)
    with torch.no_grad():
        masks = mask_fn(spec)
    spectrograms = {"mixture": spec.abs().numpy()}
    for name in names:
        spectrograms[f"true {name}"] = spectrogram(load_mono(mixture.source_paths[name], rate), method.stft, rate).abs().numpy()
    for name in names:
        estimate = load_mono(separations / mixture.id / f"{name}.wav", rate)
        spectrograms[f"{method.label} {name}"] = spectrogram(estimate, method.stft, rate).abs().numpy()
    spectrogram_figure(
        out_png, rate, method.stft.hop_length(rate), spectrograms,
        {f"{method.label} mask {n}": m.numpy() for n, m in zip(names, masks)},
    )
    return out_png


def report(experiment: Experiment, paths: Paths = Paths()) -> Path:
    """The report stage: report.md with violins and tables from metrics.csv."""
    from sepvae.report import write_report

    metrics = metrics_path(experiment, paths)
    if not metrics.is_file():
        raise SepvaeError(f"{metrics}: not found (run `sepvae evaluate` first)")
    out_dir = metrics.parent
    figure = spectrogram_example(experiment, paths, out_dir / "spectrograms.png")
    return write_report(metrics, out_dir, f"sepvae: {experiment.name}", spectrogram_png=figure)


def export_model(experiment: Experiment, label: str = "best", name: str = "default",
                 root: Path | None = None, paths: Paths = Paths()) -> Path:
    """Ship a trained gender-mode model pair as ``sepvae/pretrained/<name>`` (``make pretrained``).

    ``label = "best"`` picks the model method with the highest median SDR in the
    experiment's metrics.csv; its evaluation medians go into the model card.
    """
    from sepvae.pretrained import export
    from sepvae.report import read_metrics, summary_table
    from sepvae.train import run_dir

    metrics = metrics_path(experiment, paths)
    if not metrics.is_file():
        raise SepvaeError(f"{metrics}: not found (run `sepvae evaluate -c {experiment.path}` first)")
    candidates = {m.label: m for m in experiment.methods if m.model is not None and m.source_mode == "gender"}
    scored = {row["method"]: row for row in summary_table(read_metrics(metrics))
              if row["source_mode"] == "gender" and row["method"] in candidates}
    if label == "best":
        if not scored:
            raise SepvaeError(f"{metrics}: no gender-mode model method to export")
        label = max(scored.values(), key=lambda row: row["sdr_median"])["method"]
    if label not in scored:
        raise SepvaeError(f"no evaluated gender-mode model method {label!r} in {experiment.path}; have {', '.join(scored)}")
    manifest = manifest_of(experiment, paths)
    evaluation = {
        "experiment": experiment.path, "method": label, "test_estimates": scored[label]["n"],
        **{k: round(v, 3) for k, v in scored[label].items() if k.endswith("_median")},
    }
    licence = "TIMIT corpus sample, Copyright 1993 Linguistic Data Consortium, CC BY-NC-SA"
    run = run_dir(candidates[label], manifest, sample_rate_of(manifest), paths.runs)
    return export(run, name, root=root, extra={"evaluation": evaluation, "data_licence": licence})
