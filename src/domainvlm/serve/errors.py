"""The HTTP error every route raises for a bad request or a server fault, and its OpenAI-style JSON body."""

from __future__ import annotations


class ApiError(Exception):
    """A 4xx/5xx answer with an OpenAI-style JSON error body."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param = status, message, type_, param


def error_body(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": status}, "status": status}
