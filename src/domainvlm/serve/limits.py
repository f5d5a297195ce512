"""Request body size limit as plain ASGI middleware.

A declared Content-Length over the limit is refused before a byte is read. Chunked bodies are counted while
they are read; crossing the limit raises a 413 HTTPException from inside ``receive``, which FastAPI passes
through its body parsing unchanged, so the client still gets the JSON error.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException

from .errors import error_body


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"request body over the limit of {limit:,} bytes")


class BodyLimit:
    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send)
        seen = 0

        async def counted():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return msg

        await self.app(scope, counted, send)

    async def _refuse(self, send):
        msg = f"request body over the limit of {self.max_bytes:,} bytes"
        body = json.dumps(error_body(413, msg)).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
