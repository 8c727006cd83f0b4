"""The `sepvae` command line: each command parses options and calls one library function.

Heavy modules (torch, metrics, plotting) are imported inside the commands so that
`sepvae --help` stays fast.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Optional

import typer

from sepvae.errors import SIGNALS, Interrupted, SepvaeError

app = typer.Typer(
    help="Two-speaker speech separation with variational autoencoders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DEFAULT_CONFIG = Path("experiments/reproduce.toml")
ConfigOption = typer.Option(DEFAULT_CONFIG, "--config", "-c", help="Experiment file (TOML).")
AllowTruncatedOption = typer.Option(
    False, "--allow-truncated",
    help="Use audio files whose data end before their header says, with a warning (default: an error).",
)
BOOLEAN_WORDS = ("true", "false", "yes", "no", "on", "off", "1", "0")


def user_errors(command):
    """Print a SepvaeError as one line on stderr and exit 1; never a traceback for bad input.

    SIGINT and SIGTERM end the command with ``interrupted by SIG...`` and exit 128 + the
    signal's number, after its temporary files are removed.
    """

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            with _signals_interrupt():
                return command(*args, **kwargs)
        except SepvaeError as exc:
            for line in str(exc).splitlines():  # one line per failed job (sepvae.executor.JobsFailed)
                typer.echo(f"error: {line}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", signal.SIGINT)
            typer.echo(f"interrupted by {signal.Signals(signum).name}", err=True)
            raise typer.Exit(128 + signum) from None

    return wrapper


@contextlib.contextmanager
def _signals_interrupt():
    """Turn SIGTERM (what kill, systemd, Slurm and CI send) into an exception like Ctrl-C's.

    By default SIGTERM ends the process at once and no ``finally`` runs, leaving the
    temporary ``.part`` files of the outputs behind. A signal the parent ignores stays
    ignored (as Python does for SIGINT), and a second signal does not cut the clean-up short.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers (e.g. the CLI run from a worker thread)
        return
    received = SIGNALS.received
    received.clear()

    def interrupt(signum, frame):
        if not received:
            received.append(signum)
            if not SIGNALS.deferred:
                raise Interrupted(signum)

    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, interrupt)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:  # raised where Python only prints it (a __del__, a C callback): still end
        raise Interrupted(received[0])


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"), transient=not sys.stderr.isatty(),
        console=_console(),
    )


def _per_label(progress, verb: str):
    """A (label, done, total) callback that keeps one progress bar per label."""
    tasks = {}

    def update(label, done, total):
        if label not in tasks:
            tasks[label] = progress.add_task(f"{verb} {label}", total=total, info="")
        progress.update(tasks[label], completed=done)

    return update


# The stage commands' executor options; `with_executor` adds them to a command.
EXECUTOR_OPTIONS = {
    "executor": (str, typer.Option("local", "--executor", help="local: the jobs on this machine (--workers at once); ray: each job a Ray task (Ray is an optional extra, see README).")),
    "workers": (Optional[int], typer.Option(None, "--workers", min=1, help="local: how many jobs run at once, each in a worker process (1: one after another in this process). Default: as many as the machine's CPUs hold jobs of --num-cpus.")),
    "address": (Optional[str], typer.Option(None, "--address", envvar="RAY_ADDRESS", help="Ray cluster to join; 'auto': the one `ray start --head` started on this machine. Default: a new local Ray.")),
    "num_cpus": (float, typer.Option(1.0, "--num-cpus", help="CPUs each job declares (and its torch and BLAS threads; a training job trains its stacks as that many parts side by side, one process of one thread each).")),
    "num_gpus": (float, typer.Option(0.0, "--num-gpus", help="GPUs each job declares (Ray places it on a node with them).")),
    "retries": (int, typer.Option(0, "--retries", min=0, help="How often a job that raises is run again before it is reported.")),
}


def with_executor(command):
    """Add the EXECUTOR_OPTIONS to a command; it receives them as one dict ``executor``."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from sepvae.executor import Resources

        options = {name: kwargs.pop(name) for name in EXECUTOR_OPTIONS}
        # A job here gets the BLAS threads it declares, as on a Ray worker: idle BLAS threads
        # busy-wait, and on this loaded 2-core machine two of them made a local `sepvae
        # evaluate` 6x slower than one (143 s against 23 s, README). Read when numpy loads, so
        # set only before that (not in a test session, whose later subprocesses would inherit it).
        if "numpy" not in sys.modules:
            os.environ.setdefault("OMP_NUM_THREADS", str(Resources(options["num_cpus"]).threads))
        # OMP_WAIT_POLICY is left to libgomp's default (spin briefly, then sleep): on an idle
        # 2-core machine it trains the stack 1.9x faster than PASSIVE's sleeping threads; where
        # another process holds a core, two threads of any policy lose to one (--num-cpus 1).
        return command(*args, executor=options, **kwargs)

    signature = inspect.signature(command)
    parameters = [p for p in signature.parameters.values() if p.name != "executor"] + [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
        for name, (kind, option) in EXECUTOR_OPTIONS.items()
    ]
    wrapper.__signature__ = signature.replace(parameters=parameters)
    wrapper.__annotations__ = {**command.__annotations__, **{name: kind for name, (kind, _) in EXECUTOR_OPTIONS.items()}}
    return wrapper


def _executor(options: dict, progress):
    """The executor the options name, reporting jobs done / running / failed on ``progress``."""
    from sepvae.executor import Resources, make_executor

    tasks = []

    def status(done, pending, failed, total):
        if not tasks:
            tasks.append(progress.add_task("jobs", total=total, info=""))
        waiting = "running" if executor.workers == 1 else "running or queued"
        progress.update(tasks[0], completed=done + failed, total=total,
                        info=f"{done} done, {pending} {waiting}, {failed} failed")

    resources = Resources(options["num_cpus"], options["num_gpus"])
    executor = make_executor(options["executor"], options["address"], resources, options["retries"], status,
                             options["workers"])
    return executor


def _console():
    from rich.console import Console

    return Console(stderr=True)


@app.command()
@user_errors
def data(
    timit_root: Optional[Path] = typer.Option(
        None, help="TIMIT folder (sample or LDC layout). Default: $TIMIT_ROOT, else data/raw/timit, else download the free sample."
    ),
    corpus_csv: Optional[Path] = typer.Option(None, help="Use any corpus given as a CSV of path, speaker, gender."),
    out: Path = typer.Option(Path("data/corpus.csv"), help="Where to write the corpus table."),
    download: bool = typer.Option(True, help="Download the free TIMIT sample when no TIMIT is found."),
    allow_truncated: bool = AllowTruncatedOption,
):
    """Index TIMIT (either layout) into a corpus table."""
    import warnings

    from sepvae.corpus import build_corpus
    from sepvae.errors import SepvaeWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SepvaeWarning)
        path, utterances = build_corpus(timit_root, corpus_csv, out, download=download, allow_truncated=allow_truncated)
    for warning in caught:
        if isinstance(warning.message, SepvaeWarning):
            typer.echo(f"warning: {warning.message.path}: {warning.message}", err=True)
    speakers = {(u.speaker, u.gender) for u in utterances}
    n_male = sum(1 for _, g in speakers if g == "male")
    typer.echo(
        f"{path}: {len(utterances)} utterances, {len(speakers)} speakers "
        f"({n_male} male, {len(speakers) - n_male} female)"
    )


@app.command()
@user_errors
def mix(
    config: Path = ConfigOption,
    corpus: Path = typer.Option(Path("data/corpus.csv"), help="Corpus table from `sepvae data`."),
    out: Path = typer.Option(Path("data/mixtures"), help="Root folder of generated mixtures (later stages read data/mixtures)."),
):
    """Mix male + female utterances by the experiment's seeded protocol (README: Mixing protocol)."""
    from sepvae.layout import Layout
    from sepvae.mixing import read_manifest
    from sepvae.pipeline import mix_all

    experiment = _experiment(config)
    with _progress() as progress:
        task = progress.add_task("mixing", total=None, info="")
        manifests = mix_all(
            experiment, Layout(corpus=corpus, mixtures=out),
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    for manifest in manifests:
        n_train, n_test = len(read_manifest(manifest, "train")), len(read_manifest(manifest, "test"))
        typer.echo(f"{manifest}: {n_train} train + {n_test} test mixtures")


def _experiment(config: Path):
    from sepvae.config import load_experiment

    return load_experiment(config)


DeviceOption = typer.Option("auto", help="auto (cuda, then mps, then cpu), cpu, cuda or mps.")


@app.command()
@user_errors
@with_executor
def train(config: Path = ConfigOption, device: str = DeviceOption, executor: dict = None):
    """Train one model per source for every model method of the experiment (cached)."""
    from sepvae.pipeline import train_all

    experiment = _experiment(config)
    with _progress() as progress:
        tasks = {}

        def on_epoch(job, epoch, epochs, logs):
            if job not in tasks:
                tasks[job] = progress.add_task(f"train {job}", total=epochs, info="")
            losses = "  ".join(
                f"{name}: loss {v['loss']:.3g} val {v['val_recon']:.3g}"
                for name, v in logs.items() if isinstance(v, dict)
            )
            progress.update(tasks[job], completed=epoch, info=losses)
            if not sys.stderr.isatty():  # a log file or CI: the bars above are not shown there
                running = sum(isinstance(v, dict) for v in logs.values())
                typer.echo(f"train {job}: epoch {epoch}/{epochs}, {running} training, {logs['seconds']:.0f} s", err=True)

        runs = train_all(experiment, device=device, on_epoch=on_epoch, executor=_executor(executor, progress))
    for label, run in runs.items():
        typer.echo(f"{label}: {run}")


@app.command("separate-set")
@user_errors
@with_executor
def separate_set(config: Path = ConfigOption, executor: dict = None):
    """Separate every test mixture with every method of the experiment (cached)."""
    from sepvae.pipeline import separate_all

    experiment = _experiment(config)
    with _progress() as progress:
        folders = separate_all(experiment, progress=_per_label(progress, "separate"),
                               executor=_executor(executor, progress))
    for label, folder in folders.items():
        typer.echo(f"{label}: {folder}")


@app.command()
@user_errors
@with_executor
def evaluate(config: Path = ConfigOption, executor: dict = None):
    """Score every method on the test mixtures: SDR/SIR/SAR, SI-SDR, PESQ, STOI -> metrics.csv."""
    import warnings

    from sepvae.metrics import UndefinedMetricWarning
    from sepvae.pipeline import evaluate_all, undefined_counts

    experiment = _experiment(config)
    warnings.simplefilter("ignore", UndefinedMetricWarning)  # counted from metrics.csv below
    with _progress() as progress:
        out = evaluate_all(experiment, progress=_per_label(progress, "score"), executor=_executor(executor, progress))
    for metric, count in sorted(undefined_counts(out).items()):
        typer.echo(f"warning: {metric.upper()} undefined (NaN) for {count} score(s)", err=True)
    typer.echo(f"{out}")


@app.command()
@user_errors
def report(
    config: Path = ConfigOption,
    # 10 = sepvae.results.html.LISTEN_DEFAULT, not imported here so that `sepvae --help` stays fast.
    listen: int = typer.Option(10, "--listen", min=0, help="Test mixtures with audio players in index.html."),
):
    """Violin plots, tables and report.md from the experiment's metrics.csv; index.html with audio."""
    from sepvae.pipeline import report as write
    from sepvae.results import markdown_table, read_metrics, summary_table

    experiment = _experiment(config)
    path = write(experiment, listen=listen)
    typer.echo(markdown_table(summary_table(read_metrics(path.parent / "metrics.csv"))))
    typer.echo(f"\nreport: {path}\nlistening report: {path.parent / 'index.html'}")


@app.command()
@user_errors
def results(
    experiments: Optional[list[Path]] = typer.Argument(None, help="Experiment files. Default: every sweep under experiments/."),
    out: Path = typer.Option(Path("experiments/RESULTS.md"), "--out", help="Where to write the summary."),
):
    """Summarize the sweeps in experiments/RESULTS.md (and results.html): figures, medians, verdicts."""
    from sepvae.results import default_experiments, write_results
    from sepvae.results.results_md import html_page

    path = write_results(experiments or default_experiments(), out=out)
    typer.echo(f"{path}\n{html_page(path)}")


@app.command("export-model")
@user_errors
def export_model(
    config: Path = ConfigOption,
    method: str = typer.Option("best", help="Method label to ship; 'best' = highest median SDR among gender-mode models."),
    name: str = typer.Option("default", help="Name of the shipped model (sepvae/pretrained/<name>/)."),
    chosen_by: Optional[Path] = typer.Option(
        None, "--chosen-by", help="Choose 'best' by this experiment's metrics (e.g. the unseen-speaker cross-validation)."
    ),
):
    """Ship an evaluated gender-mode model pair inside the package (make pretrained)."""
    from sepvae.pipeline import export_model as export

    out = export(_experiment(config), method, name, chosen_by=_experiment(chosen_by) if chosen_by else None)
    typer.echo(f"{out}")


@app.command()
@user_errors
def separate(
    files: list[Path] = typer.Argument(..., help="Recordings to separate (WAV, FLAC, OGG, ...: any rate, any channels).", show_default=False),
    model: str = typer.Option("default", "--model", "-m", help="A shipped model name (see `sepvae models`) or a folder of <source>.pt checkpoints, e.g. a gender-mode runs/models/ run."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for the outputs. Default: beside each input."),
    device: str = DeviceOption,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace outputs that exist."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout instead of one line per output."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch. Default: torch's own (all cores)."),
    match_level: Optional[bool] = typer.Option(
        None, "--match-level/--no-match-level",
        help="Bring the recording to the training mixtures' level before the models see it (the estimates keep the input's level). Default: as the model's card says."),
    phase_iterations: Optional[int] = typer.Option(
        None, "--phase-iterations", min=0,
        help="Rounds of MISI phase reconstruction after the mask (0: the mixture's phase, as in the paper). Default: as the model's card says."),
    shifts: Optional[int] = typer.Option(
        None, "--shifts", min=1,
        help="Average this many passes on STFT frames shifted by fractions of a hop (1: one pass, as in the paper; each more costs one more pass). Default: as the model's card says."),
    smooth_frames: Optional[int] = typer.Option(
        None, "--smooth-frames", min=0,
        help="Average the sources' estimates over this many STFT frames on each side before the mask (0: each frame's own, as in the paper). Default: as the model's card says."),
    allow_truncated: bool = AllowTruncatedOption,
):
    """Separate recordings into <stem>_<source>.wav per source (e.g. mix_male.wav, mix_female.wav)."""
    import json

    _refuse_flag_values(files, ("--overwrite", "--json", "--allow-truncated"))

    # Before torch loads libgomp: its default busy-waiting threads slow separation ~20x
    # whenever another process holds a core; passive waiting costs nothing when idle.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from sepvae.catalog import load_separator
    from sepvae.files import separate_files

    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        separator, info = load_separator(model, device, match_level, phase_iterations, shifts, smooth_frames)
    except SepvaeError as exc:
        if as_json:
            typer.echo(json.dumps({"model": model, "error": str(exc), "files": [], "failed": len(files)}, indent=2))
        raise
    show = not as_json and sys.stderr.isatty()
    with (_progress() if show else _no_progress()) as progress:
        tasks = {}

        def on_block(path, done, total):
            if progress is None:
                return
            if path not in tasks:
                tasks[path] = progress.add_task(f"separate {path.name}", total=total, info="")
            progress.update(tasks[path], completed=done)

        def on_result(result):
            for warning in result.warnings:
                typer.echo(f"warning: {result.input}: {warning}", err=True)
            if result.error:
                typer.echo(f"error: {result.error}", err=True)
            if not as_json:
                for source, path in result.outputs.items():
                    typer.echo(
                        f"{path}  ({source}, {result.frames / result.sample_rate:.2f} s, "
                        f"{result.sample_rate} Hz, {result.output_subtype})"
                    )

        results = separate_files(separator, files, out, overwrite, on_block, on_result, allow_truncated)
    failed = [r for r in results if not r.ok]
    if as_json:
        summary = {"model": info.to_json(), "files": [r.to_json() for r in results], "failed": len(failed)}
        typer.echo(json.dumps(summary, indent=2))
    if failed:
        raise typer.Exit(1)


def _refuse_flag_values(files: list[Path], flags: tuple[str, ...]) -> None:
    """SepvaeError for `--overwrite true`: a flag takes no value, so "true" came in as a file."""
    for path in files:
        if path.name.lower() in BOOLEAN_WORDS and not path.exists():
            raise SepvaeError(f"{path}: no such file; {', '.join(flags)} are flags and take no value (drop {path.name!r})")


def _no_progress():
    return contextlib.nullcontext(None)


@app.command()
@user_errors
def models(
    runs: Path = typer.Option(Path("runs"), help="Runs folder whose models/ to list."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
):
    """List shipped models and the models trained under runs/models/."""
    import json

    from sepvae.catalog import list_models, models_table

    found = list_models(runs)
    if as_json:
        typer.echo(json.dumps([m.to_json() for m in found], indent=2))
        return
    typer.echo(models_table(found))
