"""Request bodies of the HTTP API (they also make the OpenAPI spec at /openapi.json).

Unknown OpenAI fields (``user``, ``stream_options``, ``presence_penalty``, ...) are accepted and ignored, so
stock clients work; message content parts are checked by hand in ``openai_compat`` for field-precise errors.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = Field(
        None, description="text, or a list of parts: {'type': 'text', 'text'} / "
                          "{'type': 'image_url', 'image_url': {'url': 'data:image/png;base64,...'}}")


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = Field(None, description="ignored: the server answers with the one model it serves")
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2, description="0 = greedy")
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0, description="extension; 0 = off")
    repetition_penalty: float | None = Field(None, gt=0, description="extension")
    stream: bool = False
    n: int = Field(1, ge=1, le=1, description="only 1 is supported")


class LegacyRequest(BaseModel):
    """VisualGLM / ChatGLM-style API: one question, a base64 image, and [question, answer] history pairs."""

    model_config = ConfigDict(extra="allow")
    text: str = Field(..., min_length=1)
    image: str | None = Field(None, description="base64 image (or data: URL); applies to the whole conversation")
    history: list[list[str]] = Field(default_factory=list, description="[[question, answer], ...]")
    max_new_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)


class LegacyResponse(BaseModel):
    response: str
    history: list[list[str]]
    status: int
    time: str
