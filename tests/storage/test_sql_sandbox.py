"""The SQL console's sandbox holds at the engine level, whatever the query's names are.

Every escape goes through ``run_sandboxed`` directly (no name filter in front) as well as the
console's ``run_read_only``: the sandbox alone must keep files, the environment, the network,
extensions and settings out of reach. Canaries: a file holding a secret string and an
environment variable holding another; no result may ever contain either.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.run.events import RunStarted
from storage.sql_console import QueryRefused, run_read_only, run_sandboxed
from storage.traces import TraceStore

CANARY_ENV = "ARBOR_TEST_SECRET_KEY"
CANARY_ENV_VALUE = "sk-env-canary-7f3a9c"
CANARY_FILE_VALUE = "file-canary-51b2e0"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("sandbox")
    traces = TraceStore(root / "traces.duckdb")
    traces.record(
        RunStarted(
            run_id="r1",
            session_id="s",
            task="a task",
            plan_json="{}",
            caps_json="{}",
            started_at=datetime.now(UTC),
        )
    )
    (root / "canary.csv").write_text(f"secret\n{CANARY_FILE_VALUE}\n", encoding="utf-8")
    return traces


@pytest.fixture(scope="module", autouse=True)
def canary_env():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CANARY_ENV, CANARY_ENV_VALUE)
        yield


def _leaks(table) -> bool:
    text = repr(table.to_pylist())
    return CANARY_ENV_VALUE in text or CANARY_FILE_VALUE in text or "root:x:0:0" in text


def _targets(store: TraceStore) -> list[str]:
    canary = str(store.path.parent / "canary.csv")
    return [canary, "/etc/passwd", "/proc/self/environ", f"/proc/{1}/environ", "/etc/*"]


READERS = [
    "read_csv('{t}')",
    "read_csv_auto('{t}')",
    "read_text('{t}')",
    "read_blob('{t}')",
    "read_json('{t}')",
    "read_parquet('{t}')",
    "sniff_csv('{t}')",
    "glob('{t}')",
    "'{t}'",
    "query('SELECT * FROM read_text(''{t}'')')",
    "query_table('{t}')",
    "json_execute_serialized_sql(json_serialize_sql('SELECT * FROM read_text(''{t}'')'))",
]
WRAPPERS = [
    "SELECT * FROM {r}",
    "WITH x AS (SELECT * FROM {r}) SELECT * FROM x",
    "SELECT * FROM (SELECT * FROM {r}) AS sub",
    "SELECT (SELECT count(*) FROM {r}) AS n",
    "SELECT * FROM runs, LATERAL (SELECT * FROM {r}) AS l",
    "SELECT * FROM {r} UNION ALL SELECT * FROM {r}",
    "/* comment */ select\t*\nFROM {r} -- tail",
]
SCALARS = [
    "getenv('{e}')",
    "current_setting('home_directory')",
    "current_setting('secret_directory')",
]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    reader=st.sampled_from(READERS),
    wrapper=st.sampled_from(WRAPPERS),
    target_index=st.integers(0, 4),
    upper=st.booleans(),
)
def test_generated_file_reading_escapes_never_return_a_secret(
    store, reader, wrapper, target_index, upper
):
    target = _targets(store)[target_index]
    sql = wrapper.format(r=reader.format(t=target))
    if upper:
        sql = sql.upper().replace(target.upper(), target)
    try:
        table = run_sandboxed(store.path, sql, timeout_s=5)
    except QueryRefused:
        return
    assert not _leaks(table), sql


@pytest.mark.parametrize("scalar", SCALARS)
def test_the_environment_and_the_home_directory_are_out_of_reach(store, scalar):
    sql = f"SELECT {scalar.format(e=CANARY_ENV)} AS v"
    try:
        table = run_sandboxed(store.path, sql)
    except QueryRefused:
        return
    assert not _leaks(table)
    assert "/root" not in repr(table.to_pylist())


@pytest.mark.parametrize(
    "sql",
    [
        "SET enable_external_access = true",
        "SET lock_configuration = false",
        "RESET enable_external_access",
        "PRAGMA enable_external_access",
        "INSTALL httpfs",
        "LOAD httpfs",
        "ATTACH '/tmp/arbor-sandbox-other.duckdb' AS other",
        "COPY (SELECT 1) TO '/tmp/arbor-sandbox-out.csv'",
        "CREATE TABLE store.evil AS SELECT 1",
        "DELETE FROM runs",
        "CREATE SECRET (TYPE s3, KEY_ID 'a', SECRET 'b')",
        "SELECT * FROM read_parquet('https://example.invalid/x.parquet')",
        "CALL enable_logging()",
    ],
)
def test_settings_writes_extensions_and_network_are_refused_by_the_engine(store, sql, tmp_path):
    with pytest.raises(QueryRefused):
        run_sandboxed(store.path, sql)
    # and the store is unchanged and still readable
    assert run_sandboxed(store.path, "SELECT count(*) AS n FROM runs").to_pylist() == [{"n": 1}]


def test_the_sandbox_reports_its_settings_as_locked_down(store):
    rows = run_sandboxed(
        store.path,
        "SELECT name, value FROM duckdb_settings() WHERE name IN ('enable_external_access',"
        " 'lock_configuration', 'autoinstall_known_extensions', 'autoload_known_extensions')",
    ).to_pylist()
    assert {row["name"]: row["value"] for row in rows} == {
        "enable_external_access": "false",
        "lock_configuration": "true",
        "autoinstall_known_extensions": "false",
        "autoload_known_extensions": "false",
    }


def test_a_query_that_wants_more_memory_than_the_cap_is_stopped(store):
    with pytest.raises(QueryRefused, match=r"(?i)memory"):
        run_sandboxed(
            store.path,
            "SELECT string_agg(repeat('x', 10000), '') AS s FROM range(100000)",
            timeout_s=60,
        )


def test_the_console_still_answers_ordinary_questions(store):
    result = run_read_only(store, "SELECT run_id, task FROM runs")
    assert result.frame.to_dict("records") == [{"run_id": "r1", "task": "a task"}]


def test_the_escapes_are_real_outside_the_sandbox(store):
    """Control: the same queries on an ordinary DuckDB connection do read the canaries."""
    import duckdb

    canary = _targets(store)[0]
    plain = duckdb.connect()
    sql = READERS[-1].format(t=canary)
    assert CANARY_FILE_VALUE in repr(plain.execute(f"SELECT * FROM {sql}").fetchall())
    environ = plain.execute("SELECT content FROM read_text('/proc/self/environ')").fetchone()[0]
    assert "PATH=" in environ  # the process environment, where API keys live, is readable
