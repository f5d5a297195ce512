"""OpenAI chat format <-> domainvlm conversations, and the response / stream-chunk objects.

OpenAI content parts become one domainvlm message string with '<image>' placeholders where image parts were,
so every model's own chat template places the images (see models.chat_format.to_hf_messages).
"""

from __future__ import annotations

import json
import time
import uuid

from ..data.record import IMAGE_TOKEN
from ..inference.image_input import ImageInputError, decode_base64, load_url
from .errors import CONTEXT_LENGTH_EXCEEDED, ApiError, error_body, model_not_found  # noqa: F401 - re-exported


def _text(s: str, where: str) -> str:
    # a literal '<image>' in user text would be taken for an image slot and break the image/placeholder count
    if IMAGE_TOKEN in s:
        raise ApiError(400, f"{where}: text may not contain the reserved token '{IMAGE_TOKEN}'", param=where)
    return s


def _image_url(part: dict, where: str) -> str:
    iu = part.get("image_url")
    url = iu.get("url") if isinstance(iu, dict) else iu
    if not isinstance(url, str) or not url:
        raise ApiError(400, f"{where}.image_url.url: missing (expected {{'url': 'data:image/png;base64,...'}})",
                       param=f"{where}.image_url")
    return url


def to_conversation(messages, cfg) -> tuple[list[dict], list]:
    """Validated request messages -> (domainvlm messages, PIL images). Raises ApiError / ImageInputError."""
    out, images = [], []
    for i, m in enumerate(messages):
        where = f"messages[{i}].content"
        role = "system" if m.role == "developer" else m.role
        content = m.content
        if content is None or isinstance(content, str):
            out.append({"role": role, "content": _text(content or "", where)})
            continue
        if not content:  # OpenAI refuses an empty part list too; answering it would answer an empty turn
            raise ApiError(400, f"{where}: empty list of parts (give at least a text or an image_url part)",
                           param=where)
        pieces = []
        for j, part in enumerate(content):
            pw = f"{where}[{j}]"
            kind = part.get("type")
            if kind == "text":
                if not isinstance(part.get("text"), str):
                    raise ApiError(400, f"{pw}.text: missing or not a string", param=f"{pw}.text")
                pieces.append(_text(part["text"], f"{pw}.text"))
            elif kind in ("image_url", "image", "input_image"):
                if role != "user":
                    raise ApiError(400, f"{pw}: images are only allowed in user messages", param=pw)
                if len(images) >= cfg.max_images:
                    raise ApiError(400, f"{pw}: more than {cfg.max_images} images in one request", param=pw)
                if kind == "image" and isinstance(part.get("image"), str):  # bare base64 convenience form
                    images.append(decode_base64(part["image"], f"{pw}.image", cfg.max_image_pixels))
                else:
                    url = _image_url(part, pw)
                    images.append(load_url(url, f"{pw}.image_url", cfg.max_image_pixels, cfg.local_files_root))
                pieces.append(IMAGE_TOKEN)
            else:
                raise ApiError(400, f"{pw}.type: unsupported part type {kind!r} (use 'text' or 'image_url')",
                               param=f"{pw}.type")
        out.append({"role": role, "content": "\n".join(pieces)})
    if out[-1]["role"] != "user":
        raise ApiError(400, "messages: the last message must be from the user", param="messages")
    return out, images


def legacy_conversation(req, cfg) -> tuple[list[dict], list]:
    """VisualGLM-style {text, image, history}: the image belongs to the first user turn."""
    images = [decode_base64(req.image, "image", cfg.max_image_pixels)] if req.image else []
    turns = []
    for i, pair in enumerate(req.history):
        if len(pair) != 2:
            raise ApiError(400, f"history[{i}]: expected [question, answer], got {len(pair)} item(s)",
                           param=f"history[{i}]")
        turns += [("user", _text(pair[0], f"history[{i}][0]")), ("assistant", _text(pair[1], f"history[{i}][1]"))]
    turns.append(("user", _text(req.text, "text")))
    msgs = [{"role": r, "content": c} for r, c in turns]
    if images:
        msgs[0]["content"] = f"{IMAGE_TOKEN}\n{msgs[0]['content']}"
    return msgs, images


def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def response_schema(rf) -> str | None:
    """``response_format`` -> the JSON text of the schema to constrain decoding with (None: free text)."""
    from ..inference.json_constraint import OBJECT, SchemaError, check_schema

    if rf is None or rf.type == "text":
        return None
    schema = OBJECT if rf.type == "json_object" else rf.json_schema.schema_
    try:
        check_schema(schema, "response_format.json_schema.schema")
    except SchemaError as e:
        raise ApiError(400, str(e), param="response_format") from None
    return json.dumps(schema)


def chat_sampling(req, s):
    """The request's stop strings, seed, log-probs and response format added to its sampling settings."""
    from dataclasses import replace

    lp = (req.top_logprobs or 0) if req.logprobs else None
    schema = response_schema(req.response_format)
    from .trust import schema_wants_annotations

    annotate = bool(req.evidence_png) or schema_wants_annotations(schema)  # evidence only when asked: it is slow
    return replace(s, stop=req.stops(), seed=req.seed, logprobs=lp, json_schema=schema, annotate=annotate)


def usage(counts: tuple[int, int]) -> dict:
    p, c = counts
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def completion(cid: str, model: str, answer, counts: tuple[int, int], extra: dict | None = None) -> dict:
    """A chat.completion object from an engine Answer (text with counts, finish reason, log-probs); ``extra``:
    extension fields of the message (``evidence_png``)."""
    choice = {"index": 0, "message": {"role": "assistant", "content": str(answer), **(extra or {})},
              "finish_reason": getattr(answer, "finish_reason", "stop"), "logprobs": None}
    if getattr(answer, "logprobs", None) is not None:
        choice["logprobs"] = {"content": answer.logprobs, "refusal": None}
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [choice], "usage": usage(counts)}


def chunk(cid: str, model: str, delta: dict, finish: str | None = None, usage_: dict | None = None,
          choices: bool = True) -> str:
    obj = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if choices else []}
    if usage_ is not None:
        obj["usage"] = usage_
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def sse_error(message: str, type_: str = "server_error") -> str:
    return f"data: {json.dumps(error_body(500, message, type_), ensure_ascii=False)}\n\n"


__all__ = ["ApiError", "ImageInputError", "error_body", "to_conversation", "legacy_conversation", "completion",
           "chunk", "sse_error", "new_id", "response_schema", "usage"]
