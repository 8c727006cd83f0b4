"""Where the stages' independent jobs run: in this process, in worker processes of this
machine, or as tasks on a Ray cluster.

A :class:`Job` is a picklable description: a module-level function, its arguments, the
resources it declares and one line saying what it is (``train vae (gender) [vae-gender-…]``),
plus a ``sink`` that stays on the driver. An executor runs the jobs and hands each job's
result to its sink *on the driver*, as the job finishes; a job that raises is retried
``retries`` times, then reported as a :class:`Failure` while the other jobs go on.

The executors call the same job functions the same way, so they make the same files: a
job function never writes the run layout (its sink does), and it runs with as many torch
threads as CPUs it declares, because a matrix product's sums can differ in the last bit
with the thread count. What the job functions are is :mod:`sepvae.jobs`'s business.

This module imports neither torch nor Ray at import time: Ray is an optional extra.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from sepvae.errors import SepvaeError

# (done, pending, failed, total); pending: started and not finished (with Ray: running or
# queued for a free CPU, which the driver cannot tell apart without Ray's state API).
Status = Callable[[int, int, int, int], None]
INSTALL_RAY = "--executor ray needs Ray, an optional extra: pip install 'sepvae[ray]'"


@dataclass(frozen=True)
class Resources:
    """What one task declares to the scheduler (Ray places it on a node that has them)."""

    num_cpus: float = 1
    num_gpus: float = 0

    def __post_init__(self):
        if self.num_cpus <= 0 or self.num_gpus < 0:
            raise SepvaeError(f"a job needs num_cpus > 0 and num_gpus >= 0, got {self.num_cpus}, {self.num_gpus}")

    @property
    def threads(self) -> int:
        return max(1, int(self.num_cpus))


@dataclass(frozen=True)
class Shared:
    """An input several jobs take (a test set's audio, training frames): Ray ships it to the
    object store once (``ray.put``) rather than once per task."""

    value: Any


@dataclass(frozen=True)
class Job:
    """One independent unit of work (see the module docstring).

    ``fn(*args, progress=...)`` runs on a worker; ``sink(result)`` on the driver. ``args``
    may hold :class:`Shared` values. ``resources`` None: the executor's.
    """

    fn: Callable[..., Any]
    args: tuple
    description: str
    sink: Callable[[Any], None]
    resources: Resources | None = None


@dataclass(frozen=True)
class Failure:
    job: Job
    message: str

    def __str__(self) -> str:
        return f"{self.job.description}: {self.message}"


class JobsFailed(SepvaeError):
    """Some jobs failed after their retries; the others finished. One line per failed job."""

    def __init__(self, failures: Sequence[Failure]):
        self.failures = list(failures)
        lines = [str(f) for f in self.failures]
        lines.append(f"{len(lines)} job(s) failed; the others finished, and a rerun does only what is missing")
        super().__init__("\n".join(lines))


def raise_failures(failures: Sequence[Failure]) -> None:
    if failures:
        raise JobsFailed(failures)


def one_line(exc: BaseException) -> str:
    """An exception as one line: a SepvaeError's own message, else type and first line."""
    cause = getattr(exc, "cause", None) or exc  # Ray wraps a task's exception in a RayTaskError
    if isinstance(cause, SepvaeError):
        return str(cause).strip().splitlines()[0]
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__


def run_job(fn: Callable[..., Any], threads: int, progress: Callable | None, *args) -> Any:
    """Call a job function with ``threads`` torch threads (on the driver or on a worker)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn(*args, progress=progress)
    finally:
        torch.set_num_threads(before)


class Executor:
    """Runs jobs; ``map`` returns the failures (empty: every sink has its result)."""

    workers: int | None = None  # jobs at once; None: a cluster's scheduler decides

    def __init__(self, resources: Resources = Resources(), retries: int = 0, status: Status | None = None):
        if retries < 0:
            raise SepvaeError(f"--retries must be >= 0, got {retries}")
        self.resources = resources
        self.retries = retries
        self.status = status

    def map(self, jobs: Sequence[Job], progress: Callable | None = None) -> list[Failure]:
        """Run ``jobs``; the job functions' ``progress`` calls (training epochs, mixtures
        separated) reach ``progress`` on the driver, from this process or a local worker;
        on a Ray worker they get None."""
        raise NotImplementedError

    def _resources(self, job: Job) -> Resources:
        """What ``job`` declares, else the executor's default."""
        return job.resources or self.resources

    def _report(self, done: int, pending: int, failed: int, total: int) -> None:
        if self.status and total:
            self.status(done, pending, failed, total)

    def _deliver(self, job: Job, result: Any, failures: list[Failure]) -> bool:
        """Hand ``result`` to the job's sink on the driver; False, and a failure, if it
        refuses it."""
        try:
            job.sink(result)
        except SepvaeError as exc:
            failures.append(Failure(job, one_line(exc)))
            return False
        return True


class LocalExecutor(Executor):
    """The jobs on this machine: with ``workers`` 1, one after another in this process (what
    sepvae always did); with more, up to ``workers`` at once, each in a worker process.

    Worker processes are spawned, not forked (a fork of a process whose torch or OpenMP
    threads have run can deadlock), and live for one :meth:`map`. A job function's
    ``progress`` calls come back to the driver through a queue and reach ``progress`` there,
    so the progress bars are the same either way. A single job always runs in this process.
    """

    def __init__(self, resources: Resources = Resources(), retries: int = 0, status: Status | None = None,
                 workers: int = 1):
        super().__init__(resources, retries, status)
        if workers < 1:
            raise SepvaeError(f"--workers must be >= 1, got {workers}")
        self.workers = workers

    def map(self, jobs: Sequence[Job], progress: Callable | None = None) -> list[Failure]:
        if self.workers > 1 and len(jobs) > 1:
            return self._map_in_workers(jobs, progress)
        failures: list[Failure] = []
        for started, job in enumerate(jobs):
            self._report(started - len(failures), 1, len(failures), len(jobs))
            threads = self._resources(job).threads
            for attempt in range(self.retries + 1):
                try:
                    result = run_job(job.fn, threads, progress, *_values(job.args))
                    break
                except Exception as exc:  # any error of one job is reported; the others go on
                    error = exc
            else:
                failures.append(Failure(job, one_line(error)))
                continue
            self._deliver(job, result, failures)
        self._report(len(jobs) - len(failures), 0, len(failures), len(jobs))
        return failures

    def _map_in_workers(self, jobs: Sequence[Job], progress: Callable | None) -> list[Failure]:
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
        from concurrent.futures.process import BrokenProcessPool

        context = multiprocessing.get_context("spawn")
        messages = context.SimpleQueue()  # (progress arguments) from the workers' jobs

        def forward():
            while not messages.empty():
                arguments = messages.get()
                if progress:
                    progress(*arguments)

        pool = ProcessPoolExecutor(min(self.workers, len(jobs)), mp_context=context,
                                   initializer=_start_worker, initargs=(messages,))

        def submit(job: Job):
            threads = self._resources(job).threads
            return pool.submit(run_job, job.fn, threads, _forward_progress, *_values(job.args))

        running = {submit(job): (job, 0) for job in jobs}
        failures: list[Failure] = []
        done = 0
        try:
            while running:
                self._report(done, len(running), len(failures), len(jobs))
                finished, _ = wait(running, timeout=0.2, return_when=FIRST_COMPLETED)
                forward()
                for future in finished:
                    job, attempt = running.pop(future)
                    try:
                        result = future.result()
                    except Exception as exc:  # the job's own error, or its worker died (BrokenProcessPool)
                        if attempt < self.retries and not isinstance(exc, BrokenProcessPool):
                            running[submit(job)] = (job, attempt + 1)
                        else:
                            failures.append(Failure(job, one_line(exc)))
                        continue
                    done += self._deliver(job, result, failures)
            forward()
        except BaseException:  # Ctrl-C, SIGTERM: the workers hold nothing the driver must keep
            # The pool has no public way to stop running jobs; its process table is gone
            # after shutdown, so take it first.
            for process in list((pool._processes or {}).values()):
                process.terminate()
            # The pool's own thread then fails the futures and reaps the workers; wait for
            # it rather than join them here too, as two threads reaping one child race (the
            # loser sees it alive after its exit: 1 run in ~15 under load).
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown()
        self._report(done, 0, len(failures), len(jobs))
        return failures


# A worker process's queue back to the driver (set when the worker starts).
_PROGRESS_QUEUE = None


def _start_worker(queue) -> None:
    import signal

    global _PROGRESS_QUEUE
    _PROGRESS_QUEUE = queue
    # Ctrl-C reaches the whole process group: the driver stops the workers, they do not
    # each print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _forward_progress(*arguments) -> None:
    """A job function's progress call in a worker: sent to the driver."""
    _PROGRESS_QUEUE.put(arguments)


def _values(args: tuple) -> tuple:
    return tuple(a.value if isinstance(a, Shared) else a for a in args)


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity, e.g. a container's or taskset's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


class RayExecutor(Executor):
    """Every job a Ray task with its declared resources; results come back to the driver.

    Joins the cluster at ``address`` ("auto": the one ``ray start`` started on this machine;
    None: $RAY_ADDRESS, else a new local instance), or uses a Ray already initialized.
    """

    def __init__(self, address: str | None = None, resources: Resources = Resources(), retries: int = 0,
                 status: Status | None = None):
        super().__init__(resources, retries, status)
        ray = import_ray()
        if not ray.is_initialized():
            address = address or os.environ.get("RAY_ADDRESS") or None
            # Worker logs would interleave with the progress bars; failures come back as exceptions.
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        self._task = ray.remote(run_job)

    def map(self, jobs: Sequence[Job], progress: Callable | None = None) -> list[Failure]:
        import ray

        refs = self._submit(jobs)
        pending, failures, done = list(refs), [], 0
        try:
            while pending:
                self._report(done, len(pending), len(failures), len(jobs))
                finished, pending = ray.wait(pending, num_returns=1)
                job = refs[finished[0]]
                try:
                    result = ray.get(finished[0])
                except Exception as exc:  # ray.exceptions.RayTaskError, WorkerCrashedError, ...
                    failures.append(Failure(job, one_line(exc)))
                    continue
                done += self._deliver(job, result, failures)
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        self._report(done, 0, len(failures), len(jobs))
        return failures

    def _submit(self, jobs: Sequence[Job]) -> dict:
        import ray

        stored: dict[int, Any] = {}  # id(Shared) -> its ObjectRef: each shared input is put once

        def arg(value):
            if not isinstance(value, Shared):
                return value
            if id(value) not in stored:
                stored[id(value)] = ray.put(value.value)
            return stored[id(value)]

        refs = {}
        for job in jobs:
            resources = self._resources(job)
            task = self._task.options(
                num_cpus=resources.num_cpus, num_gpus=resources.num_gpus, max_retries=self.retries,
                retry_exceptions=True, name=job.description[:100],
            )
            refs[task.remote(job.fn, resources.threads, None, *map(arg, job.args))] = job
        return refs


def import_ray():
    try:
        import ray
    except ImportError:
        raise SepvaeError(INSTALL_RAY) from None
    return ray


def make_executor(kind: str = "local", address: str | None = None, resources: Resources = Resources(),
                  retries: int = 0, status: Status | None = None, workers: int | None = 1) -> Executor:
    """The executor ``--executor`` names. ``workers`` (local only): jobs at once; None: as
    many as this machine's CPUs hold jobs of ``resources`` (at least 1)."""
    if kind == "local":
        if workers is None:
            workers = max(1, available_cpus() // resources.threads)
        return LocalExecutor(resources, retries, status, workers)
    if kind == "ray":
        if workers not in (None, 1):
            raise SepvaeError("--workers is for --executor local; a Ray cluster runs as many tasks as its CPUs hold (--num-cpus each)")
        return RayExecutor(address, resources, retries, status)
    raise SepvaeError(f"unknown executor {kind!r}; use local or ray")
