"""A ceiling on request bodies: FastAPI reads a JSON or form body whole into memory
before anything checks it, so without one any client — also one not signed in, at
`/login` or `/api/password-links/use` — could make the process that runs the alarm path
hold gigabytes. Every body beyond `MAX_BODY_BYTES` is refused with 413 as soon as its
`Content-Length` says so, or as soon as a chunked body passes it.

`PUT /api/registry` is exempt: it streams its body under a limit of its own
(`TRYGG_REGISTRY_MAX_MB`, dashboard/routes_registry.py)."""

from __future__ import annotations

import json
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The largest body of any other route: an admin's edit of a resident with polygon safe
#: zones and ten contacts is a few tens of kilobytes.
MAX_BODY_BYTES: Final = 1024 * 1024
#: (method, path) of routes with a limit of their own.
EXEMPT: Final = frozenset({("PUT", "/api/registry")})


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) in EXEMPT:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0
        started = refused = False

        async def counted() -> Message:
            # Past the limit: answer 413 now and tell the app the client has gone (the
            # app's own parser would turn an exception here into a 400).
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    refused = True
                    if not started:
                        await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def sending(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 is the answer
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counted, sending)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"detail": f"the request body is larger than {self.max_bytes // 1024} KiB"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


__all__ = ["MAX_BODY_BYTES", "BodyLimitMiddleware"]
