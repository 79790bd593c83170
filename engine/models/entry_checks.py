"""Checking a registry entry step by step, the way the Models page's and ``run.py models
test``'s "Test" does: each step says what was tried and what came back, and the first failure
says what is wrong (a missing file, an unset key variable, a server that does not list the
model). Local: file, GGUF header, load, a 4-token generation. Remote: key variable, reachable,
model listed, a one-token chat completion.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import ArborError, ModelUnavailable
from engine.models.base import Backend
from engine.models.bundled import bundled_model_path
from engine.models.factory import backend_for
from engine.models.gguf import read_gguf_info
from engine.models.registry import ModelEntry, apply_entry_settings
from engine.plan import GenerationConfig
from engine.redaction import redact

LOCAL_CHECK_TOKENS = 4
REMOTE_CHECK_TOKENS = 1
CHECK_PROMPT = "Reply with the single word OK."


@dataclass(frozen=True)
class CheckStep:
    """One step of a check: what was tried, whether it worked, and the evidence or the error."""

    name: str
    ok: bool
    detail: str
    seconds: float


@dataclass
class EntryCheck:
    """The steps run for one entry, stopping at the first failure."""

    entry: str
    steps: list[CheckStep] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(step.ok for step in self.steps)

    @property
    def failure(self) -> CheckStep | None:
        return next((step for step in self.steps if not step.ok), None)

    def summary(self) -> str:
        if self.ok:
            return f"{self.entry}: all {len(self.steps)} checks passed."
        failed = self.failure
        assert failed is not None
        return f"{self.entry}: {failed.name} failed: {failed.detail}"


def _step(check: EntryCheck, name: str, action: Callable[[], str]) -> bool:
    """Run one step, record it; False (stop) on any failure, with the error as the detail."""
    started = time.perf_counter()
    try:
        detail, ok = action(), True
    except ArborError as exc:
        detail, ok = str(exc), False
    except Exception as exc:  # a check reports every failure instead of raising it
        detail, ok = f"{type(exc).__name__}: {exc}", False
    check.steps.append(CheckStep(name, ok, redact(detail), time.perf_counter() - started))
    return ok


def _generate(backend: Backend, max_tokens: int) -> str:
    completion = backend.complete(
        [{"role": "user", "content": CHECK_PROMPT}],
        GenerationConfig(temperature=0.0, max_tokens=max_tokens, seed=1),
    )
    if completion.usage.output_tokens < 1 and not completion.text:
        raise ModelUnavailable("the model answered with no tokens at all")
    return (
        f"{completion.usage.output_tokens} token(s) in {completion.latency_s:.2f} s: "
        f"{completion.text.strip()!r}"
    )


def _served_models(entry: ModelEntry) -> list[str]:
    """The ids ``GET {base_url}/models`` lists (llama_cpp.server: its alias or model path)."""
    url = f"{entry.base_url}/models"
    key = os.environ.get(entry.api_key_env, "") if entry.api_key_env else ""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=min(entry.timeout_s, 30)) as response:
            data = json.loads(response.read())["data"]
        return [str(item["id"]) for item in data]
    except urllib.error.HTTPError as exc:
        raise ModelUnavailable(f"GET {redact(url)} answered {exc.code} {exc.reason}.") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ModelUnavailable(f"GET {redact(url)} failed: {exc}.") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelUnavailable(
            f"GET {redact(url)} did not answer with an OpenAI model list ({type(exc).__name__})."
        ) from None


def _check_local(check: EntryCheck, entry: ModelEntry) -> None:
    path: Path | None = None

    def file_exists() -> str:
        nonlocal path
        path = bundled_model_path() if entry.kind == "bundled" else Path(entry.path or "")
        if not path.exists():
            raise ModelUnavailable(f"{path} does not exist.")
        if not path.is_file():
            raise ModelUnavailable(f"{path} is not a file.")
        return str(path)

    if not _step(check, "file exists", file_exists):
        return
    assert path is not None
    if not _step(check, "GGUF header readable", lambda: read_gguf_info(path).summary()):
        return
    backend = apply_entry_settings(backend_for(entry.ref), entry)

    def load() -> str:
        backend.check()
        return f"llama.cpp loaded {path.name}"

    if not _step(check, "model loads", load):
        return
    _step(check, "short generation", lambda: _generate(backend, LOCAL_CHECK_TOKENS))


def _check_remote(check: EntryCheck, entry: ModelEntry) -> None:
    def key_variable() -> str:
        if not entry.api_key_env:
            return "no key variable named; requests go without a key"
        if not os.environ.get(entry.api_key_env):
            raise ModelUnavailable(
                f"{entry.api_key_env} is not set (or empty) in Arbor's environment. Export it "
                "with the key before starting Arbor."
            )
        return f"{entry.api_key_env} is set"

    if not _step(check, "API key variable", key_variable):
        return
    backend: Backend | None = None

    def reachable() -> str:
        nonlocal backend
        backend = apply_entry_settings(backend_for(entry.ref), entry)
        backend.check()
        return f"{redact(entry.base_url or '')}/models answered"

    if not _step(check, "endpoint reachable", reachable):
        return

    def served() -> str:
        ids = _served_models(entry)
        if entry.model in ids:
            return f"{entry.model!r} is listed"
        shown = ", ".join(repr(i) for i in ids[:10]) + (" ..." if len(ids) > 10 else "")
        raise ModelUnavailable(
            f"{redact(entry.base_url or '')} does not list {entry.model!r}; it lists"
            f" {shown or 'no models'}. "
            "Use one of the listed names."
        )

    if not _step(check, "model served", served):
        return
    assert backend is not None
    _step(check, "one-token chat completion", lambda: _generate(backend, REMOTE_CHECK_TOKENS))


def check_entry(entry: ModelEntry) -> EntryCheck:
    """Check an entry step by step, stopping at the first failure, which says what is wrong.

    Local: file exists, GGUF header readable, model loads, a 4-token generation.
    Remote: key variable set (if named), endpoint reachable (GET models), the model is listed,
    a one-token chat completion.
    """
    check = EntryCheck(entry.name)
    if entry.kind == "remote":
        _check_remote(check, entry)
    else:
        _check_local(check, entry)
    return check
