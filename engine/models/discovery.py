"""Find GGUF models already on this machine: folders in, candidates with header facts out.

Where analysts' models live (each root can be overridden, for tests and unusual installs):

- the Hugging Face cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
  ``~/.cache/huggingface/hub``; files sit at ``models--org--name/snapshots/<rev>/x.gguf``
  (symlinks into ``blobs/``);
- LM Studio: ``$LMSTUDIO_MODELS_DIR``, else ``~/.lmstudio/models`` and
  ``~/.cache/lm-studio/models`` (``publisher/repo/x.gguf``);
- GPT4All: ``$GPT4ALL_MODELS_DIR``, else ``~/.local/share/nomic.ai/GPT4All`` (and the macOS
  ``~/Library/Application Support/nomic.ai/GPT4All``);
- Ollama: ``$OLLAMA_MODELS``, else ``~/.ollama/models`` and ``/usr/share/ollama/.ollama/models``.
  Its blobs have no ``.gguf`` name; the manifests (``manifests/<host>/<namespace>/<model>/<tag>``,
  JSON) name the model blob and the chat template blob;
- folders the analyst adds: ``$ARBOR_MODEL_FOLDERS`` (``os.pathsep``-separated) and arguments.

Every folder is walked recursively; directory symlinks are not followed (the HF cache and
user folders can link in circles), file symlinks are (the HF cache is made of them). Only files
named ``*.gguf`` have their header read (``engine.models.gguf``, about 0.1 ms per file after the
first read of a given file: the reader caches per file, size and mtime). A file or manifest that
cannot be used becomes a candidate with ``problem`` saying why; scanning never raises for what
it finds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ArborError, ModelUnavailable, RegistryError
from engine.models.gguf import GGUFInfo, read_gguf_info
from engine.models.model_kind import KindVerdict, gguf_kind
from engine.models.registry import ModelEntry, Registry

#: Environment variable naming extra folders to scan, separated by ``os.pathsep``.
EXTRA_FOLDERS_ENV = "ARBOR_MODEL_FOLDERS"
OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
OLLAMA_TEMPLATE_LAYER = "application/vnd.ollama.image.template"
#: A manifest or template larger than this is not one (Ollama's are a few kB).
MAX_MANIFEST_BYTES = 1_000_000
#: Architectures that are not text generators llama.cpp can chat with.
NOT_LANGUAGE_MODELS = {
    "clip": "a vision projector (mmproj) for a multimodal model, not a language model",
    "bert": "an embedding model (BERT), it does not generate text",
    "nomic-bert": "an embedding model, it does not generate text",
}
_SPLIT_PART = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)

SOURCES = ("huggingface", "lm-studio", "gpt4all", "ollama", "folder")


@dataclass(frozen=True)
class Root:
    """A folder to scan and what put models there."""

    source: str
    path: Path


@dataclass
class Candidate:
    """One model file found (or one that was meant to be a model and cannot be used)."""

    source: str
    #: The name the registry would get (file stem, ``org/repo`` file, ``model:tag``).
    name: str
    path: str | None
    #: Why it cannot be used; None when it can.
    problem: str | None = None
    architecture: str | None = None
    size_label: str | None = None
    size_mb: float | None = None
    quantisation: str | None = None
    context: int | None = None
    #: ``base`` or ``instruct``, and why (``engine.models.model_kind``).
    model_kind: str | None = None
    kind_reason: str | None = None
    #: Where a chat template comes from: ``gguf`` (in the file), ``ollama`` (a manifest
    #: layer, Go template syntax), or None.
    chat_template: str | None = None
    #: The registry entry already pointing at this file, when there is one.
    registered_as: str | None = None
    #: Other places the same file was found (symlinks, copies named the same way).
    also_at: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return self.problem is None

    def facts(self) -> str:
        """One line: architecture, size, quantisation, kind."""
        parts = [
            self.architecture,
            self.size_label,
            self.quantisation,
            f"{self.size_mb:,.0f} MB" if self.size_mb is not None else None,
            self.model_kind,
        ]
        return ", ".join(part for part in parts if part)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "usable": self.usable}


@dataclass
class Discovery:
    """What a scan found and which roots it looked at."""

    candidates: list[Candidate]
    #: Roots that existed and were scanned; roots that did not exist are not errors.
    scanned: list[Root]
    missing: list[Root]
    files_seen: int = 0

    @property
    def usable(self) -> list[Candidate]:
        return [c for c in self.candidates if c.usable]

    @property
    def unusable(self) -> list[Candidate]:
        return [c for c in self.candidates if not c.usable]


# -- where to look ---------------------------------------------------------------------------
def default_roots(
    home: Path | str | None = None, env: Mapping[str, str] | None = None
) -> list[Root]:
    """The usual model folders under ``home`` (default ``~``), with ``env``'s overrides."""
    env = os.environ if env is None else env
    home = Path(home) if home is not None else Path.home()
    roots: list[Root] = []

    def add(source: str, *paths: Path) -> None:
        roots.extend(Root(source, path) for path in paths)

    if env.get("HF_HUB_CACHE"):
        add("huggingface", Path(env["HF_HUB_CACHE"]))
    elif env.get("HF_HOME"):
        add("huggingface", Path(env["HF_HOME"]) / "hub")
    else:
        add("huggingface", home / ".cache" / "huggingface" / "hub")
    if env.get("LMSTUDIO_MODELS_DIR"):
        add("lm-studio", Path(env["LMSTUDIO_MODELS_DIR"]))
    else:
        add("lm-studio", home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models")
    if env.get("GPT4ALL_MODELS_DIR"):
        add("gpt4all", Path(env["GPT4ALL_MODELS_DIR"]))
    else:
        add(
            "gpt4all",
            home / ".local" / "share" / "nomic.ai" / "GPT4All",
            home / "Library" / "Application Support" / "nomic.ai" / "GPT4All",
        )
    if env.get("OLLAMA_MODELS"):
        add("ollama", Path(env["OLLAMA_MODELS"]))
    else:
        add("ollama", home / ".ollama" / "models", Path("/usr/share/ollama/.ollama/models"))
    extra = [part for part in env.get(EXTRA_FOLDERS_ENV, "").split(os.pathsep) if part.strip()]
    add("folder", *(Path(part).expanduser() for part in extra))
    return roots


# -- scanning --------------------------------------------------------------------------------
def _walk_gguf(folder: Path) -> tuple[list[Path], int]:
    """The ``*.gguf`` files under ``folder`` and how many files were seen in all.

    Unreadable subfolders are skipped (``os.walk`` ignores their errors).
    """
    seen = 0
    found: list[Path] = []
    for directory, subdirs, files in os.walk(folder, followlinks=False):
        subdirs.sort()
        seen += len(files)
        found.extend(
            Path(directory) / name for name in sorted(files) if name.lower().endswith(".gguf")
        )
    return found, seen


def _name_for(source: str, root: Path, file: Path) -> str:
    """A readable registry name: the file stem, prefixed with the HF repo for the HF cache."""
    stem = file.name[: -len(".gguf")] if file.name.lower().endswith(".gguf") else file.name
    if source == "huggingface":
        parts = file.relative_to(root).parts
        repo = next((p for p in parts if p.startswith("models--")), None)
        if repo:
            org_name = repo[len("models--") :].replace("--", "/")
            return stem if stem.lower() in org_name.lower() else f"{org_name}/{stem}"[:80]
    return stem[:80]


def _facts(candidate: Candidate, info: GGUFInfo, verdict: KindVerdict) -> Candidate:
    candidate.architecture = info.architecture
    candidate.size_label = info.size_label
    candidate.size_mb = round(info.size_mb, 1)
    candidate.quantisation = info.quantization
    candidate.context = info.context_length
    candidate.model_kind = verdict.kind
    candidate.kind_reason = verdict.reason
    if info.has_chat_template:
        candidate.chat_template = "gguf"
    not_text = NOT_LANGUAGE_MODELS.get(info.architecture or "")
    if not_text:
        candidate.problem = f"{info.path.name} is {not_text}."
    return candidate


def inspect_file(file: Path, source: str = "folder", name: str | None = None) -> Candidate:
    """A candidate for one GGUF file: its header facts, or why it cannot be used."""
    candidate = Candidate(source=source, name=name or file.stem, path=str(file.absolute()))
    split = _SPLIT_PART.search(file.name)
    if split and int(split.group(1)) != 1:
        candidate.problem = (
            f"part {int(split.group(1))} of {int(split.group(2))} of a split model: add part 1 "
            "(llama.cpp loads the other parts from it)."
        )
        return candidate
    try:
        info = read_gguf_info(file)
    except ModelUnavailable as exc:
        candidate.problem = str(exc)
        return candidate
    except (OSError, ValueError, ArborError) as exc:  # defensive: never a traceback for a file
        candidate.problem = f"{file} cannot be read: {exc}"
        return candidate
    return _facts(candidate, info, gguf_kind(info.metadata, file.name))


def _ollama_name(manifests: Path, manifest: Path) -> str:
    """``registry.ollama.ai/library/gemma3/270m`` -> ``gemma3:270m``; other namespaces kept."""
    parts = manifest.relative_to(manifests).parts
    if len(parts) < 2:
        return manifest.name
    *where, model, tag = parts
    prefix = "/".join(p for p in where if p not in ("registry.ollama.ai", "library"))
    return (f"{prefix}/" if prefix else "") + f"{model}:{tag}"


def _ollama_blob(blobs: Path, digest: Any) -> Path | None:
    if not isinstance(digest, str) or not re.fullmatch(r"sha256[:-][0-9a-fA-F]{64}", digest):
        return None
    return blobs / digest.replace(":", "-")


def inspect_ollama_manifest(models_dir: Path, manifest: Path) -> Candidate:
    """The model an Ollama manifest names, with its template layer noted."""
    name = _ollama_name(models_dir / "manifests", manifest)
    candidate = Candidate(source="ollama", name=name, path=None)
    where = f"Ollama manifest {manifest}"
    try:
        if manifest.stat().st_size > MAX_MANIFEST_BYTES:
            candidate.problem = f"{where} is too large to be a manifest."
            return candidate
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        candidate.problem = f"{where} cannot be read: {getattr(exc, 'strerror', None) or exc}."
        return candidate
    except json.JSONDecodeError as exc:
        candidate.problem = f"{where} is not valid JSON (line {exc.lineno}: {exc.msg})."
        return candidate
    layers = data.get("layers") if isinstance(data, dict) else None
    if not isinstance(layers, list):
        candidate.problem = f'{where} has no "layers" list.'
        return candidate
    by_type = {
        layer.get("mediaType"): layer.get("digest") for layer in layers if isinstance(layer, dict)
    }
    blobs = models_dir / "blobs"
    if OLLAMA_MODEL_LAYER not in by_type:
        candidate.problem = f"{where} names no model layer ({OLLAMA_MODEL_LAYER})."
        return candidate
    blob = _ollama_blob(blobs, by_type[OLLAMA_MODEL_LAYER])
    if blob is None:
        candidate.problem = f"{where} has a model layer without a sha256 digest."
        return candidate
    if not blob.is_file():
        candidate.problem = f"{where} names blob {blob.name}, which is not in {blobs}."
        return candidate
    found = inspect_file(blob, "ollama", name)
    template_blob = _ollama_blob(blobs, by_type.get(OLLAMA_TEMPLATE_LAYER))
    if found.usable and template_blob is not None and template_blob.is_file():
        if found.chat_template is None:
            found.chat_template = "ollama"
        if found.model_kind == "base":
            found.model_kind = "instruct"
            found.kind_reason = "Ollama's manifest gives it a chat template"
    return found


def _scan_ollama(root: Path) -> tuple[list[Candidate], int]:
    manifests = root / "manifests"
    found: list[Candidate] = []
    count = 0
    for directory, subdirs, files in os.walk(manifests, followlinks=False):
        subdirs.sort()
        for file_name in sorted(files):
            count += 1
            found.append(inspect_ollama_manifest(root, Path(directory) / file_name))
    return found, count


def discover(roots: Iterable[Root] | None = None, folders: Iterable[Path | str] = ()) -> Discovery:
    """Scan ``roots`` (default ``default_roots()``) and ``folders``; one candidate per file.

    The same file reached twice under one root (a symlink, a second Ollama tag) is listed
    once, with the other paths in ``also_at``; the same file under two roots (LM Studio
    linking into the HF cache) is listed under each, since each app is a place to find it.
    """
    all_roots = [*(default_roots() if roots is None else roots)]
    all_roots += [Root("folder", Path(folder).expanduser()) for folder in folders]
    result = Discovery(candidates=[], scanned=[], missing=[])
    for root in all_roots:
        by_file: dict[Path, Candidate] = {}
        if not root.path.is_dir():
            result.missing.append(root)
            continue
        result.scanned.append(root)
        if root.source == "ollama":
            found, count = _scan_ollama(root.path)
            result.files_seen += count
            pairs = [(c, Path(c.path) if c.path else None) for c in found]
        else:
            files, count = _walk_gguf(root.path)
            result.files_seen += count
            pairs = [
                (inspect_file(file, root.source, _name_for(root.source, root.path, file)), file)
                for file in files
            ]
        for candidate, file in pairs:
            key = None
            if file is not None and candidate.usable:  # each unusable file keeps its reason
                with contextlib.suppress(OSError, RuntimeError):  # a symlink loop
                    key = file.resolve()
            if key is not None and key in by_file:
                by_file[key].also_at.append(candidate.path or "")
                continue
            if key is not None:
                by_file[key] = candidate
            result.candidates.append(candidate)
    return result


# -- the registry ----------------------------------------------------------------------------
def mark_registered(discovery: Discovery, registry: Registry) -> Discovery:
    """Fill each candidate's ``registered_as`` with the saved entry using the same file."""
    saved: dict[Path, str] = {}
    for entry in registry.entries():
        if entry.kind == "local" and entry.path and not entry.discovered:
            with contextlib.suppress(OSError, RuntimeError):
                saved[Path(entry.path).resolve()] = entry.name
    for candidate in discovery.candidates:
        if candidate.path:
            with contextlib.suppress(OSError, RuntimeError):
                candidate.registered_as = saved.get(Path(candidate.path).resolve())
    return discovery


def free_name(registry: Registry, wanted: str) -> str:
    """``wanted``, or ``wanted (2)``, ``(3)``... when the registry uses it already."""
    taken = set(registry.names())
    name, number = wanted[:72], 2
    while name in taken:
        name, number = f"{wanted[:72]} ({number})", number + 1
    return name


def add_candidate(registry: Registry, candidate: Candidate) -> ModelEntry:
    """Register a usable candidate as a local model under a free name.

    An Ollama model whose template comes only from the manifest is declared ``instruct``: the
    GGUF alone would read as a base model. Raises ``RegistryError`` for an unusable candidate.
    """
    if not candidate.usable or not candidate.path:
        raise RegistryError(f"{candidate.name} cannot be added: {candidate.problem}")
    if candidate.registered_as:
        raise RegistryError(
            f"{candidate.name} is already registered as {candidate.registered_as!r}."
        )
    kind = "instruct" if candidate.chat_template == "ollama" else "auto"
    entry = registry.add_local(candidate.path, free_name(registry, candidate.name), model_kind=kind)
    candidate.registered_as = entry.name
    return entry


__all__ = [
    "EXTRA_FOLDERS_ENV",
    "SOURCES",
    "Candidate",
    "Discovery",
    "Root",
    "add_candidate",
    "default_roots",
    "discover",
    "free_name",
    "inspect_file",
    "inspect_ollama_manifest",
    "mark_registered",
]
