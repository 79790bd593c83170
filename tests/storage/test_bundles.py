"""Portable session files (``.arbor``) on real parts: two runs of the bundled model recorded in
a real DuckDB store, exported, imported into a fresh data dir, tampered with in every way the
importer must notice, and one run through a keyed ``llama_cpp.server`` whose key must appear
nowhere in the file.

The model runs once per module (two tiny runs of a two-node plan, 8 output tokens per call);
the refusal tests reuse that file.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest

from engine.errors import PlanError, SessionError, TraceStoreError
from engine.models.registry import Registry
from engine.plan import GenerationConfig, ModelRef, Node, Plan
from engine.run.budget import RunCaps
from engine.run.events import (
    ANSWERED_STATUSES,
    ModelCallFinished,
    NodeFinished,
    NodeStarted,
    RunFinished,
    RunStarted,
)
from storage import bundles
from storage.bundles import BUNDLE_VERSION, BundleError, export_session, import_bundle
from storage.sessions import ArborSession
from storage.traces import MIGRATIONS
from storage.workspace import Workspace

pytestmark = pytest.mark.model

CAPS = RunCaps(total_tokens=2000, max_tokens_per_node=16, max_parallel=1)
T0 = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)
TABLES = ("runs", "node_executions", "model_calls")
#: Columns the import sets itself; everything else must come back as it was.
SET_ON_IMPORT = {"runs": "origin", "model_calls": "imported"}
ORDER = {"runs": "run_id", "node_executions": "run_id, node_id", "model_calls": "call_id"}


def tiny_plan(model: ModelRef | None = None) -> Plan:
    """Two nodes, 8 output tokens per call: a leaf and the root that combines it."""
    return Plan(
        task="Name a colour.",
        root=Node(
            id="root",
            title="Answer",
            instruction="Answer in one word.",
            children=[Node(id="pick", title="Pick", instruction="Name one colour.")],
        ),
        default_model=model or ModelRef(),
        default_generation=GenerationConfig(temperature=0.0, max_tokens=8, seed=7),
    )


def rows(
    workspace: Workspace, table: str, run_ids: list[str], without: tuple[str, ...] = ()
) -> list[tuple[Any, ...]]:
    """Every column of the runs' rows but the ones import sets (and ``without``), in a fixed
    order."""
    skip = [*without, *([SET_ON_IMPORT[table]] if table in SET_ON_IMPORT else [])]
    select = f"* EXCLUDE ({', '.join(dict.fromkeys(skip))})" if skip else "*"
    with workspace.traces.connect() as con:
        return con.execute(
            f"SELECT {select} FROM {table} WHERE run_id IN (SELECT unnest(?::VARCHAR[]))"
            f" ORDER BY {ORDER[table]}",
            [run_ids],
        ).fetchall()


def counts(workspace: Workspace) -> tuple[int, ...]:
    """Sessions, revisions of them, runs, node rows, call rows."""
    sessions = workspace.sessions.list()
    revisions = sum(workspace.sessions.revisions.count(s.id) for s in sessions)
    with workspace.traces.connect() as con:
        stored = [con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES]
    return (len(sessions), revisions, *stored)


def leftovers(folder: Path) -> list[str]:
    """Temporary files an export might have left next to its target."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


@pytest.fixture(scope="module")
def source(tmp_path_factory, bundled_path) -> dict[str, Any]:
    """A data dir with one session and two real runs of the bundled model, and its .arbor file."""
    root = tmp_path_factory.mktemp("source")
    workspace = Workspace(root / "data")
    plan = tiny_plan()
    session = workspace.sessions.save(
        ArborSession(name="Colour", task=plan.task, plan=plan, caps=CAPS)
    )
    first = workspace.run_plan(plan, CAPS, session_id=session.id)
    second = workspace.run_plan(plan, CAPS, session_id=session.id, use_cache=False)
    # Short outputs cut off at the token limit make a run "suspect": answered all the same.
    reasons = (first.stop_reason, second.stop_reason)
    assert {first.status, second.status} <= ANSWERED_STATUSES, reasons
    bundle = root / "colour.arbor"
    report = export_session(workspace, session.id, bundle)
    return {
        "workspace": workspace,
        "session": workspace.sessions.get(session.id),
        "run_ids": [first.run_id, second.run_id],
        "bundle": bundle,
        "report": report,
    }


@pytest.fixture(scope="module")
def imported_template(source, tmp_path_factory) -> Path:
    """A data dir the bundle was imported into once (copied for tests that change it)."""
    data = tmp_path_factory.mktemp("imported") / "data"
    import_bundle(Workspace(data), source["bundle"])
    return data


@pytest.fixture
def target(imported_template, tmp_path) -> Workspace:
    """A data dir with sessions and runs already in it: refusals must leave them alone."""
    data = tmp_path / "target"
    shutil.copytree(imported_template, data)
    return Workspace(data)


# -- round trip ------------------------------------------------------------------------------
def test_round_trip_brings_back_identical_runs_nodes_and_calls(source, tmp_path):
    fresh = Workspace(tmp_path / "fresh")
    report = import_bundle(fresh, source["bundle"])
    run_ids = source["run_ids"]

    assert report.kind == f"bundle v{BUNDLE_VERSION}"
    assert report.runs_imported == run_ids and report.runs_skipped == []
    assert report.session.id == source["session"].id and not report.new_id
    for table in TABLES:
        original, copied = rows(source["workspace"], table, run_ids), rows(fresh, table, run_ids)
        assert copied == original, f"{table} rows differ after the round trip"
    assert len(rows(fresh, "model_calls", run_ids)) == 4  # two runs of two calls

    with fresh.traces.connect() as con:
        origins = con.execute("SELECT DISTINCT origin FROM runs").fetchall()
        flags = con.execute("SELECT DISTINCT imported FROM model_calls").fetchall()
    assert origins == [(f"imported from colour.arbor on {datetime.now(UTC):%Y-%m-%d}",)]
    assert flags == [(True,)]
    saved = fresh.sessions.get(report.session.id)
    assert saved.run_ids == run_ids
    assert saved.plan == source["session"].plan and saved.caps == CAPS
    assert fresh.sessions.revisions.count(saved.id) == 1


def test_imported_calls_are_never_cache_hits_so_a_rerun_calls_the_model(source, tmp_path):
    fresh = Workspace(tmp_path / "fresh")
    session = import_bundle(fresh, source["bundle"]).session
    result = fresh.run_plan(session.plan, session.caps, session_id=session.id)

    assert result.status in ANSWERED_STATUSES, result.stop_reason
    assert result.reused == [] and sorted(result.executed) == ["pick", "root"]
    calls = fresh.traces.model_calls(result.run_id)
    assert len(calls) == 2 and all(c["output_tokens"] > 0 for c in calls)
    assert all(c["reused_from"] is None for c in calls)
    assert fresh.traces.run(result.run_id)["origin"] is None  # recorded here
    assert fresh.sessions.get(session.id).run_ids == [*source["run_ids"], result.run_id]


def test_an_imported_run_is_read_only_and_cannot_be_resumed(target, source):
    with pytest.raises(TraceStoreError, match=r"imported .* read-only") as info:
        target.resume_run(source["run_ids"][0])
    assert "Re-run its session" in str(info.value)


def test_export_of_chosen_runs_carries_only_those(source, tmp_path):
    workspace, session = source["workspace"], source["session"]
    second = source["run_ids"][1]
    path = tmp_path / "second.arbor"
    report = export_session(workspace, session.id, path, run_ids=[second])
    assert report.run_ids == [second]

    with zipfile.ZipFile(path) as bundle:
        manifest = json.loads(bundle.read("manifest.json"))
        carried = json.loads(bundle.read("session.json"))
        for table in TABLES:
            table_rows = pq.read_table(io.BytesIO(bundle.read(f"traces/{table}.parquet")))
            assert set(table_rows.column("run_id").to_pylist()) == {second}, table
    assert manifest["run_ids"] == [second] and carried["run_ids"] == [second]

    fresh = Workspace(tmp_path / "fresh")
    import_bundle(fresh, path)
    assert [r["run_id"] for r in fresh.traces.runs()] == [second]
    assert rows(fresh, "model_calls", [second]) == rows(workspace, "model_calls", [second])


def test_the_manifest_lists_every_member_with_its_sha256(source):
    with zipfile.ZipFile(source["bundle"]) as bundle:
        manifest = json.loads(bundle.read("manifest.json"))
        names = set(bundle.namelist())
        digests = {
            name: hashlib.sha256(bundle.read(name)).hexdigest()
            for name in names - {"manifest.json"}
        }
        models = json.loads(bundle.read("models.json"))
    assert manifest["format"] == "arbor-bundle" and manifest["version"] == 2
    assert manifest["trace_schema_version"] == len(MIGRATIONS)
    assert manifest["session_id"] == source["session"].id
    assert manifest["run_ids"] == source["run_ids"]
    assert manifest["members"] == digests
    assert set(digests) == {
        "session.json",
        "models.json",
        "traces/runs.parquet",
        "traces/node_executions.parquet",
        "traces/model_calls.parquet",
        "traces/annotations.parquet",  # carried since annotations (empty here)
    }
    assert models["format"] == "arbor-models"
    assert [m["name"] for m in models["models"]] == ["bundled"]


def test_importing_twice_skips_the_runs_and_duplicates_no_rows(target, source):
    before = counts(target)
    report = import_bundle(target, source["bundle"])
    assert report.runs_imported == [] and report.runs_skipped == source["run_ids"]
    assert any("skipped" in w for w in report.warnings)
    after = counts(target)
    assert after[2:] == before[2:], "trace rows were duplicated"
    # The session id was taken, so the file became a new session, without runs of its own.
    assert report.new_id and report.session.id != source["session"].id
    assert after[0] == before[0] + 1 and target.sessions.get(report.session.id).run_ids == []
    assert target.traces.run(source["run_ids"][0])["session_id"] == source["session"].id


def test_export_refuses_unknown_and_foreign_runs_by_name_and_leaves_no_file(source, tmp_path):
    workspace, session = source["workspace"], source["session"]
    other = workspace.sessions.save(ArborSession(name="Other", task="x"))
    path = tmp_path / "refused.arbor"
    with pytest.raises(BundleError, match="no run 'run-nope'"):
        export_session(workspace, session.id, path, run_ids=["run-nope"])
    with pytest.raises(BundleError, match=f"belongs to session '{session.id}'"):
        export_session(workspace, other.id, path, run_ids=[source["run_ids"][0]])
    with pytest.raises(SessionError, match="'no-such-session'"):
        export_session(workspace, "no-such-session", path)
    assert not path.exists() and leftovers(tmp_path) == []


def test_a_failed_export_leaves_the_old_file_and_no_half_file(source, tmp_path, monkeypatch):
    path = tmp_path / "colour.arbor"
    path.write_bytes(b"the previous export")
    real_write = zipfile.ZipFile.write

    def fail_on_parquet(self, filename, arcname=None, *args, **kwargs):
        if str(arcname).endswith("model_calls.parquet"):
            raise OSError("disk full")
        return real_write(self, filename, arcname, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "write", fail_on_parquet)
    with pytest.raises(OSError, match="disk full"):
        export_session(source["workspace"], source["session"].id, path)
    assert path.read_bytes() == b"the previous export"
    assert leftovers(tmp_path) == []


# -- refused files ---------------------------------------------------------------------------
def rebuild(
    content: bytes,
    *,
    replace: dict[str, bytes | None] | None = None,
    manifest: Callable[[dict], None] | None = None,
    rehash: bool = True,
) -> bytes:
    """The bundle with members replaced (None drops one) and the manifest edited; with
    ``rehash`` the checksums are recomputed so only the intended defect remains."""
    replace = replace or {}
    source = zipfile.ZipFile(io.BytesIO(content))
    members = {name: source.read(name) for name in source.namelist()}
    for name, body in replace.items():
        if body is None:
            members.pop(name, None)
        else:
            members[name] = body
    meta = json.loads(members.pop("manifest.json"))
    if rehash:
        meta["members"] = {
            name: hashlib.sha256(body).hexdigest() for name, body in members.items()
        } | {name: meta["members"][name] for name in meta["members"] if name not in members}
    if manifest is not None:
        manifest(meta)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as bundle:
        bundle.writestr("manifest.json", json.dumps(meta))
        for name, body in members.items():
            bundle.writestr(name, body)
    return out.getvalue()


def parquet_with(content: bytes, member: str, select: str) -> bytes:
    """Member ``member`` rewritten by DuckDB as ``SELECT {select} FROM`` itself."""
    with zipfile.ZipFile(io.BytesIO(content)) as bundle:
        body = bundle.read(member)
    folder = Path(tempfile.mkdtemp())
    (folder / "in.parquet").write_bytes(body)
    con = duckdb.connect()
    con.execute(
        f"COPY (SELECT {select} FROM read_parquet('{folder / 'in.parquet'}'))"
        f" TO '{folder / 'out.parquet'}' (FORMAT parquet)"
    )
    con.close()
    data = (folder / "out.parquet").read_bytes()
    shutil.rmtree(folder)
    return data


def flip_byte_inside(content: bytes, member: str) -> bytes:
    """The raw archive with one byte of ``member``'s stored data inverted."""
    info = zipfile.ZipFile(io.BytesIO(content)).getinfo(member)
    header = 30 + len(info.filename.encode()) + len(info.extra)
    at = info.header_offset + header + info.compress_size // 2
    return content[:at] + bytes([content[at] ^ 0xFF]) + content[at + 1 :]


def office_zip(_: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as docx:
        docx.writestr("[Content_Types].xml", "<Types/>")
        docx.writestr("word/document.xml", "<document/>")
    return out.getvalue()


def calls_member(content: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(content)) as bundle:
        body = bytearray(bundle.read("traces/model_calls.parquet"))
    body[len(body) // 2] ^= 0xFF
    return bytes(body)


CALLS = "traces/model_calls.parquet"
BAD_FILES: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "member changed after export (checksum)": (
        lambda c: rebuild(c, replace={CALLS: calls_member(c)}, rehash=False),
        f"corrupt: member {CALLS} does not match its checksum",
    ),
    "byte flipped inside the archive": (
        lambda c: flip_byte_inside(c, CALLS),
        f"corrupt: member {CALLS}",
    ),
    "member missing": (
        lambda c: rebuild(c, replace={"traces/node_executions.parquet": None}, rehash=False),
        "corrupt: member traces/node_executions.parquet is listed in the manifest but missing",
    ),
    "truncated zip": (
        lambda c: c[: len(c) // 2],
        "is not an Arbor session file (not a zip archive)",
    ),
    "random bytes": (
        lambda _: b"\x00\x01" + random.Random(7).randbytes(4096),
        "is not an Arbor session file (not a zip archive)",
    ),
    "a zip of something else": (
        office_zip,
        "not an Arbor session file: it has no manifest.json; it looks like an Office document",
    ),
    "a zip with another manifest": (
        lambda c: rebuild(c, manifest=lambda m: m.update(format="something-else")),
        "manifest.json has format 'something-else'",
    ),
    "newer bundle version": (
        lambda c: rebuild(c, manifest=lambda m: m.update(version=BUNDLE_VERSION + 1)),
        f"version {BUNDLE_VERSION + 1} Arbor session file; this Arbor reads up to version "
        f"{BUNDLE_VERSION}",
    ),
    "newer trace schema": (
        lambda c: rebuild(c, manifest=lambda m: m.update(trace_schema_version=len(MIGRATIONS) + 1)),
        f"trace schema version {len(MIGRATIONS) + 1}; this trace store has version "
        f"{len(MIGRATIONS)}",
    ),
    "a column this store does not know": (
        lambda c: rebuild(c, replace={CALLS: parquet_with(c, CALLS, "*, 42 AS mystery")}),
        "columns this trace store does not know: mystery",
    ),
}


@pytest.mark.parametrize("defect", list(BAD_FILES))
def test_a_bad_file_is_refused_with_its_reason_and_nothing_changes(
    defect, source, target, tmp_path
):
    make, message = BAD_FILES[defect]
    bad = tmp_path / "bad.arbor"
    bad.write_bytes(make(source["bundle"].read_bytes()))
    before = counts(target)
    with pytest.raises(BundleError) as info:
        import_bundle(target, bad)
    assert message in str(info.value)
    assert str(info.value).startswith("bad.arbor")
    assert counts(target) == before


def test_a_plan_file_is_named_as_such_when_given_as_a_session_file(target, tmp_path):
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(tiny_plan().to_json(), encoding="utf-8")
    before = counts(target)
    with pytest.raises(BundleError, match="it is an Arbor plan file"):
        import_bundle(target, plan_file)
    assert counts(target) == before
    report = bundles.import_file(target, plan_file)  # the Sessions page takes it as a plan
    assert report.kind == "plan file" and report.session.plan == tiny_plan()


def test_a_rejected_transaction_saves_nothing_in_either_store(source, target, tmp_path):
    # A call id the target already holds (under another run) makes the insert fail midway.
    fresh_bundle = tmp_path / "again.arbor"
    content = source["bundle"].read_bytes()

    def rename_runs(text: str) -> str:
        for run_id in source["run_ids"]:
            text = text.replace(run_id, run_id + "-x")
        return text

    replaced = {}
    with zipfile.ZipFile(io.BytesIO(content)) as bundle:
        replaced["session.json"] = rename_runs(bundle.read("session.json").decode()).encode()
    replaced["traces/runs.parquet"] = parquet_with(
        content, "traces/runs.parquet", "* REPLACE (run_id || '-x' AS run_id)"
    )
    replaced["traces/node_executions.parquet"] = parquet_with(
        content, "traces/node_executions.parquet", "* REPLACE (run_id || '-x' AS run_id)"
    )
    replaced[CALLS] = parquet_with(content, CALLS, "* REPLACE (run_id || '-x' AS run_id)")
    fresh_bundle.write_bytes(
        rebuild(
            content,
            replace=replaced,
            manifest=lambda m: m.update(run_ids=[r + "-x" for r in m["run_ids"]]),
        )
    )
    before = counts(target)
    with pytest.raises(BundleError, match="trace store refused its rows"):
        import_bundle(target, fresh_bundle)
    assert counts(target) == before


# -- older files -----------------------------------------------------------------------------
def test_a_version_1_json_session_file_is_imported_without_runs(source, tmp_path):
    session = source["session"]
    assert session.run_ids  # the plain file names runs it cannot carry
    old_file = tmp_path / "colour.json"
    old_file.write_text(session.to_file_text(), encoding="utf-8")
    fresh = Workspace(tmp_path / "fresh")
    report = import_bundle(fresh, old_file)
    assert report.kind == "session file v1"
    assert report.runs_imported == [] and report.runs_skipped == []
    assert any("version 1" in w and "without runs" in w for w in report.warnings)
    saved = fresh.sessions.get(session.id)
    assert saved.plan == session.plan and saved.caps == session.caps and saved.run_ids == []
    assert counts(fresh)[2:] == (0, 0, 0)
    assert 1 in bundles.UPGRADES  # the migration path is a table, open for version 3


V3_V4_COLUMNS = {
    "runs": ["origin"],
    "node_executions": ["strategy", "samples", "agreement", "token_cap", "cost_cap_usd", "note"],
    "model_calls": ["role", "score", "vote", "selected", "reused_from", "imported"],
}


def test_an_older_trace_schema_imports_with_defaults_for_the_missing_columns(source, tmp_path):
    content = source["bundle"].read_bytes()
    old = rebuild(
        content,
        replace={
            f"traces/{table}.parquet": parquet_with(
                content, f"traces/{table}.parquet", f"* EXCLUDE ({', '.join(columns)})"
            )
            for table, columns in V3_V4_COLUMNS.items()
        },
        manifest=lambda m: m.update(trace_schema_version=2),
    )
    path = tmp_path / "old.arbor"
    path.write_bytes(old)
    fresh = Workspace(tmp_path / "fresh")
    report = import_bundle(fresh, path)
    run_ids = source["run_ids"]
    assert report.runs_imported == run_ids
    with fresh.traces.connect() as con:
        calls = con.execute(
            "SELECT DISTINCT role, score, vote, selected, reused_from, imported FROM model_calls"
        ).fetchall()
        nodes = con.execute(
            "SELECT DISTINCT strategy, samples, agreement, note FROM node_executions"
        ).fetchall()
        origins = con.execute("SELECT count(*) FROM runs WHERE origin LIKE 'imported from old%'")
        assert origins.fetchone()[0] == 2
    assert calls == [("answer", None, None, None, None, True)]  # v3 default, import flag
    assert nodes == [(None, None, None, None)]
    # Every column the old file had comes back as it was.
    for table, dropped in V3_V4_COLUMNS.items():
        assert rows(fresh, table, run_ids, tuple(dropped)) == rows(
            source["workspace"], table, run_ids, tuple(dropped)
        ), table


# -- secrets ---------------------------------------------------------------------------------
KEY_VARIABLE = "ARBOR_BUNDLE_TEST_KEY"


def every_string(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.items() for v in item for s in every_string(v)]
    if isinstance(value, list | tuple):
        return [s for item in value for s in every_string(item)]
    return []


@pytest.mark.server
def test_no_api_key_reaches_the_file(keyed_llama_server, monkeypatch, tmp_path):
    base_url, key = keyed_llama_server
    monkeypatch.setenv(KEY_VARIABLE, key)
    workspace = Workspace(tmp_path / "data")
    entry = Registry.in_data_dir(workspace.root).add_remote(
        "keyed gemma", base_url, "gemma", api_key_env=KEY_VARIABLE
    )
    plan = tiny_plan(entry.ref)
    session = workspace.sessions.save(ArborSession(name="Keyed", task=plan.task, plan=plan))
    result = workspace.run_plan(plan, CAPS, session_id=session.id)
    # The server demands the key, so a completed run proves it was read and sent.
    assert result.status in ANSWERED_STATUSES, result.stop_reason

    path = tmp_path / "keyed.arbor"
    export_session(workspace, session.id, path)
    raw = path.read_bytes()
    secret = key.encode()
    assert secret not in raw
    with zipfile.ZipFile(path) as bundle:
        members = {name: bundle.read(name) for name in bundle.namelist()}
    assert set(members) >= {"manifest.json", "session.json", "models.json", CALLS}
    scanned = 0
    for name, body in members.items():
        assert secret not in body, f"the key is in {name}"
        if name.endswith(".parquet"):
            table = pq.read_table(io.BytesIO(body))
            values = every_string(table.to_pylist())
        else:
            values = every_string(json.loads(body))
        assert not [v for v in values if key in v], f"the key is in a value of {name}"
        scanned += len(values)
    assert scanned > 50  # prompts, outputs, plans: the scan saw real content
    models = json.loads(members["models.json"])["models"]
    keyed = next(m for m in models if m["name"] == "keyed gemma")
    assert keyed["api_key_env"] == KEY_VARIABLE and keyed["base_url"] == base_url
    assert KEY_VARIABLE in members["session.json"].decode()


def test_export_refuses_when_a_key_value_sits_in_a_traced_prompt(tmp_path, monkeypatch):
    key = "sk-bundle-sentinel-" + "9d1c" * 10
    monkeypatch.setenv(KEY_VARIABLE, key)
    workspace = Workspace(tmp_path / "data")
    remote = ModelRef(
        kind="remote", base_url="http://127.0.0.1:9/v1", model="m", api_key_env=KEY_VARIABLE
    )
    plan = tiny_plan(remote)
    session = workspace.sessions.save(ArborSession(name="Leaky", task=plan.task, plan=plan))
    with workspace.traces.writer() as write:
        write(RunStarted("run-leak", session.id, plan.task, plan.to_json(), "{}", T0))
        write(NodeStarted("run-leak", "root", "Answer", "m", T0))
        write(
            ModelCallFinished(
                "run-leak", "root", "call-leak", "m", f'[{{"content": "my key is {key}"}}]',
                "ok", 3, 1, 0.1, "ok", None, T0, T0 + timedelta(seconds=1),
            )
        )  # fmt: skip
        write(NodeFinished("run-leak", "root", "Answer", "done", "ok", None, 3, 1, T0, T0))
        write(RunFinished("run-leak", "completed", None, "ok", 3, 1, T0))
    path = tmp_path / "leaky.arbor"
    with pytest.raises(BundleError, match=f"value of \\${KEY_VARIABLE}") as info:
        export_session(workspace, session.id, path)
    assert key not in str(info.value)
    assert not path.exists() and leftovers(tmp_path) == []
    # Without that run the session exports.
    assert export_session(workspace, session.id, path, run_ids=[]).run_ids == []
    assert key.encode() not in path.read_bytes()


def test_a_suspect_run_keeps_its_status_and_reasons_through_a_bundle(tmp_path):
    workspace = Workspace(tmp_path / "data")
    plan = tiny_plan()
    session = workspace.sessions.save(ArborSession(name="Echo", task=plan.task, plan=plan))
    reason = "echoes the prompt (100% of its words copied)"
    summary = f"1 suspect node: pick {reason}"
    with workspace.traces.writer() as write:
        write(RunStarted("run-echo", session.id, plan.task, plan.to_json(), "{}", T0))
        for node_id, suspect in (("pick", reason), ("root", None)):
            write(
                NodeFinished(
                    "run-echo", node_id, node_id, "done", "Name one colour.", None, 3, 1, T0, T0,
                    suspect=suspect,
                )
            )  # fmt: skip
        write(RunFinished("run-echo", "suspect", summary, "Name one colour.", 6, 2, T0))
    path = tmp_path / "echo.arbor"
    export_session(workspace, session.id, path)
    fresh = Workspace(tmp_path / "fresh")
    assert import_bundle(fresh, path).runs_imported == ["run-echo"]
    run = fresh.traces.run("run-echo")
    assert (run["status"], run["stop_reason"]) == ("suspect", summary)
    nodes = {n["node_id"]: n["suspect"] for n in fresh.traces.node_executions("run-echo")}
    assert nodes == {"pick": reason, "root": None}


# -- templates are checked on import ---------------------------------------------------------
HANGING = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


def _hanging_plan() -> Plan:
    plan = tiny_plan()
    leaf = plan.root.children[0].model_copy(update={"instruction": HANGING})
    return plan.model_copy(update={"root": plan.root.model_copy(update={"children": [leaf]})})


@pytest.mark.timeout(60)
def test_a_session_file_with_a_hanging_template_is_refused_at_import(tmp_path):
    session = ArborSession(name="Hang", task="t", plan=_hanging_plan())
    path = tmp_path / "hang.json"
    path.write_text(session.to_file_text(), encoding="utf-8")
    with pytest.raises(SessionError, match="Instruction of node 'pick' took longer than"):
        ArborSession.from_file_text(path.read_text(encoding="utf-8"))
    fresh = Workspace(tmp_path / "fresh")
    with pytest.raises(SessionError, match="Instruction of node 'pick' took longer than"):
        import_bundle(fresh, path)
    assert fresh.sessions.list() == []


@pytest.mark.timeout(60)
def test_a_plan_file_with_a_hanging_template_is_refused_by_import_file(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(_hanging_plan().to_json(), encoding="utf-8")
    fresh = Workspace(tmp_path / "fresh")
    with pytest.raises(PlanError, match=r"plan\.json: Instruction of node 'pick' took longer than"):
        bundles.import_file(fresh, path)
    assert fresh.sessions.list() == []
