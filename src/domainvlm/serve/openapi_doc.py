"""The OpenAPI document says what the server really answers (checked by schemathesis, scripts/reliability.sh).

FastAPI documents a 422 validation error for every route with a body; this server answers 400 with its own
error object instead, and also 401 (API key), 404 (a model it does not serve), 413 (body over the limit), 500
(generation failed), 503 (queue full, engine stuck) and, for ``stream: true``, ``text/event-stream``.
:func:`document` rewrites the generated document once, when it is first asked for.
"""

from __future__ import annotations

ERROR_SCHEMA = {
    "title": "Error", "type": "object", "required": ["error", "status"],
    "properties": {
        "error": {"type": "object", "required": ["message", "type"], "properties": {
            "message": {"type": "string"}, "type": {"type": "string"},
            "param": {"type": ["string", "null"]},
            "code": {"type": ["string", "null"], "description": "OpenAI's error code (model_not_found, "
                     "invalid_api_key, context_length_exceeded) or null; the HTTP status is `status`"}}},
        "status": {"type": "integer"}},
}
_WHY = {400: "invalid request (the message names the field)", 401: "missing or wrong API key",
        404: "the request names a model this server does not serve (code model_not_found)",
        413: "request body over the size limit", 500: "generation failed", 503: "server busy or engine stuck "
        "(Retry-After says when to try again)"}
# status codes each route can answer besides 200 (401 only where a key is set, but the document is static;
# /health never asks for the key: serve/auth.py)
_ERRORS = {"/v1/chat/completions": (400, 401, 404, 413, 500, 503), "/": (400, 401, 413, 500, 503),
           "/v1/models": (401,), "/v1/models/{model}": (401, 404), "/health": (503,)}
_SSE = {"schema": {"type": "string", "description": "server-sent events: chat.completion.chunk objects as "
                                                   "'data: {...}' lines, then 'data: [DONE]'"}}


def _error(status: int) -> dict:
    return {"description": _WHY[status], "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def patch(doc: dict) -> dict:
    """The generated document with the real error responses (in place; returned for convenience)."""
    doc.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for path, ops in doc.get("paths", {}).items():
        for method, op in ops.items():
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            for status in _ERRORS.get(path, ()):
                responses.setdefault(str(status), _error(status))
            if path == "/v1/chat/completions" and method == "post":
                responses["200"].setdefault("content", {})["text/event-stream"] = _SSE
    schemas = doc["components"]["schemas"]
    for unused in ("HTTPValidationError", "ValidationError"):  # only the dropped 422s referred to them
        schemas.pop(unused, None)
    return doc


def document(app) -> None:
    """Make ``app.openapi()`` (and so /openapi.json and /docs) serve the patched document."""
    generate = app.openapi

    def openapi():
        if app.openapi_schema is None:
            app.openapi_schema = patch(generate())
        return app.openapi_schema

    app.openapi = openapi
