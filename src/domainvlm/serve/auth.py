"""API-key gate as plain ASGI middleware: the key is checked before any body is read or parsed.

The API routes (``POST /`` and ``/v1/...``) need ``Authorization: Bearer KEY`` when a key is set; the
interactive docs and the OpenAPI document too with ``protect_docs``; ``/health`` and unknown paths (404) never. The key should come from the environment (``--api-key-env``),
not the command line, where ``ps`` shows it to every user of the machine.
"""

from __future__ import annotations

import json
import secrets

from .errors import INVALID_API_KEY, error_body

DOCS = ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")


def key_matches(header: bytes | str | None, key: str) -> bool:
    given = header.decode("latin-1") if isinstance(header, bytes) else (header or "")
    scheme, _, value = given.partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(value.strip().encode(), key.encode())


class ApiKeyGate:
    def __init__(self, app, key: str | None, protect_docs: bool = False):
        self.app, self.key, self.protect_docs = app, key, protect_docs

    def _guarded(self, path: str) -> bool:
        return path == "/" or path == "/v1" or path.startswith("/v1/") or (self.protect_docs and path in DOCS)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.key or not self._guarded(scope.get("path", "")):
            return await self.app(scope, receive, send)
        if key_matches(dict(scope.get("headers") or []).get(b"authorization"), self.key):
            return await self.app(scope, receive, send)
        msg = "invalid or missing API key (send 'Authorization: Bearer <key>')"
        body = json.dumps(error_body(401, msg, "authentication_error", code=INVALID_API_KEY)).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})
