"""Which model runs a call and with which sampling settings; shared by plans and strategies."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from engine.redaction import redact


class GenerationConfig(BaseModel):
    """Sampling settings for one model call. The UI's sliders read these bounds."""

    temperature: float = Field(0.2, ge=0.0, le=2.0, description="Sampling temperature.")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_tokens: int = Field(
        256, ge=1, le=8192, description="Most tokens the node may generate in one call."
    )
    seed: int | None = Field(None, description="Sampling seed; None lets the backend choose.")
    stop: list[str] = Field(
        default_factory=list,
        max_length=4,
        description="Generation ends when one of these strings appears (it is not returned).",
    )
    prompt_format: Literal["auto", "chat", "base", "completion"] = Field(
        "auto",
        description="auto: base prompts for base (pretrained) models, chat prompts for"
        " instruction-tuned ones (see engine.models.model_kind). chat: the node prompt in the"
        " model's chat format. base: Arbor's few-shot completion prompt (worked question/answer"
        " pairs, then the node's question). completion: the node's instruction alone as raw"
        " text; write your own few-shot examples into the instruction.",
    )


class ModelRef(BaseModel):
    """Which model runs a node. Holds no secret: a remote key is read from ``api_key_env``."""

    kind: Literal["local", "remote"] = "local"
    path: str | None = Field(
        None, description="Local GGUF file; None means the bundled Gemma 3 270M model."
    )
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint, e.g. .../v1.")
    model: str | None = Field(None, description="Model name sent to the remote endpoint.")
    api_key_env: str | None = Field(
        None, description="Name of the environment variable that holds the endpoint's API key."
    )

    @property
    def label(self) -> str:
        """Short human name, used in tables and traces."""
        if self.kind == "remote":
            return f"{self.model or '?'}@{redact((self.base_url or '?').rstrip('/'))}"
        if self.path is None:
            return "bundled:gemma-3-270m"
        return self.path.rsplit("/", 1)[-1]


BUNDLED_MODEL = ModelRef()
