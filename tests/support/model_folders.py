"""Fake but well-formed model folders: the real bundled GGUF linked into each app's layout.

``build_model_home(home, gguf)`` lays out, under ``home``, what the Hugging Face cache,
LM Studio, GPT4All and Ollama leave on disk (Ollama with a manifest naming the GGUF blob and a
chat-template blob), plus files that cannot be used, and returns what it made.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

OLLAMA_TEMPLATE = "{{ if .System }}<start_of_turn>user\n{{ .System }}{{ end }}{{ .Prompt }}"


@dataclass
class ModelHome:
    home: Path
    hf_file: Path
    lmstudio_file: Path
    gpt4all_file: Path
    ollama_models: Path
    ollama_blob: Path
    not_gguf: Path
    truncated: Path
    split_part: Path
    broken_manifest: Path
    missing_blob_manifest: Path


def _link(target: Path, link: Path) -> Path:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link)
    return link


def build_model_home(home: Path, gguf: Path) -> ModelHome:
    """The usual folders under ``home`` with ``gguf`` linked in (no 250 MB copies)."""
    digest = hashlib.sha256(str(gguf).encode()).hexdigest()  # stands in for the file's hash
    hf_repo = home / ".cache/huggingface/hub/models--google--gemma-3-270m-GGUF"
    blob = _link(gguf, hf_repo / "blobs" / digest)
    hf_file = hf_repo / "snapshots/0123abcd/gemma-3-270m-Q4_K_M.gguf"
    hf_file.parent.mkdir(parents=True)
    os.symlink(os.path.relpath(blob, hf_file.parent), hf_file)  # relative, as the hub writes it
    (hf_repo / "refs").mkdir()
    (hf_repo / "refs/main").write_text("0123abcd")

    lmstudio_file = _link(
        gguf, home / ".lmstudio/models/lmstudio-community/gemma-3-270m-it-GGUF/gemma-3-270m-it.gguf"
    )
    gpt4all = home / ".local/share/nomic.ai/GPT4All"
    gpt4all_file = _link(gguf, gpt4all / "gemma-small.gguf")
    (gpt4all / "localdocs_v2.db").write_bytes(b"SQLite format 3\x00")
    not_gguf = gpt4all / "notes.gguf"
    not_gguf.write_text("this is a text file, not a model\n")
    truncated = gpt4all / "half-download.gguf"
    with gguf.open("rb") as source:
        truncated.write_bytes(source.read(2_000_000))
    split_part = _link(gguf, gpt4all / "big-model-00002-of-00003.gguf")

    ollama = home / ".ollama/models"
    model_digest = hashlib.sha256(b"model" + digest.encode()).hexdigest()
    ollama_blob = _link(gguf, ollama / "blobs" / f"sha256-{model_digest}")
    template_digest = hashlib.sha256(OLLAMA_TEMPLATE.encode()).hexdigest()
    (ollama / "blobs" / f"sha256-{template_digest}").write_text(OLLAMA_TEMPLATE)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json"},
        "layers": [
            {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{model_digest}"},
            {
                "mediaType": "application/vnd.ollama.image.template",
                "digest": f"sha256:{template_digest}",
            },
        ],
    }
    library = ollama / "manifests/registry.ollama.ai/library"
    (library / "gemma3").mkdir(parents=True)
    (library / "gemma3/270m").write_text(json.dumps(manifest))
    broken_manifest = library / "broken/latest"
    broken_manifest.parent.mkdir()
    broken_manifest.write_text('{"layers": [')
    missing = {**manifest, "layers": [{**manifest["layers"][0], "digest": "sha256:" + "0" * 64}]}
    missing_blob_manifest = library / "gone/7b"
    missing_blob_manifest.parent.mkdir()
    missing_blob_manifest.write_text(json.dumps(missing))
    return ModelHome(
        home=home,
        hf_file=hf_file,
        lmstudio_file=lmstudio_file,
        gpt4all_file=gpt4all_file,
        ollama_models=ollama,
        ollama_blob=ollama_blob,
        not_gguf=not_gguf,
        truncated=truncated,
        split_part=split_part,
        broken_manifest=broken_manifest,
        missing_blob_manifest=missing_blob_manifest,
    )


def roots_env(layout: ModelHome) -> dict[str, str]:
    """Environment variables pointing every discovery root into ``layout`` (HOME unchanged, so
    the bundled model's own cache under ``~/.cache`` stays where it is)."""
    home = layout.home
    return {
        "HF_HUB_CACHE": str(home / ".cache/huggingface/hub"),
        "LMSTUDIO_MODELS_DIR": str(home / ".lmstudio/models"),
        "GPT4ALL_MODELS_DIR": str(home / ".local/share/nomic.ai/GPT4All"),
        "OLLAMA_MODELS": str(layout.ollama_models),
        "ARBOR_MODEL_FOLDERS": "",
    }
