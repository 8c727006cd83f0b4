"""The executors: a tiny experiment through Ray makes the local executor's files; a job that
raises is retried, then reported in one line while the others finish; reruns submit only
what is missing. The Ray tests share one local Ray (2 CPUs) for the module."""

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest
import soundfile as sf
from typer.testing import CliRunner

from sepvae.cli import app
from sepvae.config import load_experiment
from sepvae.errors import SepvaeError
from sepvae.executor import Job, JobsFailed, LocalExecutor, Resources, make_executor
from sepvae.jobs import scratch_name
from sepvae.layout import Layout, is_done
from sepvae.pipeline import evaluate_all, manifest_of, separate_all, train_all
from tests.conftest import TINY_EXPERIMENT as TINY
from tests.conftest import write_sample_tree

runner = CliRunner()

# test_pipeline's tiny settings (mixing, STFT, model, 2 epochs) with three methods; the broken
# experiment's VAE learns at a rate that makes its loss NaN, so its training job fails.
SETTINGS = TINY[: TINY.index("[[methods]]")]
METHODS = '[[methods]]\nkind = "oracle-irm"\n[[methods]]\nkind = "nmf"\nnmf_components = 4\n[[methods]]\nkind = "vae"\n'
BROKEN = "train = { lr = 1e30 }\n"


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'sepvae[ray]' (.ci/run installs it)")
    from ray import cloudpickle

    # The failing jobs below are this module's functions; workers cannot import tests/.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project folder as the CLI sees it (data/, runs/, reports/) with mixtures made."""
    root = tmp_path_factory.mktemp("project")
    write_sample_tree(root / "timit")
    (root / "ok.toml").write_text(SETTINGS + METHODS)
    (root / "broken.toml").write_text(SETTINGS + METHODS + BROKEN)
    layout = Layout(corpus=root / "data/corpus.csv", mixtures=root / "data/mixtures", runs=root / "runs",
                    reports=root / "reports")
    result = runner.invoke(app, ["data", "--timit-root", str(root / "timit"), "--out", str(layout.corpus)])
    assert result.exit_code == 0, result.output
    manifest_of(load_experiment(root / "ok.toml"), layout)
    return root, layout


def _elsewhere(layout: Layout, name: str) -> Layout:
    """The same mixtures, other runs and reports."""
    return Layout(layout.corpus, layout.mixtures, layout.runs.parent / f"{name}-runs", layout.reports.parent / f"{name}-reports")


def _files(root: Path) -> dict[str, bytes]:
    """Every file's content, but for what differs from one run to the next on any executor:
    histories (wall times) and the time stamp in a float WAV's PEAK chunk (samples only)."""

    def content(path: Path) -> bytes:
        return sf.read(path, dtype="float32")[0].tobytes() if path.suffix == ".wav" else path.read_bytes()

    return {str(p.relative_to(root)): content(p) for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith("history")}


def _stages(experiment, layout, executor=None):
    train_all(experiment, layout, device="cpu", executor=executor)
    separate_all(experiment, layout, executor=executor)
    return evaluate_all(experiment, layout, executor=executor)


def test_ray_makes_the_local_executors_files(project, ray_cluster):
    root, layout = project
    experiment = load_experiment(root / "ok.toml")
    local, distributed = _elsewhere(layout, "local"), _elsewhere(layout, "ray")
    metrics = _stages(experiment, local)
    statuses = []
    executor = make_executor("ray", status=lambda *counts: statuses.append(counts))
    assert _stages(experiment, distributed, executor).read_bytes() == metrics.read_bytes()
    assert statuses[-1] == (4, 0, 0, 4)  # evaluate's scores: the mixture's and each method's, all done
    # Same checkpoints (sha256 in the same cards), same estimates, same score caches.
    assert _files(distributed.runs) == _files(local.runs)
    # Finished work is skipped before submission: a rerun submits no job at all.
    statuses.clear()
    _stages(experiment, distributed, executor)
    assert statuses == []


def test_a_ray_job_of_two_cpus_trains_its_stacks_parts_as_a_local_one(project, ray_cluster):
    """--num-cpus 2: the training job splits its stack into two single-thread worker processes
    (tests/test_pipeline.py) on a Ray worker as on this machine, with the same checkpoints."""
    root, layout = project
    experiment = load_experiment(root / "ok.toml")
    local, distributed = _elsewhere(layout, "local-2-cpus"), _elsewhere(layout, "ray-2-cpus")
    train_all(experiment, local, device="cpu", executor=make_executor("local", resources=Resources(2)))
    train_all(experiment, distributed, device="cpu", executor=make_executor("ray", resources=Resources(2)))
    assert _files(distributed.runs) == _files(local.runs)


def test_local_workers_make_the_same_files_and_forward_progress(project):
    """--workers 2: the jobs in two spawned processes, the same files as one after another in
    this process; the job functions' progress calls reach the driver's callback."""
    root, layout = project
    experiment = load_experiment(root / "ok.toml")
    alone, together = _elsewhere(layout, "alone"), _elsewhere(layout, "workers")
    metrics = _stages(experiment, alone)
    statuses, scored = [], []
    executor = make_executor("local", status=lambda *counts: statuses.append(counts), workers=2)
    train_all(experiment, together, device="cpu", executor=executor)
    separate_all(experiment, together, executor=executor)
    statuses.clear()
    progress = lambda label, done, total: scored.append((label, done, total))  # noqa: E731
    assert evaluate_all(experiment, together, progress, executor).read_bytes() == metrics.read_bytes()
    assert (0, 4, 0, 4) in statuses and statuses[-1] == (4, 0, 0, 4)  # the 4 score jobs submitted at once
    assert _files(together.runs) == _files(alone.runs)
    n_test = experiment.mix.n_test
    for label in ("mixture", "oracle-irm", "nmf", "vae"):  # every mixture of every score job, in order
        assert [done for name, done, total in scored if name == label] == list(range(1, n_test + 1)), label
    assert {total for _, _, total in scored} == {n_test}


def test_a_failed_job_is_reported_in_one_line_and_the_others_finish(project, ray_cluster, monkeypatch):
    root, layout = project
    monkeypatch.chdir(root)
    args = ["train", "-c", "broken.toml", "--executor", "ray", "--retries", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2, result.output
    assert errors[0].startswith("error: train vae (gender) [vae-gender-")
    assert "]: training vae (2 models) (0:all:female): loss became nan at epoch 1; lower the learning rate" in errors[0]
    assert errors[1] == "error: 1 job(s) failed; the others finished, and a rerun does only what is missing"
    nmf = next((layout.runs / "models").glob("nmf-gender-*"))
    assert is_done(nmf, model_run=True)
    # The rerun trains only what failed: the nmf run is not touched.
    stamp = {p: p.stat().st_mtime_ns for p in nmf.iterdir()}
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "1 job(s) failed" in again.output
    assert {p: p.stat().st_mtime_ns for p in nmf.iterdir()} == stamp
    # The failed stack's scratch folder (of its one run) is kept for a retry to resume from,
    # with the stack's state; not after the test.
    failed = layout.runs / "models" / errors[0].split("[")[1].split("]")[0]
    shutil.rmtree(Path(tempfile.gettempdir()) / "sepvae-train" / scratch_name(failed))


def _attempt(log: Path, fail_first: int, value: int, progress=None) -> int:
    """A job that raises on its first ``fail_first`` attempts (counted in ``log``)."""
    with log.open("a") as handle:
        handle.write("attempt\n")
    if len(log.read_text().splitlines()) <= fail_first:
        raise ValueError(f"broken on purpose ({log.name})")
    return value


@pytest.mark.parametrize("kind, workers", [("local", 1), ("local", 2), ("ray", None)])
def test_retries_then_one_line_per_failure(kind, workers, tmp_path, request):
    if kind == "ray":
        request.getfixturevalue("ray_cluster")
    results = []
    jobs = [
        Job(_attempt, (tmp_path / f"{name}.log", fail_first, value), f"job {name} [key-{name}]", results.append)
        for name, fail_first, value in (("steady", 0, 1), ("flaky", 1, 2), ("broken", 9, 3), ("last", 0, 4))
    ]
    failures = make_executor(kind, retries=1, workers=workers).map(jobs)
    assert [str(f) for f in failures] == ["job broken [key-broken]: ValueError: broken on purpose (broken.log)"]
    assert sorted(results) == [1, 2, 4]
    attempts = {name: len((tmp_path / f"{name}.log").read_text().splitlines()) for name in ("steady", "flaky", "broken")}
    assert attempts == {"steady": 1, "flaky": 2, "broken": 2}


def test_jobs_failed_is_one_error_line_per_job():
    job = Job(_attempt, (), "train vae (gender) [vae-gender-abc123]", print)
    failures = LocalExecutor().map([job])  # _attempt without its arguments: a TypeError
    assert len(failures) == 1 and str(failures[0]).startswith("train vae (gender) [vae-gender-abc123]: TypeError: ")
    assert str(JobsFailed(failures)).count("\n") == 1


def _exit_abruptly(code: int, progress=None) -> None:
    os._exit(code)  # as a worker killed by the OOM killer or a crash in native code


def test_a_worker_that_dies_is_a_failure_not_a_hang(tmp_path):
    """A dead worker breaks the pool: its job, and any not finished then, are failures (a rerun
    does only what is missing), and map returns; no job is lost."""
    results = []
    jobs = [Job(_exit_abruptly, (3,), "job dies [key-dies]", results.append),
            Job(_attempt, (tmp_path / "other.log", 0, 1), "job other [key-other]", results.append)]
    failures = LocalExecutor(workers=2, retries=1).map(jobs)
    dies = [str(f) for f in failures if f.job is jobs[0]]
    assert len(dies) == 1 and dies[0].startswith("job dies [key-dies]: BrokenProcessPool: ")
    assert len(failures) + len(results) == 2 and results in ([], [1])


def _busy(seconds: float, progress=None) -> None:
    progress("busy", 0, 1)
    time.sleep(seconds)


def test_ctrl_c_stops_the_workers():
    """An interrupt on the driver (here: raised by its progress callback) ends map at once and
    leaves no worker process behind."""
    import multiprocessing

    def interrupt(*arguments):
        raise KeyboardInterrupt

    jobs = [Job(_busy, (60,), f"job {k} [key-{k}]", print) for k in range(3)]
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        LocalExecutor(workers=2).map(jobs, interrupt)
    assert time.monotonic() - started < 30
    assert multiprocessing.active_children() == []


def test_bad_worker_counts_are_one_line_errors():
    with pytest.raises(SepvaeError, match=r"^--workers must be >= 1, got 0$"):
        make_executor("local", workers=0)
    with pytest.raises(SepvaeError, match=r"^--workers is for --executor local; "):
        make_executor("ray", workers=2)
    result = runner.invoke(app, ["evaluate", "-c", "any.toml", "--workers", "0"])
    assert result.exit_code == 2 and "--workers" in result.output


def test_without_ray_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets when Ray is not installed
    with pytest.raises(SepvaeError, match=r"^--executor ray needs Ray, an optional extra: pip install 'sepvae\[ray\]'$"):
        make_executor("ray")
