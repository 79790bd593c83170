"""Finding local models: the real bundled GGUF linked into the HF cache, LM Studio, GPT4All and
Ollama layouts and a folder of the analyst's; junk files and manifests give a reason, never a
traceback; servers on loopback (a real llama_cpp.server) are found by their /v1/models."""

from __future__ import annotations

import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import RegistryError
from engine.models.discovery import (
    Root,
    add_candidate,
    default_roots,
    discover,
    inspect_file,
    inspect_ollama_manifest,
    mark_registered,
)
from engine.models.local_servers import add_server_model, detect_servers, ports_from_env
from engine.models.registry import Registry
from tests.support.model_folders import build_model_home
from tests.support.servers import free_port


@pytest.fixture
def model_home(tmp_path: Path, bundled_path: Path):
    return build_model_home(tmp_path / "home", bundled_path)


def _by_source(found):
    groups: dict[str, list] = {}
    for candidate in found.candidates:
        groups.setdefault(candidate.source, []).append(candidate)
    return groups


def test_every_layout_yields_its_model_with_header_facts(model_home, tmp_path, bundled_path):
    mine = tmp_path / "mine" / "deep" / "er"
    mine.mkdir(parents=True)
    (mine / "my-model.gguf").symlink_to(bundled_path)
    (mine / "readme.md").write_text("not a model")
    roots = default_roots(model_home.home, env={})

    found = discover(roots, folders=[tmp_path / "mine"])

    usable = {c.source: c for c in found.usable}
    assert set(usable) == {"huggingface", "lm-studio", "gpt4all", "ollama", "folder"}
    for candidate in usable.values():
        assert candidate.architecture == "gemma3"
        assert candidate.quantisation == "Q4_K_M"
        assert candidate.size_mb == pytest.approx(bundled_path.stat().st_size / 1e6, abs=0.1)
        assert candidate.facts().startswith("gemma3")
    assert usable["huggingface"].name == "google/gemma-3-270m-GGUF/gemma-3-270m-Q4_K_M"
    assert usable["huggingface"].path == str(model_home.hf_file)
    # The bundled file is the base model; the LM Studio link's name says "-it".
    assert usable["huggingface"].model_kind == "base"
    assert usable["lm-studio"].model_kind == "instruct"
    assert "'it'" in (usable["lm-studio"].kind_reason or "")
    # Ollama: named from the manifest path, its chat template from the manifest's layer.
    assert usable["ollama"].name == "gemma3:270m"
    assert usable["ollama"].path == str(model_home.ollama_blob)
    assert usable["ollama"].chat_template == "ollama"
    assert usable["ollama"].model_kind == "instruct"
    assert usable["folder"].name == "my-model"
    assert found.files_seen >= 12


def test_what_cannot_be_used_says_why(model_home):
    found = discover(default_roots(model_home.home, env={}))
    problems = {c.path or c.name: c.problem for c in found.unusable}
    assert "not a GGUF model file" in problems[str(model_home.not_gguf)]
    assert "truncated" in problems[str(model_home.truncated)]
    assert "part 2 of 3" in problems[str(model_home.split_part)]
    assert "not valid JSON" in problems["broken:latest"]
    assert "not in" in problems["gone:7b"]
    assert all("\n" not in problem for problem in problems.values())


def test_missing_roots_are_listed_not_errors(tmp_path):
    found = discover(default_roots(tmp_path / "empty-home", env={}))
    assert found.candidates == [] and found.scanned == []
    assert {root.source for root in found.missing} >= {"huggingface", "ollama"}


def test_environment_overrides_the_roots(tmp_path):
    env = {
        "HF_HUB_CACHE": str(tmp_path / "hf"),
        "OLLAMA_MODELS": str(tmp_path / "ol"),
        "ARBOR_MODEL_FOLDERS": f"{tmp_path / 'a'}:{tmp_path / 'b'}",
    }
    roots = default_roots(tmp_path, env=env)
    assert Root("huggingface", tmp_path / "hf") in roots
    assert Root("ollama", tmp_path / "ol") in roots
    assert [r.path for r in roots if r.source == "folder"] == [tmp_path / "a", tmp_path / "b"]
    assert ports_from_env({"ARBOR_SERVER_PORTS": "8000, 99x,1234"}) == [8000, 1234]


def test_a_symlink_twice_under_one_root_is_listed_once(tmp_path, bundled_path):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "a.gguf").symlink_to(bundled_path)
    (folder / "b.gguf").symlink_to(folder / "a.gguf")
    (folder / "loop").symlink_to(folder)  # a directory link in a circle is not followed
    found = discover([], folders=[folder])
    assert len(found.candidates) == 1
    assert found.candidates[0].also_at == [str(folder / "b.gguf")]


def test_found_models_are_added_in_one_step_and_then_marked(model_home, tmp_path):
    registry = Registry(tmp_path / "models.json")
    found = discover(default_roots(model_home.home, env={}))
    by_source = {c.source: c for c in found.usable}

    added = add_candidate(registry, by_source["ollama"])
    assert added.name == "gemma3:270m" and added.path == str(model_home.ollama_blob)
    assert added.model_kind == "instruct"  # the GGUF alone reads as base
    assert registry.get("gemma3:270m").path == str(model_home.ollama_blob)

    again = mark_registered(discover(default_roots(model_home.home, env={})), registry)
    # Every layout links the same file, so each of its links now shows the entry.
    assert {c.registered_as for c in again.usable} == {"gemma3:270m"}
    with pytest.raises(RegistryError, match="already registered"):
        add_candidate(registry, next(c for c in again.usable if c.source == "huggingface"))
    unusable = next(c for c in again.unusable if c.path)
    with pytest.raises(RegistryError, match="cannot be added"):
        add_candidate(registry, unusable)


_names = itertools.count()
JUNK = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda tail: b"GGUF\x03\x00\x00\x00" + tail),
    st.binary(max_size=300).map(lambda tail: b"GGUF\x03\x00\x00\x00\x01" + b"\x00" * 15 + tail),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
LAYERS = st.lists(
    st.fixed_dictionaries(
        {
            "mediaType": st.sampled_from(
                ["application/vnd.ollama.image.model", "application/vnd.ollama.image.template"]
            ),
            "digest": st.one_of(st.text(max_size=70), st.just("sha256:" + "a" * 64), JSON),
        }
    ),
    max_size=3,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=JUNK)
def test_junk_gguf_files_give_a_one_line_reason(tmp_path, data):
    file = tmp_path / f"junk-{next(_names)}.gguf"  # a new name: the header cache keys on path
    file.write_bytes(data)
    candidate = inspect_file(file)
    assert not candidate.usable
    assert (
        candidate.problem and "\n" not in candidate.problem and "Traceback" not in candidate.problem
    )


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    manifest=st.one_of(JSON, st.fixed_dictionaries({"layers": LAYERS})), raw=st.binary(max_size=60)
)
def test_broken_ollama_manifests_give_a_reason(tmp_path, manifest, raw):
    models = tmp_path / f"ollama-{next(_names)}"
    (models / "blobs").mkdir(parents=True)
    (models / "blobs" / ("sha256-" + "a" * 64)).write_bytes(b"GGUF junk")
    for index, content in enumerate([json.dumps(manifest).encode(), raw]):
        path = models / "manifests" / "registry.ollama.ai" / "library" / "m" / f"tag{index}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        candidate = inspect_ollama_manifest(models, path)
        assert candidate.name == f"m:tag{index}"
        assert not candidate.usable
        assert candidate.problem and "\n" not in candidate.problem


# -- servers on loopback -----------------------------------------------------------------------
class _NotOpenAI(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def plain_http_port():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


@pytest.mark.server
def test_a_running_llama_cpp_server_is_found_and_added(llama_server, plain_http_port, tmp_path):
    port = urlparse(llama_server).port
    closed = free_port()
    found = detect_servers(
        {port: "llama.cpp server", plain_http_port: "LM Studio", closed: "Ollama"}
    )

    by_port = {finding.port: finding for finding in found}
    assert closed not in by_port  # nothing listens: not a finding
    server = by_port[port]
    assert server.usable and server.base_url == llama_server and server.models
    other = by_port[plain_http_port]
    assert not other.usable and "not an OpenAI-compatible server" in (other.problem or "")

    registry = Registry(tmp_path / "models.json")
    entry = add_server_model(registry, server, server.models[0])
    assert entry.kind == "remote" and entry.base_url == llama_server
    assert entry.model == server.models[0] and entry.name.endswith(f"@ {port}")
    with pytest.raises(RegistryError):
        add_server_model(registry, server, "no-such-model")
