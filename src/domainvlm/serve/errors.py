"""The HTTP error every route raises for a bad request or a server fault, and its OpenAI-style JSON body.

The body is ``{"error": {"message", "type", "param", "code"}, "status": N}``. As in OpenAI's API, ``code`` is a
string naming the kind of error (``model_not_found``, ``invalid_api_key``, ``context_length_exceeded``, ...)
or null where there is no more specific kind than ``type`` says; the number is the HTTP status, repeated as
``status`` (which clients of the VisualGLM-style ``POST /`` read, as in its answers).
"""

from __future__ import annotations

MODEL_NOT_FOUND = "model_not_found"  # 404: the request names a model this server does not serve
INVALID_API_KEY = "invalid_api_key"  # 401
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"  # 400: the prompt is over the model's / server's limit


class ApiError(Exception):
    """A 4xx/5xx answer with an OpenAI-style JSON error body."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code


def error_body(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    """``code``: a string error code or None (never the status number: that is ``status``)."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}, "status": status}


def model_not_found(name: str) -> ApiError:
    return ApiError(404, f"The model `{name}` does not exist", param="model", code=MODEL_NOT_FOUND)
