"""How long the Inspector page takes to render with 100 runs of 50 nodes in the session.

    python bench/inspector_render.py [--runs 100] [--nodes 50] [--reps 5]

The page runs under Streamlit's AppTest (the whole script: queries, tables, Altair specs, the
element tree), which is what a browser waits for before it can draw; the browser's own drawing
is not included. Each view is rendered ``reps`` times and the median printed, side by side with
the same view over a session of 10 runs, so the last column shows what 10 times the runs cost.
The session lists its runs (as an opened session does), in a store filled by
bench/synthetic_traces.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamlit.testing.v1 import AppTest  # noqa: E402

from bench.synthetic_traces import fill_store  # noqa: E402
from storage.sessions import ArborSession  # noqa: E402
from storage.workspace import Workspace  # noqa: E402

MAIN = str(ROOT / "app" / "main.py")
VIEWS = ["Timeline", "Cost per node", "Node detail", "Compare", "Trends", "Export"]


def _page(data_dir: Path, session: ArborSession) -> AppTest:
    os.environ["ARBOR_DATA_DIR"] = str(data_dir)
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.session_state["session"] = session
    at.run()
    at.switch_page("ui/inspector_page.py").run()
    if at.exception:
        raise SystemExit(f"the page failed: {at.exception}")
    return at


def _timings(data_dir: Path, runs: int, nodes: int, reps: int) -> dict[str, float]:
    fill_store(data_dir / "traces.duckdb", runs=runs, nodes=nodes, sessions=1)
    ws = Workspace(data_dir)
    session = ArborSession(
        id="session0", name="bench", run_ids=[f"run{r:06d}" for r in range(runs)]
    )
    ws.sessions.save(session)
    at = _page(data_dir, session)
    result = {}
    started = time.perf_counter()
    at.run()
    result["first render (runs table, timeline)"] = (time.perf_counter() - started) * 1000
    for view in VIEWS:
        at.segmented_control(key="inspector_view").set_value(view).run()
        times = []
        for _ in range(reps):
            started = time.perf_counter()
            at.run()
            times.append((time.perf_counter() - started) * 1000)
        if at.exception:
            raise SystemExit(f"the {view} view failed: {at.exception}")
        result[view] = statistics.median(times)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as big, tempfile.TemporaryDirectory() as small:
        full = _timings(Path(big), args.runs, args.nodes, args.reps)
        tenth = _timings(Path(small), max(args.runs // 10, 2), args.nodes, args.reps)
    print(f"Inspector page, {args.runs} runs × {args.nodes} nodes (median of {args.reps})")
    print(f"{'view':40} {'ms':>8} {'ms (1/10 runs)':>15} {'ratio':>6}")
    for view, ms in full.items():
        print(f"{view:40} {ms:8.0f} {tenth[view]:15.0f} {ms / tenth[view]:6.2f}")


if __name__ == "__main__":
    main()
