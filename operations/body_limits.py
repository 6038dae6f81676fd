"""Request bodies refused as they arrive, before the service reads more than a route accepts.

Django's ASGI handler spools a whole request body before any view runs, so a limit checked in
a view comes only after an oversized body was read to the end. This ASGI middleware sits in
front of Django: a declared length over the route's limit is answered 413 without reading the
body, and a chunked body (no Content-Length) is cut off as soon as it grows past the limit.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from django.conf import settings
from django.urls import Resolver404, resolve

from operations.metrics import REQUEST_LATENCY

logger = logging.getLogger("scaiecho.access")

Scope = dict[str, Any]
Message = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

View = TypeVar("View", bound=Callable[..., Any])

REPLAY_CHUNK_BYTES = 64 * 1024


def accepts_body_up_to(limit: Callable[[], int]) -> Callable[[View], View]:
    """Declares a function view's body limit (class views define ``max_body_bytes``)."""

    def declare(view: View) -> View:
        view.max_body_bytes = limit  # type: ignore[attr-defined]
        return view

    return declare


def body_limit_for(path: str) -> tuple[int, str]:
    """The largest body accepted on ``path`` and the route pattern it resolves to."""
    try:
        match = resolve(path)
    except Resolver404:
        return settings.REQUEST_MAX_BODY_BYTES, "unmatched"
    view_class = getattr(match.func, "view_class", None)
    declared = getattr(view_class, "max_body_bytes", None) or getattr(
        match.func, "max_body_bytes", None
    )
    limit = declared() if declared is not None else settings.REQUEST_MAX_BODY_BYTES
    return limit, match.route


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class RequestBodyLimit:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"].removeprefix(scope.get("root_path", "")) or "/"
        limit, route = body_limit_for(path)
        declared = _declared_length(scope)
        if declared is not None:
            # The server holds the client to its declared length.
            if declared > limit:
                await _refuse(
                    scope, send, route, limit, f"The request body is {declared} bytes", started
                )
                return
            await self.app(scope, receive, send)
            return

        # A chunked body: Django parses forms only with a Content-Length, so the body is
        # gathered here (spooled to disk past FILE_UPLOAD_MAX_MEMORY_SIZE), up to the limit.
        with tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE) as body:
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                size += len(message.get("body", b""))
                if size > limit:
                    await _refuse(
                        scope, send, route, limit, f"The request body passed {limit} bytes", started
                    )
                    return
                body.write(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            body.seek(0)
            headers = [*scope.get("headers", []), (b"content-length", str(size).encode())]

            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if replayed:
                    return await receive()  # what follows the body: the client's disconnect
                chunk = body.read(REPLAY_CHUNK_BYTES)
                replayed = body.tell() >= size
                return {"type": "http.request", "body": chunk, "more_body": not replayed}

            await self.app({**scope, "headers": headers}, replay, send)


async def _refuse(
    scope: Scope, send: Send, route: str, limit: int, what: str, started: float
) -> None:
    request_id = uuid.uuid4().hex
    body = json.dumps(
        {
            "error": {
                "code": "upload_too_large",
                "message": f"{what}; at most {limit} bytes are accepted here.",
                "limit_bytes": limit,
            }
        }
    ).encode()
    method = scope.get("method", "")
    REQUEST_LATENCY.labels(route, method, "413").observe(time.perf_counter() - started)
    logger.info(
        "%s %s 413 refused: body over %d bytes",
        method,
        route,
        limit,
        extra={"request_id": request_id, "method": method, "route": route, "status": 413},
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                # The rest of the body is never read, so the connection cannot be reused.
                (b"connection", b"close"),
                (b"x-request-id", request_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
