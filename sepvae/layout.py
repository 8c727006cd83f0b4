"""Where every stage's output lives, and when it is finished: the run layout, in one place.

    data/corpus.csv                                corpus table (sepvae.corpus)
    data/mixtures/<hash>/manifest.csv + WAVs       mixtures (sepvae.mixing)
    runs/models/<kind>-<mode>-<hash>/              model.json card, <source>.pt (or nmf.pt),
                                                   history*.json, done
    runs/models/<kind>-<mode>-<hash>-x<n>/         n runs of other seeds joined: <source>.<k>.pt
    runs/separations/<key>/<mixture>/<source>.wav  estimates of the test mixtures, done
    runs/scores/<key>.csv                          scores of those estimates
    reports/<experiment>/metrics.csv               one row per (mixture, source, method)
    reports/<experiment>/training.json             training wall times of the trained methods
    reports/<experiment>/example.npz               arrays of the report's spectrogram figure
    reports/<experiment>/separations.json          each method's estimates (under runs/) and the manifest
    reports/<experiment>/report.md, *.png, summary.json
    reports/<experiment>/index.html, audio/        the listening report

A model run is named by a hash of what determines its weights (the method's registry entry
says which settings: :attr:`MethodEntry.run_fields`), the training mixtures and the sample
rate, so methods shared between experiments are trained once. Estimates and scores add the
test set. A folder is finished when it holds its ``done`` marker, which is written last; a
model run only when, in addition, every file its card lists has the card's sha256.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sepvae.config import Experiment, Method, config_hash
from sepvae.errors import SepvaeError
from sepvae.io import write_text

DONE = "done"


@dataclass(frozen=True)
class Layout:
    """The roots of a project's generated files (defaults: relative to the working folder)."""

    corpus: Path = Path("data/corpus.csv")
    mixtures: Path = Path("data/mixtures")
    runs: Path = Path("runs")
    reports: Path = Path("reports")

    def model_run(self, method: Method, training_mixtures: str, sample_rate: int) -> Path:
        """The run folder of a trained method (``training_mixtures``: mixing.training_key)."""
        fields = method.entry.run_fields
        if fields is None:
            raise SepvaeError(f"method {method.label!r} ({method.kind}) is not trained")
        if method.members > 1:  # its members' runs, joined (sepvae.checkpoint.join_members)
            alone = self.model_run(method.member(0), training_mixtures, sample_rate)
            return alone.with_name(f"{alone.name}-x{method.members}")
        key = config_hash(fields(method), {"training_mixtures": training_mixtures, "sample_rate": sample_rate})
        return self.runs / "models" / f"{method.kind}-{method.source_mode}-{key}"

    def separations(self, method: Method, run: Path | None, test_set: str) -> Path:
        """Estimates of the test set (``test_set``: the manifest's hash) by one method.

        Models depend on the training mixtures only (their run), estimates on the test
        mixtures too: the ``-large`` experiments share models but not test sets.
        """
        if run is not None:
            key = f"{run.name}-{config_hash(test_set)}"
        else:
            stft = method.stft if method.entry.uses_stft else None
            key = f"{method.kind}-{config_hash(stft, test_set)}"
        inference = f"-p{method.mask_power:g}{'-level' if method.match_level else ''}"
        if method.phase_iterations:
            inference += f"-misi{method.phase_iterations}"
        if method.shifts > 1:
            inference += f"-shifts{method.shifts}"
        if method.smooth_frames:
            inference += f"-smooth{method.smooth_frames}"
        return self.runs / "separations" / f"{key}{inference}"

    def scores(self, separations: Path) -> Path:
        return self.runs / "scores" / f"{separations.name}.csv"

    def report_dir(self, experiment: Experiment) -> Path:
        return self.reports / experiment.name

    def metrics(self, experiment: Experiment) -> Path:
        return self.report_dir(experiment) / "metrics.csv"

    def training(self, experiment: Experiment) -> Path:
        return self.report_dir(experiment) / "training.json"

    def example(self, experiment: Experiment) -> Path:
        return self.report_dir(experiment) / "example.npz"

    def separations_index(self, experiment: Experiment) -> Path:
        return self.report_dir(experiment) / "separations.json"


def is_done(folder: Path, model_run: bool = False) -> bool:
    """Whether ``folder`` is finished; a ``model_run`` also needs a card that every file it
    lists matches (a corrupted or replaced checkpoint makes the run unfinished)."""
    if not (folder / DONE).is_file():
        return False
    if model_run:
        from sepvae.checkpoint import verify_folder

        try:
            verify_folder(folder)
        except SepvaeError:
            return False
    return True


def mark_done(folder: Path) -> None:
    write_text(folder / DONE, "")
