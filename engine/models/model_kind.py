"""Whether a model is a base (pretrained) text continuer or an instruction-tuned chat model.

The kind decides which prompts a node gets when its ``prompt_format`` is ``auto``: a base model
driven with chat turns echoes the question back, while a few-shot completion prompt
("Question: ... / Answer: ...") gets an answer from it. A GGUF file says what it is in its header
(read without loading the model, ``engine.models.gguf``): a chat template means instruct, and so
does an instruction-tuning tag (``it``, ``instruct``, ``chat``, ``sft``, ``dpo``, ``rlhf``,
``assistant``) in ``general.finetune``, ``general.name``, ``general.basename``, ``general.tags``
or the file name. Remote endpoints are taken to serve chat models. A registry entry's ``kind``
(``base`` or ``instruct``) wins over detection; callers pass it as ``declared``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from engine.errors import ModelUnavailable
from engine.models.gguf import read_gguf_info
from engine.plan import ModelRef

ModelKind = Literal["base", "instruct"]
#: What a registry entry may declare: ``auto`` leaves it to detection.
DeclaredKind = Literal["auto", "base", "instruct"]
DECLARED_KINDS: tuple[DeclaredKind, ...] = ("auto", "base", "instruct")

#: Tokens that mark an instruction-tuned model in a name, between non-alphanumeric boundaries
#: ("gemma-3-270m-it", "Qwen2.5-0.5B-Instruct", "llama-2-7b-chat", "zephyr-7b-dpo").
INSTRUCT_TOKENS = ("it", "instruct", "instruction", "chat", "sft", "dpo", "rlhf", "assistant")
_INSTRUCT_PATTERN = re.compile(
    r"(?<![a-z0-9])(" + "|".join(INSTRUCT_TOKENS) + r")(?![a-z0-9])", re.IGNORECASE
)
_NAME_KEYS = ("general.finetune", "general.name", "general.basename")


@dataclass(frozen=True)
class KindVerdict:
    """A model's kind and a short sentence saying why."""

    kind: ModelKind
    reason: str

    def describe(self) -> str:
        """``"base (no chat template; ...)"``, for tables."""
        return f"{self.kind} ({self.reason})"


def instruct_tag(text: str) -> str | None:
    """The instruction-tuning token in ``text`` (a name or tag), or None."""
    match = _INSTRUCT_PATTERN.search(text)
    return match.group(1).lower() if match else None


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def gguf_kind(metadata: dict[str, Any], file_name: str) -> KindVerdict:
    """The kind a GGUF file's header metadata and file name point to."""
    template = metadata.get("tokenizer.chat_template")
    if isinstance(template, str) and template.strip():
        return KindVerdict("instruct", "the GGUF file has a chat template")
    for key in (*_NAME_KEYS, "general.tags"):
        for text in _strings(metadata.get(key)):
            tag = instruct_tag(text)
            if tag:
                return KindVerdict("instruct", f"GGUF {key.split('.')[-1]} {text!r} has '{tag}'")
    tag = instruct_tag(Path(file_name).name)
    if tag:
        return KindVerdict("instruct", f"file name {Path(file_name).name!r} has '{tag}'")
    name = next((t for key in _NAME_KEYS for t in _strings(metadata.get(key)) if t), None)
    named = f"GGUF name {name!r}" if name else f"file name {Path(file_name).name!r}"
    return KindVerdict("base", f"no chat template; {named} has no instruction-tuned tag")


#: The kind of each file read, by (device, inode, size, modification time) and name.
_KINDS: dict[tuple[int, int, int, int, str], KindVerdict] = {}
_KINDS_MAX = 64


def local_kind(path: Path | str) -> KindVerdict:
    """The kind of a GGUF file, cached per file (device and inode, which a symlink or another
    spelling of the path shares), size, modification time and name.

    Every call's prompt style asks this, so a hit costs one ``stat`` (resolving the path
    instead took several syscalls per call). The name is in the key because it can decide
    the kind (``gguf_kind``).
    """
    file = Path(path).expanduser()
    try:
        stat = file.stat()
    except OSError as exc:
        raise ModelUnavailable(f"Model file not found: {file}.") from exc
    key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, file.name)
    verdict = _KINDS.get(key)
    if verdict is None:
        resolved = file.resolve()
        verdict = gguf_kind(read_gguf_info(str(resolved)).metadata, resolved.name)
        if len(_KINDS) >= _KINDS_MAX:
            _KINDS.clear()
        _KINDS[key] = verdict
    return verdict


def kind_of(ref: ModelRef, declared: DeclaredKind | str = "auto") -> KindVerdict:
    """The kind of the model ``ref`` names. ``declared`` (a registry entry's ``kind``) wins.

    A local file that cannot be read counts as instruct (chat prompts: the old behaviour);
    the call itself will report the file's problem.
    """
    if declared in ("base", "instruct"):
        return KindVerdict(declared, "set in the model registry")  # type: ignore[arg-type]
    if ref.kind == "remote":
        return KindVerdict(
            "instruct", "remote endpoints serve chat models unless the registry says base"
        )
    try:
        if ref.path is None:
            from engine.models.bundled import bundled_model_path

            return local_kind(bundled_model_path())
        return local_kind(ref.path)
    except ModelUnavailable as exc:
        return KindVerdict("instruct", f"kind unknown, chat assumed: {exc}")


__all__ = [
    "DECLARED_KINDS",
    "INSTRUCT_TOKENS",
    "DeclaredKind",
    "KindVerdict",
    "ModelKind",
    "gguf_kind",
    "instruct_tag",
    "kind_of",
    "local_kind",
]
