"""Liveness of the process that ran a run: ``process_alive`` (by pid, on this host, guarding
against reused pids with the boot time), and finding and marking runs whose process is gone
(``dead_runs``, ``mark_interrupted``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import suppress
from datetime import datetime
from pathlib import Path

import duckdb


def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def process_alive(pid: int | None, started_before: datetime | None = None) -> bool:
    """Whether process ``pid`` on *this* host is alive and could be the one that started a run.

    Assumes the store is used from one host (it is a local file). A zombie counts as dead, and
    on Linux a process that started after ``started_before`` is a reused pid, not the runner.
    """
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return True  # no /proc (not Linux): trust kill()
    if fields[0] in ("Z", "X"):
        return False
    boot = _boot_time()
    if started_before is not None and boot is not None:
        process_start = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
        # /proc's start time has clock-tick resolution and btime whole seconds: allow slack.
        if process_start > started_before.timestamp() + 2.0:
            return False
    return True


def dead_runs(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The runs still ``running`` whose process is gone (rows without a pid included)."""
    running = con.execute(
        "SELECT run_id, pid, started_at FROM runs WHERE status = 'running'"
    ).fetchall()
    return [run_id for run_id, pid, started in running if not process_alive(pid, started)]


def mark_interrupted(
    con: duckdb.DuckDBPyConnection, run_ids: Sequence[str], reason: str | None = None
) -> int:
    """Mark runs still ``running`` as ``interrupted`` (their nodes left running too), in one
    transaction; ``finished_at`` becomes the last sign of life and the totals the nodes' sums.
    Returns how many runs changed."""
    if not run_ids:
        return 0
    why = reason or "interrupted: the process running it stopped before it finished"
    con.execute("BEGIN")
    try:
        # Totals are normally written by RunFinished, which never came: sum the nodes.
        row = con.execute(
            "UPDATE runs SET status = 'interrupted', stop_reason = coalesce(stop_reason, $1),"
            " finished_at = coalesce(n.last, runs.started_at),"
            " input_tokens = coalesce(n.tokens_in, 0),"
            " output_tokens = coalesce(n.tokens_out, 0),"
            " cost_usd = coalesce(n.cost, 0)"
            " FROM (SELECT r.run_id, max(x.finished_at) AS last,"
            "   sum(x.input_tokens) AS tokens_in, sum(x.output_tokens) AS tokens_out,"
            "   sum(x.cost_usd) AS cost"
            "   FROM runs r LEFT JOIN node_executions x ON x.run_id = r.run_id"
            "   WHERE r.run_id IN (SELECT unnest($2::VARCHAR[])) GROUP BY r.run_id) n"
            " WHERE runs.run_id = n.run_id AND runs.status = 'running'",
            [why, list(run_ids)],
        ).fetchone()
        con.execute(
            "UPDATE node_executions SET status = 'interrupted', error = coalesce(error, ?)"
            " WHERE status = 'running' AND run_id IN (SELECT unnest(?::VARCHAR[]))",
            [why, list(run_ids)],
        )
        con.execute("COMMIT")
    except BaseException:
        with suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise
    assert row is not None  # an UPDATE always answers its row count
    changed: int = row[0]
    return changed


__all__ = ["dead_runs", "mark_interrupted", "process_alive"]
