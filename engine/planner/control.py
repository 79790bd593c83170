"""Cancel, stages and streamed text for a planner action that runs in the background.

A planner action (decompose, expand, re-plan, rate, alternatives) makes one or more model calls.
``PlannerControl`` carries what the caller gave it: a ``threading.Event`` that asks it to stop,
``on_progress`` (the stage, e.g. "sampling 4 candidate plans") and ``on_text`` (text as the
model writes it). ``wrap`` puts a ``ControlledBackend`` around the planner's backend, so every
call checks the event first, passes it to the backend (which checks it between tokens) and
streams its text; a cancelled call becomes ``PlannerCancelled``. The planner functions also
call ``check`` between their own steps (between samples, ratings, alternatives).

The batched multi-sample decode (``Backend.complete_samples``) has no per-token callback, so a
sampled planning call reports each candidate's text once the batch is done.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from engine.errors import CallCancelled, PlannerCancelled
from engine.models import Backend, ChatMessage, Completion
from engine.models.base import TokenCallback
from engine.plan import GenerationConfig

Progress = Callable[[str], None]

CANCELLED_MESSAGE = "The planner action was cancelled; nothing was changed."


class PlannerControl:
    """What a running planner action listens to and reports to; every part is optional."""

    def __init__(
        self,
        cancel: threading.Event | None = None,
        on_progress: Progress | None = None,
        on_text: TokenCallback | None = None,
    ):
        self.cancel = cancel
        self.on_progress = on_progress
        self.on_text = on_text
        self._streamed_any = False

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def check(self) -> None:
        """Raise ``PlannerCancelled`` when the caller asked to stop."""
        if self.cancelled:
            raise PlannerCancelled(CANCELLED_MESSAGE)

    def stage(self, text: str) -> None:
        """Report a stage (after checking for a cancel: a new stage is a good place to stop)."""
        self.check()
        if self.on_progress is not None:
            self.on_progress(text)

    def text(self, piece: str) -> None:
        if self.on_text is not None and piece:
            self._streamed_any = True
            self.on_text(piece)

    def new_call(self) -> None:
        """A new model call starts: separate its text from the previous call's."""
        if self._streamed_any:
            self.text("\n")

    def wrap(self, backend: Backend) -> Backend:
        """``backend`` itself when there is nothing to control, else a ``ControlledBackend``."""
        if self.cancel is None and self.on_text is None:
            return backend
        if isinstance(backend, ControlledBackend) and backend.control is self:
            return backend
        return ControlledBackend(backend, self)


def control_of(
    cancel: threading.Event | None,
    on_progress: Progress | None,
    on_text: TokenCallback | None,
) -> PlannerControl:
    return PlannerControl(cancel, on_progress, on_text)


def _model_path(backend: Backend) -> str | None:
    path = getattr(backend, "path", None)
    return None if path is None else str(path)


def model_needs_loading(backend: Backend) -> bool:
    """Whether ``backend`` is a local GGUF file not in memory yet (its first call loads it)."""
    path = _model_path(backend)
    if path is None:
        return False
    from pathlib import Path

    from engine.models.local import loaded_models

    try:
        key = str(Path(path).resolve())
    except OSError:
        return False
    return all(info.path != key for info in loaded_models())


class ControlledBackend(Backend):
    """Answers through ``inner``, checking ``control``'s cancel event and streaming its text."""

    def __init__(self, inner: Backend, control: PlannerControl):
        self.inner = inner
        self.control = control
        self.label = inner.label
        for name, value in vars(Backend).items():
            if not name.startswith("_") and not callable(value) and not isinstance(value, property):
                setattr(self, name, getattr(inner, name, value))

    @property
    def resource_key(self) -> str:
        return self.inner.resource_key

    def _before_call(self) -> None:
        self.control.check()
        if self.control.on_progress is not None and model_needs_loading(self.inner):
            self.control.stage("loading the model")
        self.control.new_call()

    def complete(
        self,
        messages: list[ChatMessage],
        config: GenerationConfig,
        *,
        json_schema: dict[str, Any] | None = None,
        on_token: TokenCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion:
        self._before_call()

        def stream(piece: str) -> None:
            self.control.text(piece)
            if on_token is not None:
                on_token(piece)

        options: dict[str, Any] = {"json_schema": json_schema}
        if self.control.on_text is not None or on_token is not None:
            options["on_token"] = stream
        stop = self.control.cancel or cancel
        if stop is not None:
            options["cancel"] = stop
        try:
            completion = self.inner.complete(messages, config, **options)
        except CallCancelled as exc:
            if self.control.cancelled:
                raise PlannerCancelled(CANCELLED_MESSAGE) from exc
            raise
        self.control.check()
        return completion

    def complete_samples(
        self,
        messages: list[ChatMessage],
        config: GenerationConfig,
        seeds: list[int | None],
        *,
        cancel: threading.Event | None = None,
    ) -> list[Completion]:
        self._before_call()
        stop = self.control.cancel or cancel
        try:
            completions = self.inner.complete_samples(messages, config, seeds, cancel=stop)
        except CallCancelled as exc:
            if self.control.cancelled:
                raise PlannerCancelled(CANCELLED_MESSAGE) from exc
            raise
        self.control.check()
        # No per-token stream from a batched decode: each candidate's text once it is done.
        for number, completion in enumerate(completions, start=1):
            self.control.text(f"candidate {number} of {len(completions)}:\n1.{completion.text}\n")
        return completions

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def check(self) -> str:
        return self.inner.check()

    def __getattr__(self, name: str) -> Any:
        if name in ("inner", "control"):
            raise AttributeError(name)
        return getattr(self.inner, name)
