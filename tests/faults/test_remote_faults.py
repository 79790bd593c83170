"""Fault injection on the remote path: a real loopback endpoint (``tests/support/loopback.py``)
that resets connections, sends bodies that are not JSON, trickles bytes slower than the read
timeout, or answers 429 forever. Each runs in one plan of two independent branches (the faulty
endpoint, a healthy loopback endpoint) under a root that needs both, through ``execute_plan``
with caps: the faulty node fails with a clear message naming the endpoint and the fault, the
healthy branch finishes, the root is blocked, and no error carries a traceback.
"""

from __future__ import annotations

import pytest

from engine.models import RemoteBackend
from engine.plan import GenerationConfig, ModelRef, Node, Plan
from engine.run.budget import RunCaps
from engine.run.executor import execute_plan
from engine.run.scheduler import NodeStatus
from tests.support.loopback import LoopbackServer

CAPS = RunCaps(total_tokens=4000, max_tokens_per_node=16, max_parallel=4, wall_time_s=20)
TIMEOUT_S = 0.5


def _plan(faulty_url: str, healthy_url: str) -> Plan:
    def leaf(node_id: str, url: str) -> Node:
        ref = ModelRef(kind="remote", base_url=url, model=node_id)
        return Node(id=node_id, title=node_id, instruction=f"Answer for {node_id}.", model=ref)

    root_ref = ModelRef(kind="remote", base_url=healthy_url, model="root")
    return Plan(
        task="Two branches, one endpoint broken.",
        root=Node(
            id="root",
            title="Combine",
            instruction="Combine both answers.",
            model=root_ref,
            children=[leaf("faulty", faulty_url), leaf("healthy", healthy_url)],
        ),
        default_generation=GenerationConfig(temperature=0.0, max_tokens=16, seed=1),
    )


def _run(caps: RunCaps = CAPS, root: NodeStatus = NodeStatus.BLOCKED, **fault):
    with LoopbackServer(**fault) as bad, LoopbackServer() as good:

        def factory(ref: ModelRef) -> RemoteBackend:
            return RemoteBackend(
                ref.base_url or "", ref.model or "", attempts=3, timeout_s=TIMEOUT_S, backoff_s=0.05
            )

        result = execute_plan(_plan(bad.base_url, good.base_url), caps, backend_factory=factory)
        requests = bad.stats.requests
        url = bad.base_url
    errors = [n.error for n in result.nodes.values() if n.error]
    for text in [*errors, *result.warnings, result.stop_reason or ""]:
        assert "Traceback" not in text and 'File "' not in text, text
    assert result.nodes["healthy"].status is NodeStatus.DONE
    assert result.nodes["healthy"].output
    assert result.nodes["root"].status is root
    return result, result.nodes["faulty"], url, requests


def _show(name: str, result, node) -> None:
    print(f"\n[{name}] run={result.status} stop={result.stop_reason!r}\n  faulty: {node.error}")


@pytest.mark.timeout(120)
def test_a_connection_reset_before_any_byte_fails_the_node_clearly_after_its_attempts():
    result, node, url, requests = _run(reset=True)
    _show("reset", result, node)
    assert node.status is NodeStatus.FAILED and requests == 3
    assert url in node.error and "3 attempts" in node.error
    assert "reset" in node.error.lower() or "closed the connection" in node.error


@pytest.mark.timeout(120)
def test_a_connection_reset_mid_stream_says_the_endpoint_closed_the_connection():
    result, node, url, requests = _run(reset=True, reset_after_chunks=2)
    _show("reset-mid", result, node)
    assert node.status is NodeStatus.FAILED
    assert requests == 1  # text was already streamed: not retried, so not shown twice
    assert url in node.error
    assert "broke off" in node.error or "closed the connection" in node.error


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("kind", "expected"),
    [("chunk", "not JSON"), ("body", "neither an event stream nor JSON")],
)
def test_malformed_json_fails_the_node_saying_it_is_not_json(kind, expected):
    result, node, url, requests = _run(malformed=kind)
    _show(f"malformed-{kind}", result, node)
    assert node.status is NodeStatus.FAILED
    assert requests == 1  # a protocol error, not a transient one: not retried
    assert url in node.error and expected in node.error


@pytest.mark.timeout(120)
def test_bytes_trickled_slower_than_the_read_timeout_time_out_after_the_attempts():
    result, node, url, requests = _run(trickle_interval_s=TIMEOUT_S * 3)
    _show("trickle", result, node)
    assert node.status is NodeStatus.FAILED and requests == 3
    assert url in node.error and f"did not answer within {TIMEOUT_S:g} s" in node.error
    assert "3 attempts" in node.error


@pytest.mark.timeout(120)
@pytest.mark.parametrize("retry_after", [None, "1"])
def test_429_forever_gives_up_after_the_attempts_naming_the_status(retry_after):
    result, node, url, requests = _run(fail_first=10**6, fail_status=429, retry_after=retry_after)
    _show(f"429 retry_after={retry_after}", result, node)
    assert node.status is NodeStatus.FAILED and requests == 3
    assert url in node.error and "429" in node.error and "3 attempts" in node.error


@pytest.mark.timeout(120)
def test_429_forever_with_a_long_retry_after_is_stopped_by_the_runs_wall_time_cap():
    caps = CAPS.model_copy(update={"wall_time_s": 2.0})
    result, node, _url, requests = _run(
        caps, NodeStatus.SKIPPED, fail_first=10**6, fail_status=429, retry_after="3600"
    )
    _show("429 retry_after=3600, wall cap 2 s", result, node)
    assert requests == 1  # waiting out the (capped) Retry-After when the cap hit
    assert result.status != "completed"
    assert result.status == "stopped" and "time cap reached" in (result.stop_reason or "")
    assert node.status is not NodeStatus.DONE and "time cap" in (node.error or "")
