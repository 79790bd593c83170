"""A key in a model URL is refused where it is typed and masked wherever an older one shows up.

Entry points (registry, CLI, plan files, session export) refuse ``user:secret@`` and
``?api_key=...`` with a pointer to the key variable. A URL with credentials that an older
registry or session still holds never reaches a label, an error, a trace or a listing: the
tests look for the secret itself in each, and in every text column of a real trace store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import PlanError, RegistryError
from engine.models import RemoteBackend
from engine.models.registry import REGISTRY_FORMAT, REGISTRY_VERSION, Registry
from engine.plan import ModelRef, Node, Plan
from engine.plan.files import export_plan, import_plan
from engine.redaction import redact, url_credentials
from engine.run.executor import execute_plan
from storage.traces import MIGRATIONS, TraceStore
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-Value-42"

secrets = st.text(
    alphabet=st.characters(whitelist_categories=("Ll", "Lu", "Nd"), whitelist_characters="-_."),
    min_size=6,
    max_size=30,
)
param_names = st.sampled_from(
    ["api_key", "apikey", "key", "API-KEY", "access_token", "token", "sig", "password", "auth"]
)
hosts = st.sampled_from(["127.0.0.1:8000", "example.org", "llm.internal:443", "[::1]:9000"])


def secret_urls() -> st.SearchStrategy[tuple[str, str]]:
    userinfo = st.builds(
        lambda user, secret, host: (f"https://{user}:{secret}@{host}/v1", secret),
        secrets,
        secrets,
        hosts,
    )
    query = st.builds(
        lambda name, secret, host, extra: (
            f"http://{host}/v1?{'api-version=2024&' if extra else ''}{name}={secret}",
            secret,
        ),
        param_names,
        secrets,
        hosts,
        st.booleans(),
    )
    return st.one_of(userinfo, query)


@given(
    secret_urls(),
    st.sampled_from(["{u}", "Cannot reach {u} (3 attempts)", '{{"base_url": "{u}"}}']),
)
def test_generated_credentials_are_found_and_masked_in_any_text(url_and_secret, template):
    url, secret = url_and_secret
    assert url_credentials(url), url
    masked = redact(template.format(u=url))
    assert secret not in masked
    assert "***" in masked


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/v1",
        "https://api.example.org/v1?api-version=2024-06-01",
        "https://h.example/openai/deployments/x",
    ],
)
def test_urls_without_credentials_pass_unchanged(url):
    assert url_credentials(url) == []
    assert redact(url) == url


@pytest.mark.parametrize(
    "url, named",
    [
        (f"https://me:{SECRET}@example.org/v1", "user name and password"),
        (f"http://127.0.0.1:8000/v1?api_key={SECRET}", "'api_key'"),
    ],
)
def test_the_registry_refuses_a_url_with_credentials_and_says_where_keys_go(tmp_path, url, named):
    registry = Registry(tmp_path / "models.json")
    with pytest.raises(RegistryError) as refused:
        registry.add_remote("lab", url, "m")
    message = str(refused.value)
    assert named in message and "environment variable" in message
    assert SECRET not in message
    assert not (tmp_path / "models.json").exists()


def _older_registry(data: Path, url: str) -> None:
    data.mkdir(parents=True, exist_ok=True)
    entry = {"name": "old", "kind": "remote", "base_url": url, "model": "m"}
    (data / "models.json").write_text(
        json.dumps({"format": REGISTRY_FORMAT, "version": REGISTRY_VERSION, "models": [entry]})
    )


def _cli(data: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=ROOT,
        env={**os.environ, "ARBOR_DATA_DIR": str(data)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_cli_refuses_new_credentials_and_masks_an_older_registrys(tmp_path):
    data = tmp_path / "data"
    port = free_port()
    refused = _cli(
        data, "models", "add-remote", "--name", "x", "--base-url",
        f"http://u:{SECRET}@127.0.0.1:{port}/v1", "--model", "m",
    )  # fmt: skip
    assert refused.returncode == 2
    assert "environment variable" in refused.stderr and SECRET not in refused.stderr
    assert "Traceback" not in refused.stderr

    _older_registry(data, f"http://127.0.0.1:{port}/v1?api_key={SECRET}")
    listed = _cli(data, "models", "list")
    tested = _cli(data, "models", "test", "old")
    assert listed.returncode == 0 and "api_key=***" in listed.stdout
    assert tested.returncode == 1 and "127.0.0.1" in tested.stdout + tested.stderr
    for result in (listed, tested):
        assert SECRET not in result.stdout + result.stderr


def test_plan_files_with_credentials_are_refused_on_import():
    plan = Plan(
        task="t",
        root=Node(
            id="root",
            title="Root",
            instruction="t",
            model=ModelRef(kind="remote", base_url=f"http://h/v1?token={SECRET}", model="m"),
        ),
    )
    with pytest.raises(PlanError) as refused:
        import_plan(export_plan(plan, "json"), source="plan.json")
    assert "node root" in str(refused.value) and SECRET not in str(refused.value)


def test_an_older_sessions_url_never_reaches_a_label_an_error_or_the_trace_store(tmp_path):
    url = f"http://user:{SECRET}@127.0.0.1:{free_port()}/v1?api_key={SECRET}"
    ref = ModelRef(kind="remote", base_url=url, model="m")
    assert SECRET not in ref.label
    backend = RemoteBackend(url, "m", attempts=1, timeout_s=2)
    assert SECRET not in backend.label

    store = TraceStore(tmp_path / "traces.duckdb")
    plan = Plan(task="t", root=Node(id="root", title="Root", instruction="say hi", model=ref))
    with store.writer() as writer:
        result = execute_plan(plan, listeners=[writer])
    assert result.status == "failed"
    errors = [r.error or "" for r in result.nodes.values()]
    assert any("127.0.0.1" in e for e in errors)
    assert all(SECRET not in e for e in errors)
    assert _secret_in_any_text_column(store.path) == []


def _secret_in_any_text_column(path: Path) -> list[str]:
    TraceStore(path).release()  # a read-only connection needs the file to itself
    con = duckdb.connect(str(path), read_only=True)
    try:
        columns = con.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE data_type = 'VARCHAR' AND table_name IN"
            " ('runs', 'node_executions', 'model_calls')"
        ).fetchall()
        return [
            f"{table}.{column}"
            for table, column in columns
            if con.execute(
                f"SELECT count(*) FROM {table} WHERE contains({column}, ?)", [SECRET]
            ).fetchone()[0]
        ]
    finally:
        con.close()


def test_the_v5_migration_masks_credentials_recorded_by_older_versions(tmp_path):
    path = tmp_path / "traces.duckdb"
    url = f"http://me:{SECRET}@h/v1?api_key={SECRET}"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR,"
        " applied_at TIMESTAMPTZ DEFAULT now())"
    )
    for version, (name, migrate) in enumerate(MIGRATIONS[:4], start=1):
        migrate(con)
        con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, name])
    now = datetime.now(UTC)
    con.execute(
        "INSERT INTO runs (run_id, task, status, started_at, plan_json, stop_reason)"
        " VALUES ('r', 't', 'failed', ?, ?, ?)",
        [now, json.dumps({"default_model": {"base_url": url}}), f"Cannot reach {url}"],
    )
    con.execute(
        "INSERT INTO node_executions (run_id, node_id, model, status, error)"
        " VALUES ('r', 'root', ?, 'failed', ?)",
        [f"m@{url}", f"Cannot reach {url} (3 attempts)"],
    )
    con.execute(
        "INSERT INTO model_calls (call_id, run_id, node_id, model, status, error)"
        " VALUES ('c', 'r', 'root', ?, 'error', ?)",
        [f"m@{url}", f"{url} failed"],
    )
    con.close()

    store = TraceStore(path)
    assert store.schema_version() == len(MIGRATIONS)
    assert _secret_in_any_text_column(path) == []
    node = store.node_executions("r")[0]
    assert node["model"] == "m@http://***@h/v1?api_key=***"
    assert node["error"] == "Cannot reach http://***@h/v1?api_key=*** (3 attempts)"
