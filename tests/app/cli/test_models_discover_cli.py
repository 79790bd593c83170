"""``run.py models discover``: fake app folders (the real bundled GGUF linked into each layout)
under a fake home, a real llama_cpp.server on loopback, --json and --add."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

from engine.models.registry import Registry
from tests.support.model_folders import build_model_home
from tests.support.servers import ROOT

OVERRIDES = (
    "HF_HOME",
    "HF_HUB_CACHE",
    "OLLAMA_MODELS",
    "LMSTUDIO_MODELS_DIR",
    "GPT4ALL_MODELS_DIR",
)


def _discover(data_dir: Path, home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in OVERRIDES and k != "ARBOR_MODEL_FOLDERS"}
    env.update(ARBOR_DATA_DIR=str(data_dir), HOME=str(home))
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "models", "discover", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def model_home(tmp_path, bundled_path):
    return build_model_home(tmp_path / "home", bundled_path)


def test_discover_json_lists_each_layout_and_the_reasons(model_home, tmp_path):
    done = _discover(tmp_path / "data", model_home.home, "--json", "--no-servers")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    usable = {m["source"]: m for m in report["models"] if m["usable"]}
    assert set(usable) == {"huggingface", "lm-studio", "gpt4all", "ollama"}
    assert usable["ollama"]["name"] == "gemma3:270m"
    assert usable["ollama"]["chat_template"] == "ollama"
    assert all(m["architecture"] == "gemma3" for m in usable.values())
    reasons = [m["problem"] for m in report["models"] if not m["usable"]]
    assert any("not a GGUF model file" in r for r in reasons)
    assert any("not valid JSON" in r for r in reasons)
    assert report["servers"] == [] and report["added"] == []


def test_discover_add_registers_a_found_model_and_refuses_unknown_names(model_home, tmp_path):
    data = tmp_path / "data"
    done = _discover(data, model_home.home, "--no-servers", "--add", "gemma3:270m")
    assert done.returncode == 0, done.stderr
    assert "added 'gemma3:270m'" in done.stdout
    entry = Registry(data / "models.json").get("gemma3:270m")
    assert entry.path == str(model_home.ollama_blob) and entry.model_kind == "instruct"

    again = _discover(data, model_home.home, "--no-servers")
    assert "registered as 'gemma3:270m'" in again.stdout
    assert "cannot be used:" in again.stdout

    wrong = _discover(data, model_home.home, "--no-servers", "--add", "no-such-model")
    assert wrong.returncode == 1
    assert "nothing called 'no-such-model' was found" in wrong.stderr
    assert "Traceback" not in wrong.stderr


@pytest.mark.server
def test_discover_finds_a_running_server_and_adds_its_model(llama_server, tmp_path):
    port = str(urlparse(llama_server).port)
    data = tmp_path / "data"
    listed = _discover(data, tmp_path / "no-home", "--json", "--port", port)
    assert listed.returncode == 0, listed.stderr
    (server,) = json.loads(listed.stdout)["servers"]
    assert server["usable"] and server["base_url"] == llama_server
    offer = server["offers"][0]

    added = _discover(data, tmp_path / "no-home", "--port", port, "--add", offer["name"])
    assert added.returncode == 0, added.stderr
    entry = Registry(data / "models.json").get(offer["name"])
    assert entry.kind == "remote" and entry.base_url == llama_server
    assert entry.model == offer["model"]
