"""ASGI middleware that bounds request bodies: a 413 JSON answer, never an unbounded read.

A request announcing more than the limit in ``Content-Length`` is answered at once without
reading its body; a chunked request is counted as it is read and cut off at the limit.
"""

from __future__ import annotations

import json

__all__ = ["BodyLimitMiddleware"]


async def _send_413(send, limit: int) -> None:
    body = json.dumps({"error": f"request body larger than the {limit:,} bytes allowed"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Refuse HTTP request bodies over ``limit`` bytes with ``413 {"error": ...}``."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    announced = int(value)
                except ValueError:
                    announced = -1
                if announced > self.limit or announced < 0:
                    return await _send_413(send, self.limit)
        seen = 0

        async def counting_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # FastAPI re-raises an HTTPException met while reading a body
                    from starlette.exceptions import HTTPException

                    raise HTTPException(413, f"request body larger than the {self.limit:,} bytes allowed")
            return message

        await self.app(scope, counting_receive, send)
