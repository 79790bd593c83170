"""Background jobs: one piece of work per job on a small thread pool, its error kept for the
page and its end marked, whatever happened. The evaluation/search manager and the playground
share this; plan runs have their own (``JobManager``: events, cancel, run ids)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, Protocol, TypeVar

from engine.errors import user_message


class BackgroundJob(Protocol):
    job_id: str
    lock: threading.Lock
    error: str | None
    finished: bool


Job = TypeVar("Job", bound=BackgroundJob)


class BackgroundJobs(Generic[Job]):
    """Jobs by id, each run once on the pool (``workers`` at a time)."""

    def __init__(self, workers: int, thread_name_prefix: str):
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix=thread_name_prefix)
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def _submit(self, job: Job, work: Callable[[], object]) -> Job:
        with self._lock:
            self._jobs[job.job_id] = job

        def run() -> None:
            try:
                work()
            except Exception as exc:  # shown on the page; the store keeps what was recorded
                with job.lock:
                    job.error = user_message(exc)
            finally:
                with job.lock:
                    job.finished = True

        self._pool.submit(run)
        return job

    def get(self, job_id: str | None) -> Job | None:
        if job_id is None:
            return None
        with self._lock:
            return self._jobs.get(job_id)


__all__ = ["BackgroundJob", "BackgroundJobs"]
