"""Oversized request bodies are refused as they arrive, before the service reads them whole.

The ASGI application the service runs (``config.asgi.application``) is called directly with
uploads that announce their length and with chunked uploads that do not; one test sends a
chunked upload to a real uvicorn process over a socket.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import subprocess
import sys
import uuid

import pytest
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

from config.asgi import application
from consent.models import ConsentRecord
from enrollment.models import Speaker
from tests import live
from tests.factories import enrollment_form, make_key, make_tenant

ENROLL = "/v1/modules/scaiecho/speakers"
DIARIZE = "/v1/modules/scaiecho/diarize"
CONSOLE_ENROLL = "/console/speakers/new/"
CHUNK = 64 * 1024
FORM = (b"content-type", b"multipart/form-data; boundary=b")
CHUNKED = (b"transfer-encoding", b"chunked")


class Upload:
    """A request body handed to the application one chunk at a time, counting what it read."""

    def __init__(self, body: bytes | None = None, *, endless_bytes: int = 0):
        self.body = body
        self.endless_bytes = endless_bytes
        self.read = 0
        self.done = False

    async def receive(self) -> dict:
        if self.done:
            # As a server does: after the body, wait until the client goes away.
            await asyncio.Future()
        if self.body is not None:
            chunk = self.body[self.read : self.read + CHUNK]
            total = len(self.body)
        else:
            chunk, total = b"x" * CHUNK, self.endless_bytes
        self.read += len(chunk)
        self.done = self.read >= total
        return {"type": "http.request", "body": chunk, "more_body": not self.done}


def call(
    path: str, upload: Upload, headers: list[tuple[bytes, bytes]], method: str = "POST"
) -> tuple[int, dict, bytes]:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    asyncio.run(application(scope, upload.receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body


@pytest.fixture
def small_limits(settings):
    settings.ENROLLMENT_MAX_UPLOAD_BYTES = 100_000
    settings.DIARIZE_MAX_UPLOAD_BYTES = 100_000
    settings.REQUEST_MAX_BODY_BYTES = 50_000
    multipart = 1024 * 1024
    return {
        ENROLL: 2 * 100_000 + multipart,
        CONSOLE_ENROLL: 2 * 100_000 + multipart,
        DIARIZE: 100_000 + multipart,
        f"{ENROLL}/{uuid.uuid4()}/warm": 50_000,
    }


@pytest.mark.parametrize("route", [ENROLL, CONSOLE_ENROLL, DIARIZE, "warm"])
@pytest.mark.parametrize(
    "framing",
    [
        [CHUNKED],
        # Both: servers frame the body as chunked, so the small declared length means nothing.
        [(b"content-length", b"1"), CHUNKED],
        [],  # no length at all, as HTTP/2 allows
    ],
    ids=["chunked", "chunked-with-content-length", "undeclared"],
)
def test_a_body_of_undeclared_length_is_cut_off_at_the_routes_limit(small_limits, route, framing):
    path, limit = next((p, n) for p, n in small_limits.items() if route in p)
    upload = Upload(endless_bytes=500 * 1024 * 1024)
    status, headers, body = call(path, upload, [FORM, *framing])
    assert status == 413
    error = json.loads(body)["error"]
    assert error["code"] == "upload_too_large" and error["limit_bytes"] == limit
    assert headers[b"connection"] == b"close" and headers[b"x-request-id"]
    # Read no further than the chunk that crossed the limit.
    assert limit < upload.read <= limit + CHUNK


@pytest.mark.parametrize("route", [ENROLL, CONSOLE_ENROLL, DIARIZE])
def test_a_declared_length_over_the_limit_is_refused_unread(small_limits, route):
    limit = small_limits[route]
    upload = Upload(endless_bytes=limit + 1)
    status, _, body = call(
        route,
        upload,
        [
            (b"content-type", b"multipart/form-data; boundary=b"),
            (b"content-length", str(limit + 1).encode()),
        ],
    )
    assert status == 413 and json.loads(body)["error"]["limit_bytes"] == limit
    assert upload.read == 0


@pytest.mark.parametrize(
    "framing", [[CHUNKED], [(b"content-length", b"10000")], []], ids=["chunked", "declared", "none"]
)
def test_a_body_within_the_limit_reaches_the_view(small_limits, framing):
    # No key: the view itself answers, so the body was let through.
    status, _, body = call(ENROLL, Upload(b"x" * 10_000), [FORM, *framing])
    assert status == 401 and json.loads(body)["error"]["code"] == "unauthenticated"


def test_an_upload_routes_limit_is_for_uploads_only(small_limits):
    """A GET to the enrollment route takes no upload: the default limit applies."""
    upload = Upload(endless_bytes=10 * 1024 * 1024)
    status, _, body = call(ENROLL, upload, [CHUNKED], method="GET")
    assert status == 413 and json.loads(body)["error"]["limit_bytes"] == 50_000


def test_an_empty_chunked_body_reaches_the_view(small_limits):
    status, _, body = call(f"{ENROLL}/{uuid.uuid4()}/warm", Upload(b""), [CHUNKED])
    assert status == 401 and json.loads(body)["error"]["code"] == "unauthenticated"


def test_a_chunked_enrollment_within_the_limits_is_stored(live_db, loaded_models):
    key = make_key(make_tenant())[1]
    body = encode_multipart(BOUNDARY, enrollment_form())
    status, _, answer = call(
        ENROLL,
        Upload(body),
        [
            (b"content-type", MULTIPART_CONTENT.encode()),
            (b"authorization", f"Bearer {key}".encode()),
            CHUNKED,
        ],
    )
    assert status == 201, answer
    assert Speaker.objects.count() == 1 and ConsentRecord.objects.count() == 1


@pytest.mark.live
def test_uvicorn_answers_413_while_the_client_is_still_sending(live_db):
    """A client streams 200 MB chunked to a real server; the 413 arrives after about the
    limit, and the server never reads the rest."""
    port = live.free_port()
    env = {
        **os.environ,
        "DATABASE_URL": live.test_database_url(),
        "ENROLLMENT_MAX_UPLOAD_BYTES": "100000",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "config.asgi:application", "--port", str(port)],
        cwd=live.ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        live.wait_for(lambda: _listening(port), timeout_s=120, what="uvicorn")
        sent, answer = _stream_chunked(port, ENROLL, total_bytes=200 * 1024 * 1024)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"upload_too_large"' in answer
    # Kernel socket buffers hold a few MB more than the server read; nowhere near 200 MB.
    assert sent < 40 * 1024 * 1024


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _stream_chunked(port: int, path: str, total_bytes: int) -> tuple[int, bytes]:
    """Sends a chunked body until the server answers; returns bytes sent and the answer."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n\r\n".encode()
    )
    frame = f"{CHUNK:x}\r\n".encode() + b"x" * CHUNK + b"\r\n"
    sent, answer = 0, b""
    try:
        while sent < total_bytes and not select.select([sock], [], [], 0)[0]:
            sock.sendall(frame)
            sent += CHUNK
    except (BrokenPipeError, ConnectionResetError, TimeoutError):
        pass  # the server stopped reading; its answer may already wait in the receive buffer
    try:
        while b"upload_too_large" not in answer and (piece := sock.recv(65536)):
            answer += piece
    except (ConnectionResetError, TimeoutError):
        pass  # the server closed the connection; what it answered is in ``answer``
    finally:
        sock.close()
    return sent, answer
