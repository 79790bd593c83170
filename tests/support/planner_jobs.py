"""AppTest helper: a planner action now runs as a background job (``app.ui.planner_jobs``), so
a test that pressed a planner button waits for the job and reruns the page to see its result."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from app.ui import planner_jobs

#: Generous: this only bounds a hung test.
JOB_TIMEOUT_S = 300


def finish_planner_job(at: AppTest, timeout_s: float = JOB_TIMEOUT_S) -> AppTest:
    """Wait for the session's planner job (if any), then rerun until the page has applied it."""
    try:
        job_id = at.session_state[planner_jobs.JOB_KEY]
    except KeyError:
        job_id = None
    job = planner_jobs.manager().get(job_id)
    if job is not None:
        assert job.wait(timeout_s), f"the planner job did not finish in {timeout_s} s"
    at.run(timeout=timeout_s)
    return at
