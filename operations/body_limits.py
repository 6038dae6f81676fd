"""Request bodies refused as they arrive, before the service reads more than a route accepts.

Django's ASGI handler spools a whole request body before any view runs, so a limit checked in
a view comes only after an oversized body was read to the end. This ASGI middleware sits in
front of Django: a declared length over the route's limit is answered 413 without reading the
body; a chunked body, and any body whose length was not declared, is cut off as soon as it
grows past the limit. Upload routes declare their limit for POST, PUT and PATCH; every other
request gets REQUEST_MAX_BODY_BYTES.
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

from common.metrics import REQUEST_LATENCY

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


UPLOAD_METHODS = frozenset({"POST", "PUT", "PATCH"})


def body_limit_for(path: str, method: str) -> tuple[int, str]:
    """The largest body accepted for ``method`` on ``path``, and the route pattern."""
    try:
        match = resolve(path)
    except Resolver404:
        return settings.REQUEST_MAX_BODY_BYTES, "unmatched"
    view_class = getattr(match.func, "view_class", None)
    declared = getattr(view_class, "max_body_bytes", None) or getattr(
        match.func, "max_body_bytes", None
    )
    if declared is None or method not in UPLOAD_METHODS:
        return settings.REQUEST_MAX_BODY_BYTES, match.route
    return declared(), match.route


def _header(scope: Scope, wanted: bytes) -> bytes | None:
    for name, value in scope.get("headers", []):
        if name == wanted:
            return bytes(value)
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
        limit, route = body_limit_for(path, scope.get("method", "GET"))

        def refuse(what: str) -> Awaitable[None]:
            return _refuse(scope, send, route, limit, what, started)

        if _header(scope, b"transfer-encoding") is not None:
            # Chunked framing wins over any Content-Length sent with it (as servers frame it).
            await self._gather_chunked(scope, receive, send, limit, refuse)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await refuse(f"The request body is {int(declared)} bytes")
            return

        received = 0
        exceeded = False

        async def counted_receive() -> Message:
            # The server holds a client to its declared length; this is the limit's own guard.
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Django takes a disconnect while reading the body for an aborted request
                    # and answers nothing; the 413 is sent below instead.
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, counted_receive, send)
        if exceeded:
            await refuse(f"The request body passed {limit} bytes")

    async def _gather_chunked(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        limit: int,
        refuse: Callable[[str], Awaitable[None]],
    ) -> None:
        # Django parses forms only with a Content-Length, so the body is gathered here (spooled
        # to disk past FILE_UPLOAD_MAX_MEMORY_SIZE), up to the limit, then handed on with one.
        with tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE) as body:
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                size += len(message.get("body", b""))
                if size > limit:
                    await refuse(f"The request body passed {limit} bytes")
                    return
                body.write(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            body.seek(0)
            headers = [
                (name, value)
                for name, value in scope.get("headers", [])
                if name not in (b"content-length", b"transfer-encoding")
            ]
            headers.append((b"content-length", str(size).encode()))
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
