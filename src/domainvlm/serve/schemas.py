"""Request bodies of the HTTP API (they also make the OpenAPI spec at /openapi.json).

Types are strict (``"stream": 0`` or ``"temperature": false`` is a 400, not silently coerced), values are
range-checked, and an OpenAI field this server does not implement is a 400 naming it (``tools``,
``logit_bias``, a non-zero ``presence_penalty``, ...) instead of being accepted and ignored. Fields that
change nothing about the answer (``user``, ``metadata``, ``store``) are accepted. Message content parts are
checked by hand in ``openai_compat`` for field-precise errors.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# accepted and ignored: they do not change the answer
IGNORED = {"user", "metadata", "store", "safety_identifier", "prompt_cache_key"}
# OpenAI fields accepted only at their default (no-op) value
NOOP_DEFAULTS = {"presence_penalty": (0, 0.0, None), "frequency_penalty": (0, 0.0, None),
                 "parallel_tool_calls": (None, True), "tool_choice": (None, "none"), "tools": (None, []),
                 "service_tier": (None, "auto", "default"), "modalities": (None, ["text"])}


EVIDENCE_PNG = ("extension: where the model sees each named pattern, drawn over the image, as a PNG data URL "
                "(data:image/png;base64,...); fills the answer's evidence and map facts (a backward pass per "
                "image, so only when asked). Needs a model whose answer head gives evidence (the wafer expert).")


class UnsupportedField(ValueError):
    """Raised for a request field the server does not implement; the app answers 400 naming it."""

    def __init__(self, field: str, why: str):
        super().__init__(f"{field}: {why}")
        self.field = field


class ChatMessage(BaseModel):
    # forbid: a typo such as 'contents' would otherwise be dropped and an empty turn answered with a 200
    model_config = ConfigDict(extra="forbid", strict=True)
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = Field(
        None, description="text, or a list of parts: {'type': 'text', 'text'} / "
                          "{'type': 'image_url', 'image_url': {'url': 'data:image/png;base64,...'}}")
    # what the openai SDK dumps of an answer sent back as a turn; they change nothing here
    name: str | None = Field(None, description="ignored")
    refusal: None = None
    annotations: None = None
    audio: None = None
    function_call: None = None
    tool_calls: None = None
    evidence_png: str | None = Field(None, description="ignored (this server's extension, sent back)")


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(..., min_length=1, max_length=64)
    schema_: dict[str, Any] = Field(..., alias="schema")
    description: str | None = None
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    model: str | None = Field(None, description="the served model's id (GET /v1/models), 'domainvlm' or the model "
                              "folder's name; omitted: the served model; any other name: 404 model_not_found")
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2, description="0 = greedy; unset = the model's "
                                      "generation_config (greedy if it says nothing), not OpenAI's 1")
    top_p: float | None = Field(None, gt=0, le=1, description="unset = the model's generation_config")
    top_k: int | None = Field(None, ge=0, description="extension; 0 = off")
    repetition_penalty: float | None = Field(None, gt=0, le=10, description="extension; 1 = off")
    seed: int | None = Field(None, ge=-2**63, lt=2**64, description="reproducible sampling for the same request")
    stop: str | list[str] | None = Field(None, description="up to 4 stop strings; the answer excludes them")
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1, description="only 1 is supported")
    evidence_png: bool = Field(False, description=EVIDENCE_PNG + " Returned as choices[0].message.evidence_png "
                               "(null where the head did not answer). Not with stream: true.")

    @model_validator(mode="after")
    def _no_unsupported(self):
        for k, v in (self.model_extra or {}).items():
            if k in IGNORED:
                continue
            if k in NOOP_DEFAULTS:
                if any(v == d and type(v) is type(d) for d in NOOP_DEFAULTS[k]):
                    continue
                raise UnsupportedField(k, "not supported by this server (only its default value is accepted)")
            raise UnsupportedField(k, "not supported by this server")
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise UnsupportedField("stop", "at most 4 non-empty strings")
        if self.evidence_png and self.stream:
            raise UnsupportedField("evidence_png", "not available with stream: true")
        if self.top_logprobs is not None and not self.logprobs:
            raise UnsupportedField("top_logprobs", "needs logprobs: true")
        rf = self.response_format
        if rf is not None and (rf.type == "json_schema") != (rf.json_schema is not None):
            raise UnsupportedField("response_format.json_schema", "required exactly when type is 'json_schema'")
        return self

    def stops(self) -> tuple:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


class LegacyRequest(BaseModel):
    """VisualGLM / ChatGLM-style API: one question, a base64 image, and [question, answer] history pairs.
    Strictly typed like the chat route (``"temperature": false`` is a 400, not 0), and an unknown field (ChatGLM's
    ``max_length``, a ``top_k``) is a 400 naming it: ignored, it would silently not apply."""

    model_config = ConfigDict(extra="forbid", strict=True)
    text: str = Field(..., min_length=1)
    image: str | None = Field(None, description="base64 image (or data: URL); applies to the whole conversation")
    history: list[list[str]] = Field(default_factory=list, description="[[question, answer], ...]")
    max_new_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    assessment: bool = Field(False, description="extension: also return the answer head's structured answer "
                             "(defects, confidence, per_pattern, abstain, reason, evidence, facts) as 'assessment'; "
                             "evidence costs a backward pass per image")
    evidence_png: bool = Field(False, description=EVIDENCE_PNG + " Returned as 'evidence_png'.")


class LegacyResponse(BaseModel):
    response: str
    history: list[list[str]]
    status: int
    time: str
    assessment: dict[str, Any] | None = Field(None, description="only when asked (assessment: true) and the head "
                                              "answered: {answer, defects, confidence, per_pattern, abstain, "
                                              "reason, evidence, facts}")
    evidence_png: str | None = Field(None, description="only when asked (evidence_png: true) and there is a "
                                     "picture: data:image/png;base64,...")
