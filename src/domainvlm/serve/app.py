"""The HTTP API: OpenAI-compatible chat completions, the VisualGLM-style ``POST /``, /health, /v1/models.

Every error is JSON (``{"error": {...}, "status": N}``); user mistakes are 4xx and never take the server
down. All requests, streamed or not, go through the micro-batcher.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..inference.batcher import Batcher, Busy
from ..inference.engine import Sampling, SamplingError
from ..inference.image_input import DEFAULT_MAX_PIXELS, ImageInputError
from ..inference.prompt_guard import PromptBudget, PromptTooLong
from . import openai_compat as oc
from . import trust
from .auth import ApiKeyGate
from .limits import BodyLimit
from .openapi_doc import document
from .schemas import ChatCompletionRequest, LegacyRequest, LegacyResponse, UnsupportedField


@dataclass
class ServeConfig:
    model_name: str = "domainvlm"  # the id /v1/models lists and answers carry
    model_aliases: tuple = ()  # other names a request's ``model`` may give (see served_names)
    api_key: str | None = None
    protect_docs: bool = False  # with api_key: /docs and /openapi.json need the key too
    max_body_bytes: int = 20 << 20
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    max_images: int = 4
    max_tokens_cap: int = 2048
    local_files_root: Path | None = None
    max_prompt_tokens: int | None = None  # None: the model's context
    request_timeout: float | None = 60.0  # seconds one batch may hold the engine (decoding stops there)
    decode_slots: int = 4  # requests whose images are decoded at once (the rest wait): bounds that memory
    sampling: Sampling = field(default_factory=Sampling)


def stuck_after(timeout: float) -> float:
    """Decoding stops at the request timeout; a batch still running 10% + 1 s later is stuck."""
    return timeout * 1.1 + 1.0


def _err(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None, headers=None,
         code: str | None = None):
    return JSONResponse(oc.error_body(status, message, type_, param, code), status_code=status, headers=headers)


GENERIC_NAME = "domainvlm"  # accepted whatever the served name: the default name, used by the docs' examples


def served_names(cfg: ServeConfig, engine) -> set[str]:
    """The names a request's ``model`` may give: the served id (/v1/models), ``domainvlm``, the configured
    aliases, and the model folder as given and by its name (``wafer-expert``: the README's examples)."""
    names = {cfg.model_name, GENERIC_NAME, *cfg.model_aliases}
    folder = getattr(engine, "model_dir", None)
    if folder:
        names |= {str(folder), Path(str(folder)).name, Path(str(folder)).expanduser().resolve().name}
    return {n for n in names if n}


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """(message, param): ``param`` names the offending field as OpenAI's error object does (None: the body)."""
    e = exc.errors()[0]
    if e.get("type") == "value_error" and isinstance(e.get("ctx", {}).get("error"), UnsupportedField):
        return str(e["ctx"]["error"]), e["ctx"]["error"].field  # names the field itself
    if e.get("type") == "json_invalid":
        return f"malformed JSON body ({e.get('ctx', {}).get('error', 'invalid JSON')})", None
    loc = [str(x) for x in e.get("loc", ()) if x != "body"]
    if not loc and e.get("type") in ("model_attributes_type", "dict_type"):
        return "request body must be a JSON object (send it with Content-Type: application/json)", None
    # pydantic names the union member it tried ('str', 'list[dict[str,any]]'); users need the field
    union = [x for x in loc if x in ("str", "int", "float", "bool") or "[" in x]
    loc = [x for x in loc if x not in union]
    path = "".join(f"[{x}]" if x.isdigit() else f".{x}" for x in loc).lstrip(".") or None
    where = path or "body"
    if e.get("type") == "extra_forbidden":
        return f"{where}: not supported by this server", path
    if e.get("type") == "missing":
        return f"{where}: field required", path
    if union:
        return f"{where}: wrong type ({type(e.get('input')).__name__})", path
    return f"{where}: {e.get('msg', 'invalid value')}", path


def _sampling(cfg: ServeConfig, max_tokens, temperature, top_p, top_k=None, rep=None,
              field: str = "max_tokens") -> Sampling:
    """``field``: the request's name for the token limit (POST / calls it max_new_tokens)."""
    d = cfg.sampling
    n = max_tokens or d.max_new_tokens
    if n > cfg.max_tokens_cap:
        raise oc.ApiError(400, f"{field}: {n} is over this server's limit of {cfg.max_tokens_cap}", param=field)
    return Sampling(max_new_tokens=n, temperature=d.temperature if temperature is None else temperature,
                    top_p=d.top_p if top_p is None else top_p, top_k=d.top_k if top_k is None else top_k,
                    repetition_penalty=d.repetition_penalty if rep is None else rep, cut_head_answers=True)


def one_image_per_message(messages: list[dict]) -> None:
    """A compact model answers about one image a question: two in one message were answered about the last one
    alone, with no word of it. A later message may bring another image (a new map in the same chat)."""
    from ..data.record import IMAGE_TOKEN

    for i, m in enumerate(messages):
        if str(m.get("content") or "").count(IMAGE_TOKEN) > 1:
            raise oc.ApiError(400, f"messages[{i}].content: {m['content'].count(IMAGE_TOKEN)} images in one message; "
                              "this model answers about one image per question (send one request per image)",
                              param=f"messages[{i}].content")


def create_app(batcher: Batcher, cfg: ServeConfig) -> FastAPI:
    app = FastAPI(title="domainvlm API", version="1", description="OpenAI-compatible chat completions with "
                  "images, plus a VisualGLM-style endpoint. Errors are JSON: {'error': {'message', ...}}.")
    document(app)  # /openapi.json lists the 400/401/413/500/503 and SSE answers the server really gives
    app.add_middleware(BodyLimit, max_bytes=cfg.max_body_bytes)
    app.add_middleware(ApiKeyGate, key=cfg.api_key, protect_docs=cfg.protect_docs)  # outermost: before the body
    app.state.api_key = cfg.api_key
    budget = PromptBudget(batcher.engine.processor, batcher.engine.model, cfg.max_prompt_tokens)
    names = served_names(cfg, batcher.engine)

    def check_model(name: str | None) -> None:
        """OpenAI's 404 ``model_not_found`` for a model this server does not serve (omitted: the served one)."""
        if name is not None and name not in names:
            raise oc.model_not_found(name)
    if cfg.request_timeout:
        batcher.engine.time_limit = cfg.request_timeout

    decoding = threading.BoundedSemaphore(max(1, cfg.decode_slots))

    from ..inference.no_image import answers_only_lm

    one_image = answers_only_lm(batcher.engine.model)  # a compact model learnt one image per question

    def conversation(build, *a):
        """Parse the request, then refuse an over-long prompt before it queues: (messages, images, prompt
        tokens as the processor will count them, or None where no limit is set and nothing was counted)."""
        with decoding:  # the thread pool has ~40 threads: 40 requests x 4 x 16 MP decoded at once is 7.7 GB
            messages, images = build(*a)
        if one_image:
            one_image_per_message(messages)
        return messages, images, budget.check(messages, images) or None

    @app.exception_handler(oc.ApiError)
    async def _api_error(_, e: oc.ApiError):
        return _err(e.status, e.message, e.type, e.param, code=e.code)

    @app.exception_handler(ImageInputError)
    async def _image_error(_, e: ImageInputError):
        return _err(e.status, str(e), param=str(e).split(":", 1)[0])

    @app.exception_handler(SamplingError)
    async def _bad_sampling(_, e: SamplingError):
        return _err(400, str(e), param=str(e).split(":", 1)[0])

    @app.exception_handler(PromptTooLong)
    async def _too_long(_, e: PromptTooLong):
        return _err(400, str(e), param="messages", code=oc.CONTEXT_LENGTH_EXCEEDED)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_, e: RequestValidationError):
        message, param = _validation_message(e)
        return _err(400, message, param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_, e: StarletteHTTPException):
        if isinstance(e.__cause__, UnicodeDecodeError):  # FastAPI says only "There was an error parsing the body"
            u = e.__cause__
            return _err(400, f"malformed JSON body (not UTF-8: byte 0x{u.object[u.start]:02x} at position {u.start})")
        return _err(e.status_code, str(e.detail), "invalid_request_error" if e.status_code < 500 else "server_error",
                    headers=getattr(e, "headers", None))  # 405 keeps its Allow header

    @app.exception_handler(Busy)
    async def _busy(_, e: Busy):
        return _err(503, str(e), "server_busy", headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def _crash(_, e: Exception):  # a bug or a generation failure; the server keeps running
        return _err(500, f"generation failed: {e.__class__.__name__}: {e}", "server_error")

    def counts(ans, messages, images, prompt_tokens=None) -> tuple[int, int]:  # (prompt, completion) tokens
        return batcher.engine.count_usage(ans, messages, images, prompt_tokens)

    async def answer(messages, images, s: Sampling) -> str:
        fut = batcher.submit(messages, images, s)
        try:
            return await asyncio.wrap_future(fut)
        except asyncio.CancelledError:  # client went away: drop the job if it has not started
            fut.cancel()
            raise

    @app.get("/health", tags=["meta"])
    async def health():
        busy = batcher.busy_for()
        if cfg.request_timeout and busy > stuck_after(cfg.request_timeout):
            return JSONResponse({"status": "stuck", "reason": f"the engine has been on one batch for {busy:.0f} s "
                                 f"(request timeout {cfg.request_timeout:g} s)", "queued": batcher.pending},
                                status_code=503, headers={"Retry-After": str(int(cfg.request_timeout) + 1)})
        return {"status": "ok", "model": cfg.model_name, "queued": batcher.pending, "streams": batcher.streams,
                "batches_run": batcher.batches_run, "largest_batch": batcher.largest_batch}

    @app.get("/v1/models", tags=["openai"])
    async def models():
        return {"object": "list", "data": [{"id": cfg.model_name, "object": "model", "created": 0,
                                            "owned_by": "domainvlm"}]}

    @app.get("/v1/models/{model}", tags=["openai"])
    async def retrieve_model(model: str):
        check_model(model)
        return {"id": cfg.model_name, "object": "model", "created": 0, "owned_by": "domainvlm"}

    @app.post("/v1/chat/completions", tags=["openai"])
    async def chat_completions(req: ChatCompletionRequest):
        check_model(req.model)
        s = oc.chat_sampling(req, _sampling(cfg, req.max_completion_tokens or req.max_tokens, req.temperature,
                                            req.top_p, req.top_k, req.repetition_penalty,
                                            "max_completion_tokens" if req.max_completion_tokens else "max_tokens"))
        if req.evidence_png:
            trust.require(batcher.engine, "evidence_png", "evidence")
        messages, images, n_prompt = await run_in_threadpool(conversation, oc.to_conversation, req.messages, cfg)
        cid = oc.new_id()
        if not req.stream:
            ans = await answer(messages, images, s)
            n = await run_in_threadpool(counts, ans, messages, images, n_prompt)
            extra = ({"evidence_png": await run_in_threadpool(trust.overlay, batcher.engine, ans, images)}
                     if req.evidence_png else None)
            return oc.completion(cid, cfg.model_name, ans, n, extra)
        it = batcher.stream(messages, images, s)  # queued now: a full queue is a 503 before streaming starts
        want_usage = bool(req.stream_options and req.stream_options.include_usage)
        return StreamingResponse(_events(cid, it, (messages, images, n_prompt) if want_usage else None),
                                 media_type="text/event-stream")

    def _events(cid, it, conv):
        """SSE: role chunk, content chunks, finish chunk, [usage chunk], [DONE]. Runs in Starlette's pool."""
        try:
            yield oc.chunk(cid, cfg.model_name, {"role": "assistant", "content": ""})
            while True:
                try:
                    piece = next(it)
                except StopIteration as stop:  # the stream's return value is the final Answer
                    ans = stop.value
                    break
                if piece:
                    yield oc.chunk(cid, cfg.model_name, {"content": piece})
            yield oc.chunk(cid, cfg.model_name, {}, getattr(ans, "finish_reason", "stop"))
            if conv is not None:
                yield oc.chunk(cid, cfg.model_name, {}, usage_=oc.usage(counts(ans, *conv)), choices=False)
        except Exception as e:  # noqa: BLE001 - headers are sent: report in-band, as OpenAI does
            yield oc.sse_error(f"generation failed: {e.__class__.__name__}: {e}")
        finally:
            it.close()  # client gone early: its row stops generating
        yield "data: [DONE]\n\n"

    @app.post("/", tags=["legacy"], response_model=LegacyResponse, response_model_exclude_none=True)
    async def legacy(req: LegacyRequest):
        s = _sampling(cfg, req.max_new_tokens, req.temperature, req.top_p, field="max_new_tokens")
        for name, what in (("assessment", "assessment"), ("evidence_png", "evidence")):
            if getattr(req, name):
                trust.require(batcher.engine, name, what)
                s = replace(s, annotate=True)
        if req.image is not None and not req.image.strip():  # an empty upload is a mistake, not a text question
            raise oc.ApiError(400, "image: empty (send a base64 image, or leave 'image' out to ask without one)",
                              param="image")
        messages, images, _ = await run_in_threadpool(conversation, oc.legacy_conversation, req, cfg)
        text = await answer(messages, images, s)
        out = {"response": str(text), "history": [*req.history, [req.text, str(text)]], "status": 200,
               "time": time.strftime("%Y-%m-%d %H:%M:%S")}
        if req.assessment:
            out["assessment"] = trust.assessment_json(text)
        if req.evidence_png:
            out["evidence_png"] = await run_in_threadpool(trust.overlay, batcher.engine, text, images)
        return out

    return app
