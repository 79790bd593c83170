"""How long the Inspector's queries take over a store of about a million spans.

    python bench/inspector_queries.py [--runs 7700] [--nodes 50] [--reps 5]

The store holds ``runs`` runs of ``nodes`` nodes (every fifth node samples 3 times), written
by bench/synthetic_traces.py: 7700 × 50 gives 385k node rows, 539k call rows and 77k sample
spans, with the runs about 1.0M rows in the ``spans`` view. Each query the page makes is timed
``reps`` times and the median printed: on its own connection ("own", borrowed from the process's
kept-open file), and inside one connection shared by a page render ("held",
``TraceQueries.held``), next to the held time on a store with 1/10 of the runs, so the last ratio
shows how a query scales with the store. The SQL console's shipped examples run as the console
runs them: checked, then in their sandbox process (started one query ahead, so each is timed
after a 0.5 s pause, as an analyst reads the last result).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.synthetic_traces import fill_store
from storage.sql_console import SavedQueries, run_read_only
from storage.trace_queries import RunFilter, TraceQueries
from storage.traces import TraceStore


def _median_ms(action: Callable[[], object], reps: int, pause_s: float = 0.0) -> float:
    times = []
    for _ in range(reps):
        time.sleep(pause_s)  # outside the timing
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _queries(queries: TraceQueries, runs: int) -> dict[str, Callable[[], object]]:
    last, previous = f"run{runs - 1:06d}", f"run{runs - 2:06d}"
    session = RunFilter(session_id="session0", run_ids=(last,))
    actions: dict[str, Callable[[], object]] = {
        "runs list (newest 500)": lambda: queries.runs(limit=500),
        "runs list, status + model filter": lambda: queries.runs(
            RunFilter(statuses=("failed",), models=("remote:gpt-large",)), limit=500
        ),
        "models for the filter": lambda: queries.models(),
        "timeline of one run": lambda: queries.timeline(last),
        "cost per node of one run": lambda: queries.node_costs(last),
        "node detail (3 samples, votes)": lambda: queries.node_detail(last, "n4"),
        "compare two runs": lambda: queries.compare(previous, last),
        "trends of a session's runs": lambda: queries.trends(session),
    }
    for example in SavedQueries.examples():
        actions[f"SQL: {example.title}"] = lambda sql=example.sql: run_read_only(queries.store, sql)
    return actions


def _timings(store: TraceStore, runs: int, reps: int) -> dict[str, tuple[float, float]]:
    """Per query: median ms on its own connection, and inside one held connection."""
    queries = TraceQueries(store)
    actions = _queries(queries, runs)
    # A console query is typed and read between runs: its sandbox process (started one query
    # ahead) has had the time to start, as in use; 0.5 s pause before each, not timed.
    own = {
        name: _median_ms(action, reps, pause_s=0.5 if name.startswith("SQL: ") else 0.0)
        for name, action in actions.items()
    }
    # The console runs in its own sandbox process, which cannot attach the file while this
    # process holds it: its "held" time is its own time.
    page = {name: action for name, action in actions.items() if not name.startswith("SQL: ")}
    with queries.held():
        held = {name: _median_ms(action, reps) for name, action in page.items()}
    return {name: (own[name], held.get(name, own[name])) for name in actions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7700)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        sizes = {"full": args.runs, "tenth": max(args.runs // 10, 2)}
        stores, spans = {}, {}
        for label, runs in sizes.items():
            path = Path(tmp) / f"{label}.duckdb"
            started = time.perf_counter()
            counts = fill_store(path, runs=runs, nodes=args.nodes, sessions=max(runs // 100, 1))
            stores[label] = TraceStore(path)
            spans[label] = (
                run_read_only(stores[label], "SELECT count(*) AS n FROM spans").frame["n"].iloc[0]
            )
            print(
                f"{label}: {counts['runs']} runs, {counts['nodes']} nodes, {counts['calls']} calls"
                f" = {spans[label]:,} spans; filled in {time.perf_counter() - started:.1f} s;"
                f" file {path.stat().st_size / 1e6:.0f} MB"
            )
        print()
        print(f"{'query':48} {'own ms':>8} {'held ms':>8} {'1/10 held':>9} {'ratio':>6}")
        full = _timings(stores["full"], sizes["full"], args.reps)
        tenth = _timings(stores["tenth"], sizes["tenth"], args.reps)
        for name, (own, held) in full.items():
            small = tenth[name][1]
            print(f"{name[:48]:48} {own:8.1f} {held:8.1f} {small:9.1f} {held / small:6.2f}")


if __name__ == "__main__":
    main()
