"""Base or instruct: detection from GGUF metadata and file names, overrides, the cache."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.models.model_kind import KindVerdict, gguf_kind, instruct_tag, kind_of, local_kind
from engine.plan import ModelRef

BUNDLED_METADATA = {
    "general.architecture": "gemma3",
    "general.name": "Gemma 3 270m",
    "general.basename": "gemma-3",
    "general.tags": ["gemma3", "gemma", "google", "text-generation"],
}


def test_the_bundled_models_metadata_reads_as_base_and_says_why():
    verdict = gguf_kind(BUNDLED_METADATA, "gemma-3-270m-q4_k_m.gguf")
    assert verdict.kind == "base"
    assert "no chat template" in verdict.reason and "Gemma 3 270m" in verdict.reason
    assert verdict.describe().startswith("base (no chat template")


def test_a_chat_template_means_instruct():
    metadata = {**BUNDLED_METADATA, "tokenizer.chat_template": "{% for m in messages %}"}
    assert gguf_kind(metadata, "model.gguf") == KindVerdict(
        "instruct", "the GGUF file has a chat template"
    )


def test_a_blank_chat_template_does_not_count():
    assert gguf_kind({"tokenizer.chat_template": "  "}, "model.gguf").kind == "base"


@pytest.mark.parametrize(
    ("metadata", "file_name"),
    [
        ({"general.finetune": "it"}, "model.gguf"),
        ({"general.name": "Qwen2.5 0.5B Instruct"}, "model.gguf"),
        ({"general.basename": "llama-2-chat"}, "model.gguf"),
        ({"general.tags": ["text-generation", "dpo"]}, "model.gguf"),
        ({}, "gemma-3-270m-it-Q4_K_M.gguf"),
        ({}, "Qwen2.5-0.5B-Instruct-q4_k_m.gguf"),
        ({}, "zephyr_7b_sft.gguf"),
        ({}, "/models/mistral-7b-RLHF.gguf"),
    ],
)
def test_an_instruction_tuning_tag_means_instruct(metadata, file_name):
    verdict = gguf_kind(metadata, file_name)
    assert verdict.kind == "instruct", verdict


@pytest.mark.parametrize(
    "name",
    ["gemma-3-270m", "Italian-7b", "bitnet", "chatterbox", "edit-model", "instructor-xl", "sfts"],
)
def test_tags_match_whole_words_only(name):
    assert instruct_tag(name) is None
    assert gguf_kind({"general.name": name}, f"{name}.gguf").kind == "base"


@given(
    metadata=st.dictionaries(
        st.sampled_from(
            ["general.name", "general.basename", "general.finetune", "general.tags",
             "tokenizer.chat_template", "general.architecture"]
        ),
        st.one_of(
            st.text(), st.integers(), st.none(), st.lists(st.one_of(st.text(), st.integers()))
        ),
    ),
    file_name=st.text(),
)  # fmt: skip
def test_any_metadata_and_name_give_a_verdict(metadata, file_name):
    verdict = gguf_kind(metadata, file_name)
    assert verdict.kind in ("base", "instruct") and verdict.reason


def test_remote_models_count_as_instruct_unless_declared():
    ref = ModelRef(kind="remote", base_url="http://127.0.0.1:9/v1", model="m")
    assert kind_of(ref).kind == "instruct"
    assert "remote" in kind_of(ref).reason
    assert kind_of(ref, "base") == KindVerdict("base", "set in the model registry")


def test_a_declared_kind_wins_over_the_file(tmp_path):
    missing = ModelRef(path=str(tmp_path / "gone.gguf"))
    assert kind_of(missing, "base").kind == "base"
    unreadable = kind_of(missing)
    assert unreadable.kind == "instruct" and "not found" in unreadable.reason


def _fake_gguf(path: Path, name: str) -> None:
    """A minimal GGUF v3 header: no tensors, one string key."""
    import struct

    key, value = b"general.name", name.encode()
    path.write_bytes(
        b"GGUF"
        + struct.pack("<IQQ", 3, 0, 1)
        + struct.pack("<Q", len(key)) + key
        + struct.pack("<I", 8)
        + struct.pack("<Q", len(value)) + value
    )  # fmt: skip


def test_local_kind_reads_the_header_and_is_cached_per_modification_time(tmp_path):
    path = tmp_path / "model.gguf"
    _fake_gguf(path, "Tiny Base")
    assert local_kind(path).kind == "base"
    assert kind_of(ModelRef(path=str(path))).kind == "base"
    _fake_gguf(path, "Tiny Instruct")
    later = time.time() + 10
    os.utime(path, (later, later))
    assert local_kind(path).kind == "instruct"


@pytest.mark.model
def test_the_bundled_model_is_detected_as_base_without_loading_llama_cpp(bundled_path):
    import sys

    loaded = "llama_cpp" in sys.modules
    verdict = kind_of(ModelRef())
    assert verdict.kind == "base" and "no chat template" in verdict.reason
    assert ("llama_cpp" in sys.modules) == loaded


def test_a_symlink_is_judged_by_the_file_it_points_to_and_a_hard_link_by_its_own_name(tmp_path):
    target = tmp_path / "tiny.gguf"
    _fake_gguf(target, "Tiny")
    assert local_kind(target).kind == "base"
    # Same inode as the target: the cache must not answer for another name that decides.
    hard = tmp_path / "tiny-instruct.gguf"
    os.link(target, hard)
    assert local_kind(hard).kind == "instruct"
    assert local_kind(target).kind == "base"
    # A symlink's own name does not count: the file it resolves to is judged.
    link = tmp_path / "other-chat.gguf"
    link.symlink_to(target)
    assert local_kind(link).kind == "base"
