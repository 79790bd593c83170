"""Every file-taking command and every upload widget's function, fed a corpus of malformed files.

The corpus is generated from valid seeds (a plan as JSON and YAML, a session file, an .arbor
bundle of a real recorded run, a JSONL dataset): truncations, single-byte flips, deep nesting,
wrong JSON types, random bytes, an empty file and a huge one. The rule under test: a clear
one-line error and a non-zero exit (or, for the upload functions, an ``ArborError``), never a
traceback; and a refused import changes nothing in the data directory.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.cli import main
from app.services.tuning import load_upload
from engine.errors import ArborError
from engine.plan.files import export_plan, import_plan
from engine.run.budget import RunCaps
from engine.run.executor import execute_plan
from storage.bundles import export_session, import_upload
from storage.sessions import ArborSession
from storage.workspace import Workspace
from tests.support.fake_backend import fake_factory, fake_models, tree

SEED = 20261205


def _mutations(
    name: str, data: bytes, rng: random.Random, count: int
) -> Iterator[tuple[str, bytes]]:
    """Truncations and single-byte flips of ``data``."""
    for i in range(count):
        cut = rng.randrange(0, max(len(data), 1))
        yield f"{name}-cut{i}", data[:cut]
        flipped = bytearray(data)
        at = rng.randrange(len(flipped))
        flipped[at] ^= 1 << rng.randrange(8)
        yield f"{name}-flip{i}", bytes(flipped)


def _generic(rng: random.Random) -> Iterator[tuple[str, bytes]]:
    depth = 50_000
    yield "deep-array.json", b"[" * depth + b"]" * depth
    yield (
        "deep-object.json",
        b'{"format":"arbor-plan","root":' + b'{"a":' * depth + b"1" + b"}" * (depth + 1),
    )
    yield "deep.yaml", b"a: " + b"[" * depth + b"]" * depth
    yield "list.json", b"[1, 2, 3]"
    yield "number.json", b"42"
    yield "string.json", b'"a plan"'
    yield "null.json", b"null"
    yield "wrong-types.json", b'{"format":"arbor-plan","task":7,"root":{"id":[],"title":{}}}'
    yield "empty.json", b""
    yield "random.bin", rng.randbytes(4096)
    yield "not-utf8.json", b'{"task": "\xff\xfe\xfa"}'
    yield "huge.json", b'{"task": "' + b"x" * (30 << 20) + b'"}'


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Path]:
    rng = random.Random(SEED)
    root = tmp_path_factory.mktemp("corpus")
    plan = fake_models(
        tree({"id": "root", "children": [{"id": "a"}, {"id": "b", "depends_on": ["a"]}]})
    )
    seeds = {
        "plan.json": export_plan(plan, "json").encode(),
        "plan.yaml": export_plan(plan, "yaml").encode(),
        "session.json": ArborSession(name="s", task=plan.task, plan=plan).to_file_text().encode(),
        "data.jsonl": b'{"id": "1", "input": "2+2", "answer": "4"}\n'
        b'{"id": "2", "input": "3+3", "answer": "6"}\n',
    }
    # A bundle of a real run recorded through the trace writer (fake models: the format is what
    # is under test here).
    workspace = Workspace(root / "seed-data")
    session = workspace.sessions.save(ArborSession(name="seed", task=plan.task, plan=plan))
    factory, _ = fake_factory()
    with workspace.traces.writer() as writer:
        result = execute_plan(
            plan, RunCaps(), backend_factory=factory, listeners=[writer], session_id=session.id
        )
    workspace.sessions.add_run(session.id, result.run_id)
    export_session(workspace, session.id, root / "seed.arbor")
    seeds["bundle.arbor"] = (root / "seed.arbor").read_bytes()

    files = []
    for name, data in seeds.items():
        for variant, mutated in _mutations(name, data, rng, count=6):
            suffix = Path(name).suffix
            files.append((variant.replace(suffix, "") + suffix, mutated))
    files += list(_generic(rng))
    paths = []
    for name, data in files:
        path = root / "files" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        paths.append(path)
    return paths


def _fingerprint(data: Path) -> tuple[int, ...]:
    workspace = Workspace(data)
    with workspace.traces.connect() as con:
        rows = [con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("runs", "node_executions", "model_calls")]  # fmt: skip
    return (len(workspace.sessions.list()), *rows)


@pytest.mark.parametrize(
    "command",
    [
        ["export", "{}"],
        ["import-session", "{}"],
        ["allocate", "{}"],
        ["run", "{}", "--time-cap", "1"],
    ],
    ids=["export", "import-session", "allocate", "run"],
)
def test_every_file_command_answers_malformed_files_in_one_line(
    command, corpus, tmp_path, monkeypatch, capsys
):
    data = tmp_path / "data"
    monkeypatch.setenv("ARBOR_DATA_DIR", str(data))
    before = _fingerprint(data)
    unexpected = []
    for path in corpus:
        if command[0] == "run" and path.suffix == ".arbor":
            continue  # run takes plan and session files
        status = main([part.replace("{}", str(path)) for part in command])
        err = capsys.readouterr().err.strip()
        # Status 1 is `run`'s "the run did not complete"; an unexpected exception says so.
        if "error: unexpected" in err or "Traceback" in err:
            unexpected.append(f"{path.name}: {status} {err[:200]}")
        if status == 2:
            lines = [line for line in err.splitlines() if line.startswith("error: ")]
            assert len(lines) == 1, f"{path.name}: {err[:300]}"
            if command[0] == "import-session":
                assert _fingerprint(data) == before, path.name
        elif command[0] == "import-session":
            before = _fingerprint(data)  # a flip the checks cannot see (none expected)
    assert unexpected == []


def test_the_upload_functions_raise_only_arbor_errors(corpus, tmp_path):
    workspace = Workspace(tmp_path / "data")
    before = _fingerprint(workspace.root)
    refused = {"plan": 0, "session": 0, "dataset": 0}
    for path in corpus:
        data = path.read_bytes()
        try:  # the Workbench's "Import a plan" box
            import_plan(data.decode("utf-8", errors="replace"), source=path.name)
        except ArborError:
            refused["plan"] += 1
        try:  # the Sessions page's upload
            import_upload(workspace, data, path.name)
        except ArborError:
            refused["session"] += 1
            assert _fingerprint(workspace.root) == before, path.name
        else:
            before = _fingerprint(workspace.root)
        try:  # the Evaluate page's dataset upload
            load_upload(workspace.root, path.with_suffix(".jsonl").name, data)
        except ArborError:
            refused["dataset"] += 1
    assert all(count > len(corpus) // 2 for count in refused.values()), refused


def _bundle_with(members: dict[str, bytes]) -> bytes:
    """A zip with a well-formed manifest listing ``members`` with their checksums."""
    import hashlib
    import io
    import json
    import zipfile

    manifest = {
        "format": "arbor-bundle",
        "version": 2,
        "trace_schema_version": 6,
        "run_ids": [],
        "members": {name: hashlib.sha256(data).hexdigest() for name, data in members.items()},
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", json.dumps(manifest))
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_zip_bomb_is_refused_before_anything_is_extracted(tmp_path, monkeypatch):
    workspace = Workspace(tmp_path / "data")
    before = _fingerprint(workspace.root)
    bomb = _bundle_with({"session.json": b"\0" * (64 << 20)})  # 64 MB of zeros, ~64 KB zipped
    assert len(bomb) < 200_000
    extracted: list[int] = []
    monkeypatch.setattr(
        "storage.bundles.reading._extract",
        lambda *args: extracted.append(1) or "",  # nothing may be extracted at all
    )
    with pytest.raises(ArborError, match="zip bomb"):
        import_upload(workspace, bomb, "bomb.arbor")
    assert extracted == [] and _fingerprint(workspace.root) == before


def test_members_over_the_size_limits_are_refused(tmp_path, monkeypatch):
    from storage.bundles import format as limits

    workspace = Workspace(tmp_path / "data")
    data = random.Random(SEED).randbytes(3 << 20)  # incompressible: the ratio check passes
    bundle = _bundle_with({"session.json": data})
    monkeypatch.setattr(limits, "MAX_MEMBER_BYTES", 2 << 20)
    with pytest.raises(ArborError, match=r"would expand to 3\.0 MB"):
        import_upload(workspace, bundle, "big.arbor")
    monkeypatch.setattr(limits, "MAX_MEMBER_BYTES", 8 << 20)
    monkeypatch.setattr(limits, "MAX_TOTAL_BYTES", 2 << 20)
    with pytest.raises(ArborError, match="members would expand to"):
        import_upload(workspace, bundle, "big.arbor")


def test_an_unsupported_compression_method_is_a_corrupt_file_not_a_traceback(tmp_path):
    """zipfile raises NotImplementedError for a method it cannot read (one flipped byte)."""
    workspace = Workspace(tmp_path / "data")
    bundle = bytearray(_bundle_with({"session.json": b'{"format": "x"}' * 100}))
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):  # local, central
        start = 0
        while (at := bundle.find(signature, start)) >= 0:
            bundle[at + offset] = 99  # compression method 99: not one zipfile knows
            start = at + 4
    before = _fingerprint(workspace.root)
    with pytest.raises(ArborError, match=r"corrupt|damaged"):
        import_upload(workspace, bytes(bundle), "method.arbor")
    assert _fingerprint(workspace.root) == before
