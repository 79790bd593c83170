"""The model registry: GGUF metadata, the registry file, checks, the CLI and the Models page.

Real parts throughout: the bundled GGUF (read by our header reader and by llama.cpp as the
oracle), a real ``llama_cpp.server`` on loopback, ``run.py`` as a subprocess, the page under
AppTest. Small GGUF files with known contents are written byte by byte where a case needs one.
"""

from __future__ import annotations

import json
import os
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.errors import ModelUnavailable, RegistryError
from engine.models import LocalBackend, RemoteBackend
from engine.models.entry_checks import check_entry
from engine.models.gguf import _read_cached, read_gguf_info
from engine.models.registry import (
    BUNDLED_NAME,
    Registry,
    default_models_dir,
    make_entry,
)
from engine.plan import ModelRef
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[3]
MAIN = str(ROOT / "app" / "main.py")
#: Looks like a real key and is a legal variable name: the heuristic must catch it.
KEYLIKE_NAME = "hf_AbCdEfGhIjKlMnOpQrStUv12"


# -- a tiny GGUF writer for files with known contents ------------------------------------------
def _gguf_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def write_gguf(
    path: Path,
    metadata: dict[str, str | int],
    tensors: list[tuple[str, list[int], int, int]],
) -> Path:
    """A GGUF v3 file: string/uint32 metadata, tensors as (name, dims, ggml type, data bytes)."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata)))
    for key, value in metadata.items():
        out += _gguf_string(key)
        if isinstance(value, str):
            out += struct.pack("<I", 8) + _gguf_string(value)
        else:
            out += struct.pack("<II", 4, value)
    offset = 0
    for name, dims, ggml_type, nbytes in tensors:
        out += _gguf_string(name) + struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ggml_type, offset)
        offset += -(-nbytes // 32) * 32
    out += b"\0" * (-len(out) % 32)
    out += b"\x01" * offset
    path.write_bytes(bytes(out))
    return path


F32, Q8_0 = 0, 8
# 4096 Q8_0 elements = 128 blocks of 34 bytes; 64 F32 elements = 256 bytes.
SMALL_TENSORS = [("norm.weight", [64], F32, 256), ("blk.0.w", [64, 64], Q8_0, 128 * 34)]


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "models.json", models_dir=tmp_path / "models")


# -- GGUF metadata --------------------------------------------------------------------------
@pytest.mark.model
def test_bundled_gguf_metadata_matches_what_llama_cpp_reads(bundled_path):
    info = read_gguf_info(bundled_path)
    assert info.architecture == "gemma3"
    assert info.context_length == 32768
    assert (info.quantization, info.quantization_source) == ("Q4_K_M", "file_type")
    assert info.file_size == bundled_path.stat().st_size
    assert (info.layer_count, info.embedding_length, info.size_label) == (18, 640, "270M")
    assert 260e6 < info.parameter_count < 280e6  # summed from the tensor table
    assert info.has_chat_template is False
    assert info.chat_format == "gemma"  # the file has no template: Arbor must name one
    assert "Q4_K_M" in info.summary() and "gemma3" in info.summary()

    from llama_cpp import Llama  # the oracle: llama.cpp's own reading of the same header

    llama = Llama(model_path=str(bundled_path), vocab_only=True, verbose=False)
    try:
        theirs = llama.metadata
    finally:
        llama.close()
    scalars = {
        k: v
        for k, v in info.metadata.items()
        if isinstance(v, int | str) and not str(v).startswith("<array of")
    }
    assert len(scalars) > 20
    for key, value in scalars.items():
        if isinstance(value, bool):
            value = str(value).lower()
        assert theirs[key] == str(value), key
    assert info.tensor_count == 236


def test_metadata_read_is_fast_without_loading_the_model(bundled_path):
    timings = []
    for _ in range(5):
        _read_cached.cache_clear()
        started = time.perf_counter()
        read_gguf_info(bundled_path)
        timings.append(time.perf_counter() - started)
    assert statistics.median(timings) < 0.5, timings
    started = time.perf_counter()
    read_gguf_info(bundled_path)  # cached by (path, size, mtime)
    assert time.perf_counter() - started < 0.01


def test_quantisation_falls_back_to_the_dominant_tensor_type_and_template_is_seen(tmp_path):
    plain = write_gguf(
        tmp_path / "plain.gguf",
        {"general.architecture": "llama", "llama.context_length": 2048},
        SMALL_TENSORS,
    )
    info = read_gguf_info(plain)
    assert (info.quantization, info.quantization_source) == ("Q8_0", "tensors")
    assert info.context_length == 2048
    assert info.chat_format == "llama-3"
    assert info.parameter_count == 64 + 64 * 64

    templated = write_gguf(
        tmp_path / "templated.gguf",
        {
            "general.architecture": "qwen2",
            "general.file_type": 7,
            "tokenizer.chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}",
        },
        SMALL_TENSORS,
    )
    info = read_gguf_info(templated)
    assert (info.quantization, info.quantization_source) == ("Q8_0", "file_type")
    assert info.has_chat_template and info.chat_format is None  # llama.cpp uses the template


def test_non_gguf_and_empty_files_are_refused_with_the_file_named(tmp_path):
    text = tmp_path / "notes.gguf"
    text.write_text("these are notes, not a model\n" * 10)
    with pytest.raises(ModelUnavailable, match="not a GGUF model file") as excinfo:
        read_gguf_info(text)
    assert str(text) in str(excinfo.value)
    empty = tmp_path / "empty.gguf"
    empty.touch()
    with pytest.raises(ModelUnavailable, match="only 0 bytes"):
        read_gguf_info(empty)
    with pytest.raises(ModelUnavailable, match="not found"):
        read_gguf_info(tmp_path / "absent.gguf")


def test_truncated_gguf_files_are_refused(tmp_path, bundled_path):
    cut_header = tmp_path / "cut-header.gguf"
    with bundled_path.open("rb") as source:
        cut_header.write_bytes(source.read(1_000_000))  # inside the tokenizer vocabulary
    with pytest.raises(ModelUnavailable, match="truncated") as excinfo:
        read_gguf_info(cut_header)
    assert str(cut_header) in str(excinfo.value)

    whole = write_gguf(tmp_path / "whole.gguf", {"general.architecture": "llama"}, SMALL_TENSORS)
    read_gguf_info(whole)
    cut_data = tmp_path / "cut-data.gguf"
    cut_data.write_bytes(whole.read_bytes()[:-100])
    with pytest.raises(ModelUnavailable, match=r"truncated: its tensors need \d"):
        read_gguf_info(cut_data)


# -- the registry file ----------------------------------------------------------------------
def test_registry_round_trips_through_its_file(registry, bundled_path):
    assert [e.name for e in registry.entries()] == [BUNDLED_NAME]
    assert not registry.path.exists()  # nothing written until something changes
    local = registry.add_local(bundled_path, name="gemma-file", max_concurrent=1)
    remote = registry.add_remote(
        "lab",
        "http://127.0.0.1:8000/v1/",
        "qwen",
        api_key_env="LAB_KEY",
        price_in_per_m=0.15,
        price_out_per_m=0.6,
        max_concurrent=8,
        timeout_s=30,
    )
    assert remote.base_url == "http://127.0.0.1:8000/v1"  # trailing slash dropped
    data = json.loads(registry.path.read_text())
    assert data["format"] == "arbor-models" and data["version"] == 1
    assert [m["name"] for m in data["models"]] == [BUNDLED_NAME, "gemma-file", "lab"]
    assert not list(registry.path.parent.glob(".models-*"))  # no temp file left behind

    again = Registry(registry.path)
    assert again.get("gemma-file") == local
    assert again.get("lab") == remote
    assert again.get("lab").ref == ModelRef(
        kind="remote", base_url="http://127.0.0.1:8000/v1", model="qwen", api_key_env="LAB_KEY"
    )

    updated = again.update("lab", price_out_per_m=1.2, name="lab-2")
    assert Registry(registry.path).get("lab-2").price_out_per_m == 1.2 == updated.price_out_per_m
    Registry(registry.path).remove("lab-2")
    assert Registry(registry.path).names() == [BUNDLED_NAME, "gemma-file"]


def test_changes_from_two_registry_objects_are_both_kept(tmp_path):
    first = Registry(tmp_path / "models.json")
    second = Registry(tmp_path / "models.json")  # e.g. the UI and the CLI
    first.add_remote("a", "http://127.0.0.1:1/v1", "m1")
    second.add_remote("b", "http://127.0.0.1:2/v1", "m2")
    assert Registry(tmp_path / "models.json").names() == [BUNDLED_NAME, "a", "b"]


def test_bad_changes_are_refused_with_reasons(registry, tmp_path):
    with pytest.raises(RegistryError, match="cannot be removed"):
        registry.remove(BUNDLED_NAME)
    with pytest.raises(
        RegistryError, match=r"No model named 'ghost' in the registry\. Known: bundled"
    ):
        registry.get("ghost")
    registry.add_remote("lab", "http://127.0.0.1:8000/v1", "qwen")
    with pytest.raises(RegistryError, match="already in the registry"):
        registry.add_remote("lab", "http://127.0.0.1:9000/v1", "other")
    with pytest.raises(RegistryError, match="already registered as 'lab'"):
        registry.add_remote("lab-again", "http://127.0.0.1:8000/v1/", "qwen")
    with pytest.raises(RegistryError, match="base URL must start with http"):
        registry.add_remote("x", "127.0.0.1:8000", "qwen")
    with pytest.raises(RegistryError, match="price_in_per_m: Input should be greater"):
        registry.add_remote("x", "http://h/v1", "m", price_in_per_m=-1)
    with pytest.raises(RegistryError, match="max_concurrent"):
        registry.add_remote("x", "http://h/v1", "m", max_concurrent=0)
    with pytest.raises(RegistryError, match="name"):
        registry.add_remote("   ", "http://h/v1", "m")
    with pytest.raises(ModelUnavailable, match="not found"):
        registry.add_local(tmp_path / "absent.gguf")
    notes = tmp_path / "notes.gguf"
    notes.write_text("not a model")
    with pytest.raises(ModelUnavailable, match="not a GGUF model file"):
        registry.add_local(notes)
    assert registry.names() == [BUNDLED_NAME, "lab"]


def test_key_looking_api_key_env_is_refused_without_echoing_it(registry):
    registry.add_remote("ok", "http://127.0.0.1:8000/v1", "m", api_key_env="OPENAI_API_KEY")
    before = registry.path.read_bytes()
    for secret in ("sk-proj-4f8a9b2c7d1e0f3a5b6c", KEYLIKE_NAME, "9LIVES"):
        with pytest.raises(RegistryError, match="api_key_env") as excinfo:
            registry.add_remote("bad", "http://127.0.0.1:8000/v1", "m", api_key_env=secret)
        assert secret not in str(excinfo.value)
        with pytest.raises(RegistryError) as excinfo:
            registry.update("ok", api_key_env=secret)
        assert secret not in str(excinfo.value)
    assert registry.path.read_bytes() == before


def test_models_folder_files_are_listed_as_discovered_entries(tmp_path, bundled_path, monkeypatch):
    models = tmp_path / "my-models"
    models.mkdir()
    (models / "tiny.gguf").symlink_to(bundled_path)
    (models / "readme.txt").write_text("not a model")
    monkeypatch.setenv("ARBOR_MODELS_DIR", str(models))
    assert default_models_dir(tmp_path / "data") == models
    registry = Registry.in_data_dir(tmp_path / "data")
    tiny = registry.get("tiny")
    assert tiny.discovered and tiny.kind == "local" and tiny.path == str(models / "tiny.gguf")
    row = next(r for r in registry.rows() if r["name"] == "tiny")
    assert (row["architecture"], row["quantisation"], row["context"]) == ("gemma3", "Q4_K_M", 32768)
    assert registry.entry_for(ModelRef(path=str(models / "tiny.gguf"))) == tiny
    with pytest.raises(RegistryError, match="move or delete the file"):
        registry.remove("tiny")

    registry.update("tiny", max_concurrent=2)  # editing a discovered entry saves it
    saved = json.loads(registry.path.read_text())["models"]
    assert [m["name"] for m in saved] == [BUNDLED_NAME, "tiny"]
    reloaded = Registry.in_data_dir(tmp_path / "data")
    assert reloaded.get("tiny").max_concurrent == 2 and not reloaded.get("tiny").discovered
    assert reloaded.names() == [BUNDLED_NAME, "tiny"]  # not listed twice

    monkeypatch.delenv("ARBOR_MODELS_DIR")
    assert default_models_dir(tmp_path / "data") == tmp_path / "data" / "models"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"format": "arbor-models", "version": 1, "models": [', "not valid JSON \\(line 1"),
        ('{"format": "arbor-plan", "version": 1}', "not an Arbor model registry"),
        ('{"format": "arbor-models", "version": 99, "models": []}', "version 99"),
        (
            '{"format": "arbor-models", "version": 1, "models": '
            '[{"name": "x", "kind": "remote", "base_url": "http://h/v1", "model": "m", '
            '"api_key": "sk-live-SECRET"}]}',
            "entry 1 \\('x'\\): api_key: Extra inputs are not permitted",
        ),
        (
            '{"format": "arbor-models", "version": 1, "models": '
            '[{"name": "a", "kind": "local", "path": "/m.gguf"}, '
            '{"name": "a", "kind": "local", "path": "/n.gguf"}]}',
            "names a more than once",
        ),
    ],
)
def test_corrupt_or_foreign_registry_file_is_reported_and_left_untouched(
    tmp_path, content, message
):
    path = tmp_path / "models.json"
    path.write_text(content)
    with pytest.raises(RegistryError, match=message) as excinfo:
        Registry(path)
    assert str(path) in str(excinfo.value)
    assert "left as it is" in str(excinfo.value)
    assert "SECRET" not in str(excinfo.value)
    assert path.read_text() == content


# -- entry_for and backend_for --------------------------------------------------------------
def test_backend_for_applies_the_entrys_prices_concurrency_and_timeout(registry, bundled_path):
    remote = registry.add_remote(
        "lab",
        "http://127.0.0.1:8000/v1",
        "qwen",
        price_in_per_m=0.5,
        price_out_per_m=2.0,
        max_concurrent=6,
        timeout_s=45,
    )
    ref = ModelRef(kind="remote", base_url="http://127.0.0.1:8000/v1/", model="qwen")
    assert registry.entry_for(ref) == remote
    backend = registry.backend_for(ref)
    assert isinstance(backend, RemoteBackend)
    assert (backend.max_concurrent, backend.timeout_s) == (6, 45)
    assert (backend.price_in_per_m, backend.price_out_per_m) == (0.5, 2.0)
    from engine.models.base import Usage

    assert backend.cost(Usage(1_000_000, 500_000)) == pytest.approx(0.5 + 1.0)

    registry.add_local(bundled_path, name="gemma-file", max_concurrent=2, price_out_per_m=0.01)
    local = registry.backend_for(ModelRef(path=str(bundled_path)))
    assert isinstance(local, LocalBackend)
    assert (local.max_concurrent, local.price_out_per_m) == (2, 0.01)

    registry.update(BUNDLED_NAME, price_in_per_m=0.001)
    assert registry.entry_for(ModelRef()).name == BUNDLED_NAME
    assert registry.backend_for(ModelRef()).price_in_per_m == 0.001

    unknown = ModelRef(kind="remote", base_url="http://elsewhere/v1", model="qwen")
    assert registry.entry_for(unknown) is None
    plain = registry.backend_for(unknown)
    assert (plain.max_concurrent, plain.price_in_per_m) == (
        RemoteBackend("http://x/v1", "m").max_concurrent,
        0.0,
    )


# -- check_entry ----------------------------------------------------------------------------
@pytest.mark.model
def test_check_of_the_bundled_model_passes_every_step(registry):
    check = check_entry(registry.get(BUNDLED_NAME))
    assert check.ok, check.summary()
    assert [s.name for s in check.steps] == [
        "file exists",
        "GGUF header readable",
        "model loads",
        "short generation",
    ]
    assert "gemma3" in check.steps[1].detail and "Q4_K_M" in check.steps[1].detail
    assert "token(s)" in check.steps[3].detail
    assert "all 4 checks passed" in check.summary()


def test_check_of_a_missing_or_broken_file_stops_at_the_failing_step(tmp_path):
    missing = make_entry("test", name="gone", kind="local", path=str(tmp_path / "gone.gguf"))
    check = check_entry(missing)
    assert not check.ok
    assert [(s.name, s.ok) for s in check.steps] == [("file exists", False)]
    assert str(tmp_path / "gone.gguf") in check.steps[0].detail
    assert check.summary().startswith("gone: file exists failed:")

    broken = tmp_path / "broken.gguf"
    broken.write_text("definitely not a model")
    check = check_entry(make_entry("test", name="broken", kind="local", path=str(broken)))
    assert [(s.name, s.ok) for s in check.steps] == [
        ("file exists", True),
        ("GGUF header readable", False),
    ]
    assert "not a GGUF model file" in check.failure.detail


@pytest.mark.server
def test_check_of_a_remote_endpoint_passes_against_a_real_server(llama_server, bundled_path):
    # llama_cpp.server lists its model under the --model path when no alias is given.
    entry = make_entry(
        "test", name="srv", kind="remote", base_url=llama_server, model=str(bundled_path)
    )
    check = check_entry(entry)
    assert check.ok, check.summary()
    assert [s.name for s in check.steps] == [
        "API key variable",
        "endpoint reachable",
        "model served",
        "one-token chat completion",
    ]
    assert "1 token(s)" in check.steps[3].detail


@pytest.mark.server
def test_check_names_a_model_the_server_does_not_list(llama_server, bundled_path):
    entry = make_entry(
        "test", name="srv", kind="remote", base_url=llama_server, model="no-such-model"
    )
    check = check_entry(entry)
    assert [(s.name, s.ok) for s in check.steps][-1] == ("model served", False)
    assert "does not list 'no-such-model'" in check.failure.detail
    assert str(bundled_path) in check.failure.detail  # what it does serve


def test_check_of_an_unreachable_endpoint_fails_at_reachability():
    url = f"http://127.0.0.1:{free_port()}/v1"
    check = check_entry(make_entry("test", name="off", kind="remote", base_url=url, model="m"))
    assert [(s.name, s.ok) for s in check.steps] == [
        ("API key variable", True),
        ("endpoint reachable", False),
    ]
    assert url in check.failure.detail


@pytest.mark.server
def test_check_reports_a_missing_or_wrong_key_then_passes_with_the_right_one(
    keyed_llama_server, bundled_path, monkeypatch
):
    base_url, key = keyed_llama_server
    monkeypatch.delenv("ARBOR_TEST_REGISTRY_KEY", raising=False)
    entry = make_entry(
        "test",
        name="keyed",
        kind="remote",
        base_url=base_url,
        model=str(bundled_path),
        api_key_env="ARBOR_TEST_REGISTRY_KEY",
    )
    check = check_entry(entry)
    assert [(s.name, s.ok) for s in check.steps] == [("API key variable", False)]
    assert "ARBOR_TEST_REGISTRY_KEY is not set" in check.failure.detail

    monkeypatch.setenv("ARBOR_TEST_REGISTRY_KEY", "sk-wrong")
    check = check_entry(entry)
    assert [(s.name, s.ok) for s in check.steps] == [
        ("API key variable", True),
        ("endpoint reachable", False),
    ]
    assert "401" in check.failure.detail and "sk-wrong" not in check.failure.detail

    monkeypatch.setenv("ARBOR_TEST_REGISTRY_KEY", key)
    check = check_entry(entry)
    assert check.ok, check.summary()
    assert all(key not in step.detail for step in check.steps)


# -- the command line -----------------------------------------------------------------------
def _cli(data_dir: Path, *args: str, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "models", *args],
        cwd=ROOT,
        env={**os.environ, "ARBOR_DATA_DIR": str(data_dir), **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.model
def test_cli_adds_lists_tests_and_removes_models(tmp_path, bundled_path):
    data = tmp_path / "data"
    added = _cli(data, "add-local", str(bundled_path), "--name", "gemma-file")
    assert added.returncode == 0, added.stderr
    remote = _cli(
        data,
        "add-remote",
        "--name",
        "lab",
        "--base-url",
        f"http://127.0.0.1:{free_port()}/v1",
        "--model",
        "qwen",
        "--key-env",
        "LAB_KEY",
        "--price-in",
        "0.25",
        "--max-concurrent",
        "3",
    )
    assert remote.returncode == 0, remote.stderr
    listed = _cli(data, "list")
    assert listed.returncode == 0, listed.stderr
    line = next(ln for ln in listed.stdout.splitlines() if ln.startswith("gemma-file"))
    assert "gemma3" in line and "Q4_K_M" in line and "ctx 32768" in line
    lab = next(ln for ln in listed.stdout.splitlines() if ln.startswith("lab"))
    assert "$0.25/$0 per M" in lab and "x3" in lab and "$LAB_KEY" in lab

    tested = _cli(data, "test", "gemma-file")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "ok   short generation" in tested.stdout

    failed = _cli(data, "test", "lab", env={"LAB_KEY": ""})
    assert failed.returncode == 1
    assert "FAIL API key variable" in failed.stdout
    assert "LAB_KEY is not set" in failed.stderr

    refused = _cli(data, "add-remote", "--name", "x", "--base-url", "http://h/v1", "--model",
                   "m", "--key-env", "sk-live-abc123")  # fmt: skip
    assert refused.returncode == 2
    assert "api_key_env" in refused.stderr and "sk-live-abc123" not in refused.stderr

    assert _cli(data, "remove", "lab").returncode == 0
    bundled = _cli(data, "remove", "bundled")
    assert bundled.returncode == 2 and "cannot be removed" in bundled.stderr
    assert [m["name"] for m in json.loads((data / "models.json").read_text())["models"]] == [
        BUNDLED_NAME,
        "gemma-file",
    ]


def test_cli_reports_a_corrupt_registry_and_leaves_it_alone(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "models.json").write_text("{oops")
    for args in (["list"], ["add-remote", "--name", "a", "--base-url", "http://h/v1",
                            "--model", "m"]):  # fmt: skip
        result = _cli(data, *args)
        assert result.returncode == 2
        assert "not valid JSON" in result.stderr and str(data / "models.json") in result.stderr
    assert (data / "models.json").read_text() == "{oops"


# -- the UI ---------------------------------------------------------------------------------
@pytest.fixture
def models_page(tmp_path, monkeypatch):
    monkeypatch.setenv("ARBOR_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("ARBOR_MODELS_DIR", raising=False)
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.run()
    at.switch_page("ui/models_page.py").run()
    assert not at.exception
    return at


@pytest.mark.model
def test_models_page_adds_a_local_file_lists_it_and_tests_it(models_page, tmp_path, bundled_path):
    at = models_page
    assert at.title[0].value == "Models"
    assert list(at.dataframe[0].value["name"]) == [BUNDLED_NAME]

    at.text_input(key="add_local_path").input(str(bundled_path))
    at.text_input(key="add_local_name").input("gemma-file")
    next(b for b in at.button if b.label == "Add local model").click().run()
    assert not at.exception
    assert any("Added 'gemma-file'" in s.value for s in at.success)
    table = at.dataframe[0].value
    row = table[table["name"] == "gemma-file"].iloc[0]
    assert (row["architecture"], row["quantisation"], row["context"]) == ("gemma3", "Q4_K_M", 32768)
    assert Registry(tmp_path / "models.json").get("gemma-file").path == str(bundled_path)

    at.button(key="test_model_gemma-file").click().run()
    assert not at.exception
    ok, failed = ":material/check_circle:", ":material/cancel:"
    steps = [md.value for md in at.markdown if md.value.startswith((ok, failed))]
    assert len(steps) == 4 and all(step.startswith(ok) for step in steps), steps
    assert any("all 4 checks passed" in s.value for s in at.success)

    at.button(key="remove_model_gemma-file").click().run()
    assert list(at.dataframe[0].value["name"]) == [BUNDLED_NAME]


def test_models_page_adds_and_edits_a_remote_endpoint_and_refuses_a_key(
    models_page, tmp_path, monkeypatch
):
    at = models_page
    url = f"http://127.0.0.1:{free_port()}/v1"
    at.text_input(key="remote_name_new").input("lab")
    at.text_input(key="remote_url_new").input(url)
    at.text_input(key="remote_model_new").input("qwen")
    at.text_input(key="remote_key_env_new").input("sk-live-abc123")
    next(b for b in at.button if b.label == "Save endpoint").click().run()
    assert any("api_key_env" in e.value and "sk-live" not in e.value for e in at.error)
    assert not (tmp_path / "models.json").exists()

    at.text_input(key="remote_key_env_new").input("LAB_KEY")
    at.number_input(key="remote_price_out_new").set_value(1.5)
    next(b for b in at.button if b.label == "Save endpoint").click().run()
    assert not at.exception
    saved = Registry(tmp_path / "models.json").get("lab")
    assert (saved.base_url, saved.api_key_env, saved.price_out_per_m) == (url, "LAB_KEY", 1.5)
    assert saved.max_concurrent == 4

    at.selectbox(key="remote_pick").set_value("lab").run()
    assert at.text_input(key="remote_model_edit_lab").value == "qwen"
    at.number_input(key="remote_concurrency_edit_lab").set_value(2)
    next(b for b in at.button if b.label == "Save endpoint").click().run()
    assert Registry(tmp_path / "models.json").get("lab").max_concurrent == 2

    monkeypatch.delenv("LAB_KEY", raising=False)
    at.button(key="test_model_lab").click().run()
    assert any("API key variable failed: LAB_KEY is not set" in e.value for e in at.error)


def test_workbench_model_picker_offers_registry_entries(tmp_path, monkeypatch):
    monkeypatch.setenv("ARBOR_DATA_DIR", str(tmp_path))
    entry = Registry(tmp_path / "models.json").add_remote(
        "lab", "http://127.0.0.1:8000/v1", "qwen", api_key_env="LAB_KEY"
    )
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.run()
    at.text_area(key="task_input").input("Write a haiku about autumn leaves.")
    at.button(key="blank_plan").click().run()
    picker = at.selectbox(key="default_model_kind")
    assert "Registry: lab" in picker.options
    assert {"Bundled Gemma 3 270M", "Local GGUF file", "Remote endpoint"} <= set(picker.options)
    picker.set_value("Registry: lab").run()
    assert not at.exception
    assert at.session_state.session.plan.default_model == entry.ref


def test_models_page_shows_a_corrupt_registry_without_touching_it(tmp_path, monkeypatch):
    (tmp_path / "models.json").write_text("[1, 2")
    monkeypatch.setenv("ARBOR_DATA_DIR", str(tmp_path))
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.run()
    at.switch_page("ui/models_page.py").run()
    assert any("not valid JSON" in e.value for e in at.error)
    assert (tmp_path / "models.json").read_text() == "[1, 2"


# -- the registry in runs --------------------------------------------------------------------


def test_runs_take_prices_and_concurrency_from_the_registry(workspace):
    from engine.plan import Node, Plan
    from engine.run.budget import RunCaps
    from tests.support.loopback import LoopbackServer

    with LoopbackServer(latency_s=0.3, reply="A short answer from the endpoint.") as server:
        registry = Registry.in_data_dir(workspace.root)
        registry.add_remote(
            "priced",
            server.base_url,
            "m",
            price_in_per_m=1000.0,
            price_out_per_m=2000.0,
            max_concurrent=2,
        )
        remote = registry.get("priced").ref
        plan = Plan(
            task="t",
            root=Node(
                id="root",
                title="Combine",
                children=[Node(id=f"l{i}", title=f"Leaf {i}") for i in range(4)],
            ),
            default_model=remote,
        )
        result = workspace.run_plan(plan, RunCaps(max_parallel=8), use_cache=False)
        assert result.status == "completed", result.stop_reason
        assert server.stats.max_in_flight == 2  # the entry's limit, though 4 leaves were ready
    calls = workspace.traces.model_calls(result.run_id)
    expected = sum(c["input_tokens"] * 1000.0 + c["output_tokens"] * 2000.0 for c in calls) / 1e6
    assert expected > 0
    assert result.cost_usd == pytest.approx(expected)
    assert sum(c["cost_usd"] for c in calls) == pytest.approx(expected)
    assert workspace.traces.run(result.run_id)["cost_usd"] == pytest.approx(expected)


def test_a_corrupt_registry_does_not_stop_a_run(workspace):
    from engine.plan import ModelRef as Ref
    from engine.plan import Node, Plan
    from tests.support.loopback import LoopbackServer

    (workspace.root / "models.json").write_text("{not json", encoding="utf-8")
    with LoopbackServer() as server:
        plan = Plan(
            task="t",
            root=Node(id="root", title="Answer"),
            default_model=Ref(kind="remote", base_url=server.base_url, model="m"),
        )
        result = workspace.run_plan(plan)
    assert result.status == "completed"
    assert any("model registry ignored" in w and "models.json" in w for w in result.warnings)
    assert (workspace.root / "models.json").read_text(encoding="utf-8") == "{not json"
