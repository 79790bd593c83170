"""Where an evaluation's plan runs happen: a thread pool in this process, or a Ray cluster.

An evaluation is many independent plan runs (one per example and configuration). Which machine
runs them is an execution adapter chosen at run time (Hamilton's adapters): ``evaluate`` hands
jobs to a ``PlanRunner`` and neither it nor the plan's nodes know where they run. Both pools
here record every run in the workspace's trace store, so the UI and SQL see Ray runs exactly
like local ones.

- ``LocalPool`` runs jobs through ``Workspace.run_plan`` in threads: traces are written as the
  run goes and the store serves as call cache, so a repeated evaluation replays recorded calls.
- ``RayPool`` runs each job as a Ray task. DuckDB lets one process write a database file, so a
  worker never opens the store: it collects its run's events in a list and returns them with
  the result, and the driver writes them through a ``TraceWriter``. For the same reason Ray runs
  have **no call cache**: every call is made again (replay happens only with ``LocalPool``),
  and a run's trace appears in the store when the run has finished, not while it runs.

``pool_from_settings`` picks one: an explicit Ray address, else ``$ARBOR_RAY_ADDRESS``, else
the local pool. Ray is optional (``pip install -e ".[ray]"``) and imported only when used.
"""

from __future__ import annotations

import logging
import os
import site
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from engine.errors import PoolError, TraceStoreError, user_message
from engine.models import registry_backend_factory
from engine.plan import Plan
from engine.run.budget import RunCaps
from engine.run.events import Event, NodeProgress, RunStarted
from engine.run.executor import RunResult, execute_plan
from engine.tune.evaluation import ThreadedRunner
from storage.traces import TraceWriter
from storage.workspace import Workspace

if TYPE_CHECKING:
    from engine.tune.evaluation import JobOutcome, PlanJob

#: Environment variable naming the Ray cluster evaluations run on ("local": a new local one).
RAY_ADDRESS_ENV = "ARBOR_RAY_ADDRESS"
RAY_INSTALL_HINT = 'pip install -e ".[ray]"'
#: Seconds to wait for a TCP answer from a cluster address before calling it unreachable
#: (Ray itself retries an unreachable address for minutes).
PROBE_TIMEOUT_S = 5.0
#: How often the Ray driver loop looks at the cancel flag while jobs run.
POLL_INTERVAL_S = 0.2
#: How long a cancel waits for running Ray tasks to return their (cancelled) runs.
CANCEL_WAIT_S = 15.0
#: The port a ``ray://`` (Ray Client) address without one uses.
RAY_CLIENT_PORT = 10001
#: The folder Arbor's packages are imported from: a checkout, or site-packages after a normal
#: ``pip install .``; Ray workers started elsewhere need it on their path.
IMPORT_ROOT = Path(__file__).resolve().parent.parent


def _check_workers(workers: int) -> int:
    if workers < 1:
        raise PoolError(f"A pool needs at least one worker, not {workers}.")
    return workers


# -- in this process -------------------------------------------------------------------------
class LocalPool(ThreadedRunner):
    """Runs jobs with ``workspace.run_plan`` in a thread pool; implements ``PlanRunner``.

    ``workers`` plans run at once (default 1: calls to one local model queue anyway). Every run
    is traced as it goes and uses the store as call cache. A set ``cancel`` starts no new job
    and is passed to running ones, which stop and yield their ``cancelled`` result; closing the
    iterator early sets it too. A job that raises yields ``(job, None, error text)``.
    """

    name = "local"
    thread_name = "arbor-pool"

    def __init__(self, workspace: Workspace, *, workers: int = 1, session_id: str | None = None):
        super().__init__(workers=_check_workers(workers))
        self.workspace = workspace
        self.session_id = session_id
        self._writer: TraceWriter | None = None  # while jobs run: theirs, shared

    def __call__(
        self, jobs: Sequence[PlanJob], *, cancel: threading.Event | None = None
    ) -> Iterator[JobOutcome]:
        # One writer for all the jobs, not waiting for each run's commit: back-to-back runs
        # share transactions (a run's own writer costs a commit of about 4-8 ms per run here).
        # Their calls are in the call cache at once all the same, and everything is committed
        # before the last outcome is handed over.
        self._writer = TraceWriter(self.workspace.traces, sync_finish=False)
        try:
            yield from super().__call__(jobs, cancel=cancel)
        finally:
            writer, self._writer = self._writer, None
            with suppress(TraceStoreError):  # a failed write was reported on a run's result
                writer.close()

    def run_one(self, job: PlanJob, cancel: threading.Event) -> RunResult:
        return self.workspace.run_plan(
            job.plan,
            job.caps,
            run_id=job.run_id,
            session_id=self.session_id,
            cancel=cancel,
            use_cache=True,
            writer=self._writer,
        )


# -- on a Ray cluster ------------------------------------------------------------------------
def _run_in_ray_worker(
    plan: Plan, caps: RunCaps, run_id: str, session_id: str | None, data_dir: str
) -> tuple[RunResult | None, list[Event], str | None]:
    """The body of a Ray task: run one plan, return its result, events and error text.

    Backends come from the data dir's model registry when this machine has it (prices,
    concurrency, timeouts), else from the defaults. The plan runs in a thread so that the
    ``KeyboardInterrupt`` by which ``ray.cancel`` interrupts this task becomes an ordinary
    cancel: the run stops between tokens and returns its ``cancelled`` result and events.
    """
    events: list[Event] = []

    def collect(event: Event) -> None:
        if not isinstance(event, NodeProgress):  # a live display's, never traced
            events.append(event)

    warnings: list[str] = []
    factory, registry_problem = registry_backend_factory(data_dir)
    if registry_problem:
        warnings.append(registry_problem)
    cancel, finished = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = execute_plan(
                plan,
                caps,
                listeners=[collect],
                backend_factory=factory,
                run_id=run_id,
                session_id=session_id,
                cancel=cancel,
            )
        except BaseException as exc:
            outcome["error"] = user_message(exc)
        finally:
            finished.set()

    threading.Thread(target=run, name="arbor-ray-run", daemon=True).start()
    # Not Thread.join: on Python 3.11 a join interrupted by KeyboardInterrupt can mark the
    # still-running thread as finished (bpo-45274's fix), and its result would be lost.
    while not finished.is_set():
        try:
            finished.wait(POLL_INTERVAL_S)
        except KeyboardInterrupt:
            cancel.set()
    result: RunResult | None = outcome.get("result")
    if result is not None:
        result.warnings.extend(warnings)
    return result, events, outcome.get("error")


_ray_lock = threading.Lock()
#: The address this process's Ray connection was made for (None: not connected by Arbor).
_ray_address: str | None = None
_remote_run: Any = None


def _import_ray() -> ModuleType:
    try:
        import ray
    except ImportError as exc:
        raise PoolError(
            f"Running plans on Ray needs the ray package: {RAY_INSTALL_HINT}. "
            f"Or unset {RAY_ADDRESS_ENV} to run them in this process."
        ) from exc
    return ray


def _probe(address: str) -> None:
    """Raise ``PoolError`` naming ``address`` unless something accepts a TCP connection there.

    Ray retries an unreachable address for minutes before failing; this answers in seconds.
    ``auto`` (a cluster started with ``ray start`` on this machine) is left to Ray.
    """
    if address == "auto":
        return
    parsed = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parsed.hostname, parsed.port
    except ValueError:
        host, port = None, None
    if port is None and parsed.scheme == "ray":
        port = RAY_CLIENT_PORT
    if not host or port is None:
        raise PoolError(
            f"The Ray address {address!r} is not host:port, ray://host:port, 'auto' or 'local'."
        )
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise PoolError(
            f"No Ray cluster answers at {address!r} ({reason}). Start one (`ray start --head`), "
            f"correct the address ({RAY_ADDRESS_ENV}), or unset it to run in this process."
        ) from None


def _connect(address: str, *, num_cpus: int, runtime_env: dict[str, Any] | None) -> ModuleType:
    """This process's Ray connection to ``address``, made on first use."""
    global _ray_address
    with _ray_lock:
        ray = _import_ray()
        if address != "local":
            _probe(address)
        if ray.is_initialized():
            if _ray_address not in (None, address):
                raise PoolError(
                    f"This process is connected to the Ray cluster {_ray_address!r}; call "
                    f"storage.pools.shutdown_ray() before using {address!r}."
                )
            return ray
        options: dict[str, Any] = {
            "ignore_reinit_error": True,
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": logging.WARNING,
            "runtime_env": runtime_env,
        }
        if address == "local":
            options["num_cpus"] = num_cpus
        try:
            # "local" is Ray's own word for a new local instance, even with a cluster running.
            ray.init(address=address, **options)
        except Exception as exc:
            # Ray's own text says what is missing, e.g. `ray[client]` for a ray:// address.
            raise PoolError(f"Could not start Ray at {address!r}: {exc}") from exc
        _ray_address = address
        return ray


def shutdown_ray() -> None:
    """Disconnect from Ray (stopping a local instance this process started); no-op if not
    connected. Ray is not imported if nothing imported it."""
    global _ray_address, _remote_run
    with _ray_lock:
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            ray.shutdown()
        _ray_address, _remote_run = None, None


def _remote(ray: ModuleType) -> Any:
    global _remote_run
    with _ray_lock:
        if _remote_run is None:
            # One retry covers a lost node; a run that crashes its worker (say, a model that
            # segfaults) is reported as that job's error instead of being run four times.
            _remote_run = ray.remote(max_retries=1)(_run_in_ray_worker)
        return _remote_run


class RayPool:
    """Runs each job as a Ray task and records it in the workspace's store; a ``PlanRunner``.

    ``address`` is a cluster (``host:port``, ``ray://host:port``, ``auto``) or ``local`` for a
    new Ray instance on this machine with this machine's cores. Ray starts (or connects) on the
    first call or ``connect()``, not when the pool is made. At most ``workers`` jobs are in
    flight; each worker process loads its own copy of a local model. Jobs run without the call
    cache, and a run is written to the store when it finishes (see the module docstring).

    The nodes of a remote cluster need Arbor installed, or ``runtime_env`` shipping it (e.g.
    ``{"working_dir": ..., "pip": [...]}``); for ``local`` the default ``runtime_env`` puts this
    checkout on the workers' ``PYTHONPATH``. A set ``cancel`` submits nothing more and cancels
    the tasks in flight: a task that stops in time yields its ``cancelled`` result (traced), one
    that does not yields ``(job, None, "cancelled")``. A job that fails yields its error text.
    """

    name = "ray"

    def __init__(
        self,
        workspace: Workspace,
        *,
        address: str = "local",
        workers: int = 2,
        session_id: str | None = None,
        runtime_env: dict[str, Any] | None = None,
    ):
        self.workspace = workspace
        self.address = address.strip() or "local"
        self.workers = _check_workers(workers)
        self.session_id = session_id
        if runtime_env is None and self.address == "local":
            runtime_env = {"env_vars": {"PYTHONPATH": _worker_pythonpath()}}
        self.runtime_env = runtime_env

    def connect(self) -> ModuleType:
        """Start or join the cluster now (the first call does it otherwise); return ``ray``.

        Raises ``PoolError`` if Ray is not installed or the address does not answer.
        """
        num_cpus = max(os.cpu_count() or 1, self.workers)
        return _connect(self.address, num_cpus=num_cpus, runtime_env=self.runtime_env)

    def _submit(self, ray: ModuleType, job: PlanJob) -> Any:
        sessions = self.workspace.sessions
        if self.session_id is not None and sessions.exists(self.session_id):
            sessions.add_run(self.session_id, job.run_id)
        return _remote(ray).remote(
            job.plan, job.caps, job.run_id, self.session_id, str(self.workspace.root)
        )

    def _record(self, events: list[Event], result: RunResult | None) -> None:
        """Write a finished run's events to the store, as ``Workspace.run_plan`` would have."""
        if not events:
            return
        writer = TraceWriter(self.workspace.traces)
        problems: list[str] = []
        for event in events:
            if isinstance(event, RunStarted):
                # The store takes a run left "running" by a dead pid as interrupted; this
                # process writes the run, and the worker's pid means nothing on this host.
                event = replace(event, pid=os.getpid())
            try:
                writer(event)
            except TraceStoreError as exc:  # the event stays queued; report, go on
                problems.append(f"TraceStoreError in TraceWriter: {exc}")
        try:
            writer.close()
        except TraceStoreError as exc:
            problems.append(f"TraceStoreError in TraceWriter: {exc}")
        if result is not None:
            result.warnings.extend(p for p in dict.fromkeys(problems) if p not in result.warnings)

    def _collect(self, ray: ModuleType, ref: Any, job: PlanJob) -> JobOutcome:
        try:
            result, events, error = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            return job, None, "cancelled"
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None) or exc
            return job, None, f"the Ray task failed: {user_message(cause)}"
        except Exception as exc:  # a lost worker or node
            return job, None, f"the Ray task failed: {user_message(exc)}"
        self._record(events, result)
        return job, result, error

    def __call__(
        self, jobs: Sequence[PlanJob], *, cancel: threading.Event | None = None
    ) -> Iterator[JobOutcome]:
        cancel = cancel or threading.Event()
        ray = self.connect()
        waiting = iter(jobs)
        running: dict[Any, PlanJob] = {}

        def fill() -> None:
            while len(running) < self.workers and not cancel.is_set():
                job = next(waiting, None)
                if job is None:
                    return
                running[self._submit(ray, job)] = job

        cancel_deadline: float | None = None
        try:
            fill()
            while running:
                if cancel.is_set() and cancel_deadline is None:
                    for ref in running:
                        ray.cancel(ref)
                    cancel_deadline = time.monotonic() + CANCEL_WAIT_S
                ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_INTERVAL_S)
                for ref in ready:
                    job = running.pop(ref)
                    yield self._collect(ray, ref, job)
                if cancel_deadline is not None and time.monotonic() > cancel_deadline:
                    for job in list(running.values()):
                        yield job, None, "cancelled"
                    running.clear()
                fill()
        finally:
            if running:  # the consumer stopped early: stop what is still running
                for ref in running:
                    with suppress(Exception):
                        ray.cancel(ref)


def _worker_pythonpath() -> str:
    """Where Arbor is imported from (unless that is a site-packages folder, which must not go
    ahead of the standard library), then this process's own ``PYTHONPATH`` (if any)."""
    site_dirs = {str(Path(folder).resolve()) for folder in site.getsitepackages()}
    roots = [] if str(IMPORT_ROOT) in site_dirs else [str(IMPORT_ROOT)]
    return os.pathsep.join([*roots, *filter(None, [os.environ.get("PYTHONPATH")])])


# -- choosing ----------------------------------------------------------------------------------
def pool_from_settings(
    workspace: Workspace,
    *,
    ray_address: str | None = None,
    workers: int = 1,
    session_id: str | None = None,
) -> LocalPool | RayPool:
    """The pool an evaluation should use: Ray at ``ray_address`` if given, else at
    ``$ARBOR_RAY_ADDRESS`` if set, else ``LocalPool``. Nothing starts until the first run."""
    address = (ray_address or os.environ.get(RAY_ADDRESS_ENV) or "").strip()
    if address:
        return RayPool(workspace, address=address, workers=workers, session_id=session_id)
    return LocalPool(workspace, workers=workers, session_id=session_id)


__all__ = [
    "RAY_ADDRESS_ENV",
    "LocalPool",
    "PoolError",
    "RayPool",
    "pool_from_settings",
    "shutdown_ray",
]
