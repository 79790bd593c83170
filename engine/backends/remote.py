"""Remote OpenAI-compatible endpoints through the ``openai`` client.

The API key is read from the environment variable the model reference names, at call time, so no
key is ever stored in a plan, session or trace. Transient failures (connection errors, timeouts,
429 and 5xx) are retried with exponential backoff by tenacity; everything else fails at once with
a message naming the endpoint.
"""

from __future__ import annotations

import os
import time
from typing import Any

import openai
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from engine.backends.base import Backend, ChatMessage, Completion, Usage
from engine.errors import ModelCallFailed, ModelUnavailable
from engine.plan import GenerationConfig

TRANSIENT_ERRORS = (
    openai.APIConnectionError,  # includes APITimeoutError
    openai.RateLimitError,
    openai.InternalServerError,
)
# A local server without a key still wants a non-empty bearer token from the client.
NO_KEY_PLACEHOLDER = "not-needed"
#: Endpoints known to refuse OpenAI's ``json_schema`` response format (llama_cpp.server answers
#: 500 with a validation error); they get ``{"type": "json_object", "schema": ...}`` instead.
_NO_JSON_SCHEMA_FORMAT: set[str] = set()


def _rejects_response_format(exc: BaseException | None) -> bool:
    """True for an error response that complains about ``response_format`` itself."""
    return (
        isinstance(exc, openai.APIStatusError)
        and exc.status_code in (400, 422, 500)
        and "response_format" in str(exc)
    )


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT_ERRORS) and not _rejects_response_format(exc)


class RemoteBackend(Backend):
    """One model on one OpenAI-compatible endpoint."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = None,
        timeout_s: float = 120.0,
        attempts: int = 3,
    ):
        if not base_url:
            raise ModelUnavailable(
                "A remote model needs a base URL, e.g. http://127.0.0.1:8000/v1."
            )
        if not model:
            raise ModelUnavailable(f"A remote model at {base_url} needs a model name.")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.label = f"{model}@{self.base_url}"

    def _client(self) -> openai.OpenAI:
        key = NO_KEY_PLACEHOLDER
        if self.api_key_env:
            key = os.environ.get(self.api_key_env, "")
            if not key:
                raise ModelUnavailable(
                    f"Environment variable {self.api_key_env} is not set; it should hold the API "
                    f"key for {self.base_url}."
                )
        return openai.OpenAI(
            base_url=self.base_url, api_key=key, timeout=self.timeout_s, max_retries=0
        )

    def _call(self, fn: Any) -> Any:
        retrying = Retrying(
            retry=retry_if_exception(_is_transient),
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=0.5, max=8),
            reraise=False,
        )
        try:
            return retrying(fn)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            if isinstance(last, openai.APITimeoutError):
                raise ModelUnavailable(
                    f"{self.base_url} did not answer within {self.timeout_s:.0f} s "
                    f"({self.attempts} attempts)."
                ) from last
            if isinstance(last, openai.APIConnectionError):
                raise ModelUnavailable(
                    f"Cannot reach {self.base_url} ({self.attempts} attempts): {last}. "
                    "Is the server running and the URL right?"
                ) from last
            raise ModelCallFailed(
                f"{self.base_url} kept failing ({self.attempts} attempts): {last}"
            ) from last
        except openai.AuthenticationError as exc:
            raise ModelUnavailable(
                f"{self.base_url} refused the API key (401). Check {self.api_key_env or 'the key'}."
            ) from exc
        except openai.NotFoundError as exc:
            raise ModelUnavailable(
                f"{self.base_url} has no model {self.model!r} or no chat endpoint (404)."
            ) from exc
        except openai.APIStatusError as exc:
            raise ModelCallFailed(
                f"{self.base_url} rejected the request ({exc.status_code}): {exc.message}"
            ) from exc

    def check(self) -> str:
        client = self._client()
        self._call(lambda: client.models.list())
        return self.label

    def complete(
        self,
        messages: list[ChatMessage],
        config: GenerationConfig,
        *,
        json_schema: dict[str, Any] | None = None,
    ) -> Completion:
        client = self._client()
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": config.temperature,
            "top_p": config.top_p,
            "max_tokens": config.max_tokens,
        }
        if config.seed is not None:
            kwargs["seed"] = config.seed
        if config.stop:
            kwargs["stop"] = list(config.stop)
        if json_schema is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "arbor_output", "schema": json_schema},
            }
            if self.base_url in _NO_JSON_SCHEMA_FORMAT:
                kwargs["response_format"] = {"type": "json_object", "schema": json_schema}
        started = time.perf_counter()
        try:
            response = self._call(lambda: client.chat.completions.create(**kwargs))
        except ModelCallFailed as exc:
            if json_schema is None or not _rejects_response_format(exc.__cause__):
                raise
            if kwargs["response_format"]["type"] != "json_schema":
                raise
            _NO_JSON_SCHEMA_FORMAT.add(self.base_url)
            kwargs["response_format"] = {"type": "json_object", "schema": json_schema}
            response = self._call(lambda: client.chat.completions.create(**kwargs))
        latency = time.perf_counter() - started
        choice = response.choices[0]
        usage = response.usage
        return Completion(
            text=choice.message.content or "",
            usage=Usage(
                usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0
            ),
            latency_s=latency,
            model=self.label,
            finish_reason=choice.finish_reason,
        )
