"""What a model's calls took in recorded runs: seconds and output tokens per call.

The reachability check (``engine.run.reachability``) compares a run's time cap with what its
nodes are expected to take; the only honest source for that is this machine's own record of
the same models. Replayed calls (reused from the call cache) took no time and are left out, as
are failed and cancelled ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from engine.errors import TraceStoreError
from storage.traces import TraceStore

#: Only a model's most recent calls count: the machine, the model file or its settings change.
RECENT_CALLS = 200


@dataclass(frozen=True)
class RecordedCalls:
    """A model's recent successful calls, on average."""

    model: str
    calls: int
    seconds_per_call: float
    output_tokens_per_call: float


def recorded_call_profiles(
    store: TraceStore, models: Iterable[str] | None = None, *, recent: int = RECENT_CALLS
) -> dict[str, RecordedCalls]:
    """Per model label (as traces name it), the average latency and output of its last
    ``recent`` successful calls that really ran; models with no such call are absent."""
    wanted = sorted(set(models)) if models is not None else None
    if wanted is not None and not wanted:
        return {}
    scope = " AND model IN (SELECT unnest(?::VARCHAR[]))" if wanted is not None else ""
    sql = (
        "SELECT model, count(*), avg(latency_s), avg(output_tokens) FROM ("
        "  SELECT model, latency_s, output_tokens,"
        "   row_number() OVER (PARTITION BY model ORDER BY started_at DESC) AS recency"
        "  FROM model_calls"
        "  WHERE status = 'ok' AND reused_from IS NULL AND latency_s > 0"
        f"  AND model IS NOT NULL{scope}"
        ") WHERE recency <= ? GROUP BY model"
    )
    params: list[object] = [wanted] if wanted is not None else []
    params.append(int(recent))
    try:
        store.sync()
        with store.connect() as con:
            rows = con.execute(sql, params).fetchall()
    except TraceStoreError:
        raise
    except Exception as exc:
        raise TraceStoreError(f"Could not read call latencies from {store.path}: {exc}") from exc
    return {
        str(model): RecordedCalls(str(model), int(count), float(seconds), float(tokens or 0.0))
        for model, count, seconds, tokens in rows
    }


__all__ = ["RECENT_CALLS", "RecordedCalls", "recorded_call_profiles"]
