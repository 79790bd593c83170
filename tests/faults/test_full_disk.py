"""Fault injection: a full disk during a run and during an export.

The disk is an 8 MiB tmpfs mounted on a folder of the test's temporary directory (the tests run
as root), filled with a filler file until the kernel answers ENOSPC. Where ``mount`` is refused
the fallback is a size-limited process instead: ``RLIMIT_FSIZE`` lowered to 1 byte with SIGXFSZ
ignored, so every write that grows a file fails with EFBIG (``File too large``). Each test
prints which mechanism ran ("full disk via tmpfs" or "via RLIMIT_FSIZE").

(a) A run whose trace store cannot be written: the run finishes and says in its warnings that
the trace store could not be written (one line, the store's path, the OS's reason), the process
neither crashes nor hangs, and after freeing space the rows written before are intact, no row is
partial, and the store takes new runs.
(b) ``export_session`` and ``export_run`` to a full disk: one clear error, no file (and no
temporary file) left at the target, the source data intact.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.errors import ArborError
from engine.plan import Node, Plan
from engine.run.budget import RunCaps
from storage import workspace as workspace_module
from storage.bundles import export_session
from storage.sessions import ArborSession
from storage.trace_export import export_run
from storage.traces import TraceStore
from storage.workspace import Workspace
from tests.support.fake_backend import Behaviour, fake_factory, fake_models, tree

CAPS = RunCaps(max_parallel=4)
SPEC = {"id": "root", "children": [{"id": f"leaf{i}"} for i in range(8)]}
#: Outputs big enough that a run's rows cannot fit in whatever the store file has free.
#: About 2,000 characters per node to fill pages of the trace store; no sentence repeats, so the
#: output check (``engine.output_check``) does not call it a loop and the runs stay "completed".
OUTPUT = " ".join(f"word{(i * 7919) % 1009}" for i in range(240))


@dataclass
class Disk:
    path: Path
    mechanism: str  # "tmpfs" or "rlimit"
    _filler: Path | None = None
    _limit: tuple[int, int] | None = None
    _handler: object = None

    def fill(self) -> None:
        if self.mechanism == "tmpfs":
            self._filler = self.path / "filler.bin"
            fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                for size in (65536, 512, 1):  # down to the last byte
                    block = b"\0" * size
                    try:
                        while True:
                            os.write(fd, block)
                    except OSError as exc:
                        assert exc.errno == errno.ENOSPC, exc
            finally:
                os.close(fd)
        else:
            self._handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            self._limit = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (1, self._limit[1]))

    def free(self) -> None:
        if self.mechanism == "tmpfs":
            if self._filler is not None:
                self._filler.unlink(missing_ok=True)
        elif self._limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, self._limit)
            signal.signal(signal.SIGXFSZ, self._handler)  # type: ignore[arg-type]
            self._limit = None

    @property
    def reason(self) -> str:
        return "No space left on device" if self.mechanism == "tmpfs" else "File too large"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    folder = tmp_path / "disk"
    folder.mkdir()
    mechanism = "rlimit"
    if os.environ.get("ARBOR_FAULTS_DISK") != "rlimit":  # set it to try the fallback here
        mount = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
            check=False,
        )
        mechanism = "tmpfs" if mount.returncode == 0 else "rlimit"
    print(f"\nfull disk via {'tmpfs (8 MiB)' if mechanism == 'tmpfs' else 'RLIMIT_FSIZE'}")
    limited = Disk(folder, mechanism)
    try:
        yield limited
    finally:
        limited.free()
        if mechanism == "tmpfs":
            for path in folder.rglob("*.duckdb"):
                TraceStore(path).release()
            if subprocess.run(["umount", str(folder)], check=False).returncode != 0:
                subprocess.run(["umount", "-l", str(folder)], check=False)


def _fake_workspace(root: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    nodes = ["root", *(f"leaf{i}" for i in range(8))]
    factory, _ = fake_factory({n: Behaviour(output=OUTPUT) for n in nodes})
    monkeypatch.setattr(workspace_module, "registry_backend_factory", lambda _: (factory, None))
    return Workspace(root)


def _snapshot(store: TraceStore, run_id: str) -> tuple:
    run = store.run(run_id)
    assert run is not None
    keep = ("status", "answer", "input_tokens", "output_tokens", "started_at", "finished_at")
    nodes = [(n["node_id"], n["status"], n["output"]) for n in store.node_executions(run_id)]
    calls = [(c["node_id"], c["status"], c["output"]) for c in store.model_calls(run_id)]
    return tuple(run[k] for k in keep), nodes, calls


def _no_partial_runs(store: TraceStore) -> None:
    for run in store.runs():
        nodes = store.node_executions(run["run_id"])
        if run["status"] == "completed":
            assert len(nodes) == 9 and {n["status"] for n in nodes} == {"done"}, run["run_id"]
        assert {n["status"] for n in nodes} <= {"done", "interrupted", "failed", "cancelled"}
    with store.connect() as con:
        for table in ("node_executions", "model_calls"):
            orphans = con.execute(
                f"SELECT count(*) FROM {table} x"
                " WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.run_id = x.run_id)"
            ).fetchone()[0]
            assert orphans == 0, table


@pytest.mark.timeout(60)  # reads after the failed run once stalled 20 s each (fixed)
def test_a_run_on_a_full_disk_says_the_trace_store_could_not_be_written(disk, monkeypatch):
    ws = _fake_workspace(disk.path / "data", monkeypatch)
    plan = fake_models(tree(SPEC))
    before = ws.run_plan(plan, CAPS, run_id="before")
    assert before.status == "completed" and not before.warnings
    kept = _snapshot(ws.traces, "before")
    ws.traces.release()

    disk.fill()
    try:
        during = ws.run_plan(plan, CAPS, run_id="during", use_cache=False)
    finally:
        disk.free()
    print("warnings:", *during.warnings, sep="\n  ")
    assert during.status == "completed"  # the model work itself was fine
    assert during.warnings, "a trace store that cannot be written must be reported"
    for warning in during.warnings:
        assert "\n" not in warning and "Traceback" not in warning, warning
    assert any(
        "TraceStoreError" in w and str(ws.traces.path) in w and disk.reason in w
        for w in during.warnings
    ), during.warnings

    store = TraceStore(ws.traces.path)  # opens again once there is room
    assert _snapshot(store, "before") == kept
    _no_partial_runs(store)
    after = ws.run_plan(plan, CAPS, run_id="after", use_cache=False)
    assert after.status == "completed" and not after.warnings, after.warnings
    assert _snapshot(TraceStore(ws.traces.path), "before") == kept
    assert TraceStore(ws.traces.path).run("after")["status"] == "completed"


def _session_with_a_run(root: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Workspace, str]:
    ws = _fake_workspace(root, monkeypatch)
    plan = Plan(task="Fill the disk.", root=Node(id="root", title="Root", instruction="Go."))
    session = ws.sessions.save(ArborSession(name="full", task=plan.task, plan=plan))
    result = ws.run_plan(fake_models(tree(SPEC)), CAPS, session_id=session.id, run_id="source")
    assert result.status == "completed" and not result.warnings
    return ws, session.id


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["session", "run-parquet", "run-otlp"])
def test_an_export_to_a_full_disk_fails_clearly_and_leaves_no_file(
    disk, tmp_path, monkeypatch, kind
):
    ws, session_id = _session_with_a_run(tmp_path / "source", monkeypatch)
    kept = _snapshot(ws.traces, "source")
    source_bytes = ws.traces.path.stat().st_size
    target = disk.path / ("out.arbor" if kind == "session" else f"run.{kind.split('-')[1]}")

    disk.fill()
    try:
        with pytest.raises((ArborError, OSError)) as info:
            if kind == "session":
                export_session(ws, session_id, target)
            else:
                export_run(ws.traces, "source", target, kind.split("-")[1])
    finally:
        disk.free()
    message = str(info.value)
    print(f"{kind}: {type(info.value).__name__}: {message}")
    assert "\n" not in message and "Traceback" not in message
    assert disk.reason in message or "space" in message.lower() or "too large" in message
    assert isinstance(info.value, ArborError), f"a raw {type(info.value).__name__}: {message}"
    assert not target.exists()
    leftovers = [p.name for p in disk.path.iterdir() if p.name != "filler.bin"]
    assert leftovers == [], leftovers  # no .part file either
    assert ws.traces.path.stat().st_size >= source_bytes
    assert _snapshot(TraceStore(ws.traces.path), "source") == kept
