"""The streaming WebSocket route, through the real ASGI application.

The consumer resolves keys, reads the gallery and records the session's end in pool threads,
so the data must be committed (``live_db``: wiped after each test, immutable tables included).
``channels.testing`` cannot be imported here (it needs daphne, which the project does not
install), so the socket is driven with asgiref's ``ApplicationCommunicator``, which is what
channels' ``WebsocketCommunicator`` is built on.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import pytest
from asgiref.testing import ApplicationCommunicator
from channels.db import database_sync_to_async
from django.utils import timezone

from audit.models import AuditEvent
from enrollment.models import EnrollmentStatus, Speaker
from tenancy.models import Scope, Tenant
from tests import audio
from tests.factories import make_key, make_tenant, store_voiceprint

PATH = "/v1/modules/scaiecho/stream"
TIMEOUT_S = 30
# What each speaker is enrolled with: at most 5 s of one voice (sample.rttm).
ENROLL_A = (10.6, 14.45)
ENROLL_B = (21.9, 26.9)
CONVERSATION = (10.6, 30.0)  # A, B, A, B, A
FRAME_BYTES = 3200  # 100 ms of 16 kHz 16-bit mono

pytestmark = pytest.mark.usefixtures("live_db")


@pytest.fixture(scope="module")
def application():
    from config.asgi import application

    return application


# --- the socket ------------------------------------------------------------------------------


class Socket:
    """One WebSocket connection to the application, as a client sees it."""

    def __init__(
        self,
        application: Any,
        headers: list[tuple[bytes, bytes]],
        client: tuple[str, int] | None = None,
    ):
        scope = {
            "type": "websocket",
            "path": PATH,
            "raw_path": PATH.encode(),
            "query_string": b"",
            "headers": headers,
            "subprotocols": [],
        }
        if client is not None:
            scope["client"] = client
        self.communicator = ApplicationCommunicator(application, scope)

    async def connect(self) -> None:
        await self.communicator.send_input({"type": "websocket.connect"})
        accepted = await self.communicator.receive_output(TIMEOUT_S)
        assert accepted["type"] == "websocket.accept", accepted

    async def send_json(self, frame: dict[str, Any]) -> None:
        await self.communicator.send_input({"type": "websocket.receive", "text": json.dumps(frame)})

    async def send_bytes(self, data: bytes) -> None:
        await self.communicator.send_input({"type": "websocket.receive", "bytes": data})

    async def receive(self) -> dict[str, Any]:
        message = await self.communicator.receive_output(TIMEOUT_S)
        assert message["type"] == "websocket.send", message
        return json.loads(message["text"])

    async def close_code(self) -> int:
        message = await self.communicator.receive_output(TIMEOUT_S)
        assert message["type"] == "websocket.close", message
        return int(message.get("code", 1000))

    async def disconnect(self) -> None:
        await self.communicator.send_input({"type": "websocket.disconnect", "code": 1000})
        await self.communicator.wait(TIMEOUT_S)


def bearer(raw_key: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {raw_key}".encode())]


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(scenario())


async def expect_error(socket: Socket, code: str, close_code: int) -> dict[str, Any]:
    frame = await socket.receive()
    assert frame["type"] == "error", frame
    assert frame["code"] == code, frame
    assert frame["message"]
    assert await socket.close_code() == close_code
    return frame


@dataclass
class Session:
    ready: dict[str, Any]
    deltas: list[dict[str, Any]] = field(default_factory=list)
    closed: dict[str, Any] | None = None
    close_code: int | None = None

    @property
    def labels(self) -> set[str | None]:
        return {d.get("speaker_label") for d in self.deltas}


def wav_frames(samples: np.ndarray) -> list[bytes]:
    """A WAV as a client streams it: the header in pieces, then the PCM 100 ms at a time."""
    data = audio.encode(samples)
    header_end = data.index(b"data") + 8
    return [data[:10], data[10:30], data[30:header_end]] + [
        data[i : i + FRAME_BYTES] for i in range(header_end, len(data), FRAME_BYTES)
    ]


async def stream_session(
    application: Any,
    raw_key: str,
    samples: np.ndarray,
    *,
    diarize: bool = True,
    during: Callable[[], Awaitable[None]] | None = None,
) -> Session:
    """Open, stream ``samples`` as a WAV, close; everything the server answered."""
    socket = Socket(application, bearer(raw_key))
    await socket.connect()
    await socket.send_json(
        {"type": "open", "language_hint": "en", "media_type": "audio/wav", "diarize": diarize}
    )
    session = Session(ready=await socket.receive())
    assert session.ready["type"] == "ready", session.ready
    if during is not None:
        await during()
    for frame in wav_frames(samples):
        await socket.send_bytes(frame)
    await socket.send_json({"type": "close"})
    while session.closed is None:
        frame = await socket.receive()
        if frame["type"] == "delta":
            session.deltas.append(frame)
        else:
            assert frame["type"] == "closed", frame
            session.closed = frame
    session.close_code = await socket.close_code()
    await socket.disconnect()
    return session


# --- enrolled speakers -------------------------------------------------------------------


@cache
def voiceprint(span: tuple[float, float]) -> tuple[float, ...]:
    from voice.engines import get_engine
    from voice.vad import get_vad, speech_only

    speech = audio.clip([span])
    vector, _ = get_engine().voiceprint(speech_only(speech, get_vad().speech_regions(speech)))
    return tuple(float(x) for x in vector)


def enrolled(
    tenant: Tenant,
    display_name: str,
    span: tuple[float, float],
    status: str = EnrollmentStatus.READY,
) -> Speaker:
    """A speaker as enrollment leaves it, with a voiceprint of the API's own engine."""
    from voice.engines import get_engine

    engine = get_engine()
    speaker = Speaker.objects.create(
        tenant=tenant,
        display_name=display_name,
        language_primary="en",
        enrollment_status=status,
        reference_blob_key=f"tenants/{tenant.id}/speakers/test/reference",
        reference_sha256="0" * 64,
        reference_size_bytes=1,
        reference_duration_s=span[1] - span[0],
        reference_speech_s=span[1] - span[0],
        embedding_model_id=engine.model_id,
        embedding_model_version=engine.model_version,
    )
    return store_voiceprint(speaker, voiceprint(span))


def conversation() -> np.ndarray:
    return audio.clip([CONVERSATION])


# --- authentication and the protocol ------------------------------------------------------


def test_header_auth_then_open_answers_ready(application, settings):
    tenant = make_tenant()
    _, raw_key = make_key(tenant)

    async def scenario():
        socket = Socket(application, bearer(raw_key))
        await socket.connect()
        await socket.send_json({"type": "open", "media_type": "audio/wav", "diarize": True})
        ready = await socket.receive()
        await socket.send_json({"type": "close"})
        closed = await socket.receive()
        code = await socket.close_code()
        await socket.disconnect()
        return ready, closed, code

    ready, closed, code = run(scenario)

    assert ready["type"] == "ready"
    assert ready["backend_used"] == settings.STREAM_BACKEND_NAME
    assert ready["diarize"] is True
    assert ready["session_id"]
    assert "warnings" not in ready
    assert closed == {"type": "closed", "audio_seconds": 0.0}
    assert code == 1000


def test_first_frame_auth_for_clients_that_cannot_set_headers(application):
    tenant = make_tenant()
    _, raw_key = make_key(tenant)

    async def scenario():
        socket = Socket(application, [])
        await socket.connect()
        await socket.send_json({"type": "auth", "token": raw_key})
        await socket.send_json({"type": "open", "media_type": "audio/pcm", "diarize": True})
        ready = await socket.receive()
        await socket.disconnect()
        return ready

    ready = run(scenario)

    assert ready["type"] == "ready"
    assert ready["diarize"] is True


@pytest.mark.parametrize(
    "how",
    ["unknown-key-header", "malformed-key-header", "basic-scheme", "revoked-key", "auth-frame"],
)
def test_a_bad_key_is_refused_with_4401(application, how):
    tenant = make_tenant()
    key, raw_key = make_key(tenant)
    forged = raw_key[:-4] + ("AAAA" if not raw_key.endswith("AAAA") else "BBBB")
    headers = {
        "unknown-key-header": bearer(forged),
        "malformed-key-header": bearer("not-a-key"),
        "basic-scheme": [(b"authorization", f"Basic {raw_key}".encode())],
        "revoked-key": bearer(raw_key),
        "auth-frame": [],
    }[how]
    if how == "revoked-key":
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])

    async def scenario():
        socket = Socket(application, headers)
        await socket.connect()
        if how == "auth-frame":
            await socket.send_json({"type": "auth", "token": forged})
        frame = await expect_error(socket, "invalid_api_key", 4401)
        await socket.disconnect()
        return frame

    frame = run(scenario)

    assert raw_key not in frame["message"]


@pytest.mark.parametrize("via", ["header", "auth-frame"])
def test_a_key_without_transcribe_is_refused_with_4403(application, via):
    tenant = make_tenant()
    _, raw_key = make_key(tenant, [Scope.DIARIZE.value, Scope.ENROLL.value])

    async def scenario():
        socket = Socket(application, bearer(raw_key) if via == "header" else [])
        await socket.connect()
        if via == "auth-frame":
            await socket.send_json({"type": "auth", "token": raw_key})
        frame = await expect_error(socket, "missing_scope", 4403)
        await socket.disconnect()
        return frame

    frame = run(scenario)

    assert "scaiecho:transcribe" in frame["message"]


def test_open_without_authentication_is_refused(application):
    async def scenario():
        socket = Socket(application, [])
        await socket.connect()
        await socket.send_json({"type": "open", "media_type": "audio/wav"})
        await expect_error(socket, "unauthenticated", 4401)
        await socket.disconnect()

    run(scenario)


def test_audio_before_open_is_a_protocol_error(application):
    tenant = make_tenant()
    _, raw_key = make_key(tenant)

    async def scenario():
        socket = Socket(application, bearer(raw_key))
        await socket.connect()
        await socket.send_bytes(b"\x00\x00" * 1600)
        await expect_error(socket, "protocol_error", 4400)
        await socket.disconnect()

    run(scenario)


@pytest.mark.parametrize(
    ("frame", "code", "close_code"),
    [
        ({"type": "open", "media_type": "audio/ogg"}, "unsupported_media_type", 4415),
        ({"type": "open", "media_type": "audio/pcm;rate=8000"}, "unsupported_media_type", 4415),
        ({"type": "dance"}, "protocol_error", 4400),
    ],
)
def test_bad_control_frames_are_refused(application, frame, code, close_code):
    tenant = make_tenant()
    _, raw_key = make_key(tenant)

    async def scenario():
        socket = Socket(application, bearer(raw_key))
        await socket.connect()
        await socket.send_json(frame)
        await expect_error(socket, code, close_code)
        await socket.disconnect()

    run(scenario)


@pytest.mark.parametrize(
    "second",
    [{"type": "open", "media_type": "audio/wav"}, {"type": "auth", "token": "se_x_y"}],
    ids=["open-twice", "auth-after-open"],
)
def test_a_repeated_open_or_auth_is_a_protocol_error(application, second):
    tenant = make_tenant()
    _, raw_key = make_key(tenant)

    async def scenario():
        socket = Socket(application, bearer(raw_key))
        await socket.connect()
        await socket.send_json({"type": "open", "media_type": "audio/wav"})
        assert (await socket.receive())["type"] == "ready"
        await socket.send_json(second)
        await expect_error(socket, "protocol_error", 4400)
        await socket.disconnect()

    run(scenario)


def test_a_stream_that_is_not_wav_is_malformed(application):
    tenant = make_tenant()
    _, raw_key = make_key(tenant)

    async def scenario():
        socket = Socket(application, bearer(raw_key))
        await socket.connect()
        await socket.send_json({"type": "open", "media_type": "audio/wav"})
        assert (await socket.receive())["type"] == "ready"
        await socket.send_bytes(audio.encode(audio.tone(0.5), "ogg"))
        await expect_error(socket, "malformed_audio", 4400)
        await socket.disconnect()

    run(scenario)


# --- sessions ------------------------------------------------------------------------------


def test_without_the_diarize_scope_deltas_carry_no_labels(application):
    tenant = make_tenant()
    enrolled(tenant, "Alice Example", ENROLL_A)
    _, raw_key = make_key(tenant, [Scope.TRANSCRIBE.value])

    session = run(lambda: stream_session(application, raw_key, conversation()))

    assert session.ready["diarize"] is False
    assert [w["code"] for w in session.ready["warnings"]] == ["diarize_not_permitted"]
    assert session.deltas
    for delta in session.deltas:
        assert "speaker_label" not in delta and "display_name" not in delta


def test_diarize_not_requested_gives_no_labels_and_no_warning(application):
    tenant = make_tenant()
    enrolled(tenant, "Alice Example", ENROLL_A)
    _, raw_key = make_key(tenant)

    session = run(lambda: stream_session(application, raw_key, conversation(), diarize=False))

    assert session.ready["diarize"] is False
    assert "warnings" not in session.ready
    assert session.deltas
    assert session.labels == {None}


def test_a_session_names_the_enrolled_speaker(application):
    tenant = make_tenant()
    alice = enrolled(tenant, "Alice Example", ENROLL_A)
    _, raw_key = make_key(tenant, [Scope.TRANSCRIBE.value, Scope.DIARIZE.value])

    session = run(lambda: stream_session(application, raw_key, conversation()))

    assert session.ready["diarize"] is True
    named = [d for d in session.deltas if d.get("speaker_label") == str(alice.id)]
    assert named
    assert all(d["display_name"] == "Alice Example" for d in named)
    for delta in session.deltas:
        assert delta["type"] == "delta" and delta["text"] == ""
        assert 0.0 <= delta["start"] < delta["end"]
    starts = [d["start"] for d in session.deltas]
    assert starts == sorted(starts)
    assert session.closed is not None and session.close_code == 1000


def test_both_enrolled_speakers_are_named_in_short_turns(application):
    # The sample's conversation has few pauses long enough to end a turn: the rolling buffer
    # splits it where the speaker changes.
    tenant = make_tenant()
    alice = enrolled(tenant, "Alice Example", ENROLL_A)
    bob = enrolled(tenant, "Bob Example", ENROLL_B)
    _, raw_key = make_key(tenant)

    session = run(lambda: stream_session(application, raw_key, conversation()))

    assert {str(alice.id), str(bob.id)} <= session.labels
    names = {d["speaker_label"]: d.get("display_name") for d in session.deltas}
    assert names[str(alice.id)] == "Alice Example"
    assert names[str(bob.id)] == "Bob Example"


def test_closed_reports_the_audio_received(application):
    tenant = make_tenant()
    _, raw_key = make_key(tenant)
    samples = conversation()

    session = run(lambda: stream_session(application, raw_key, samples))

    assert session.closed is not None
    assert session.closed["audio_seconds"] == pytest.approx(len(samples) / 16_000, abs=1e-3)
    assert max(d["end"] for d in session.deltas) <= len(samples) / 16_000


def test_another_tenants_speaker_is_never_named(application):
    ours, theirs = make_tenant(), make_tenant()
    bob = enrolled(ours, "Bob Example", ENROLL_B)
    alice = enrolled(theirs, "Alice Example", ENROLL_A)
    _, raw_key = make_key(ours)

    session = run(lambda: stream_session(application, raw_key, conversation()))

    assert session.deltas
    assert str(alice.id) not in session.labels
    assert all(d.get("display_name") != "Alice Example" for d in session.deltas)
    alice.refresh_from_db()
    assert alice.last_used_at is None
    assert bob.id  # Bob may be named: he is ours


def test_an_erased_speaker_is_never_named(application):
    tenant = make_tenant()
    alice = enrolled(tenant, "Alice Example", ENROLL_A, status=EnrollmentStatus.EVICTED)
    _, raw_key = make_key(tenant)

    session = run(lambda: stream_session(application, raw_key, conversation()))

    assert session.deltas
    assert str(alice.id) not in session.labels
    assert all(d.get("display_name") != "Alice Example" for d in session.deltas)
    alice.refresh_from_db()
    assert alice.last_used_at is None


def test_a_speaker_erased_during_the_session_is_no_longer_named(application):
    tenant = make_tenant()
    alice = enrolled(tenant, "Alice Example", ENROLL_A)
    _, raw_key = make_key(tenant)

    @database_sync_to_async
    def erase_alice() -> None:
        Speaker.objects.filter(id=alice.id).update(enrollment_status=EnrollmentStatus.EVICTED)

    session = run(lambda: stream_session(application, raw_key, conversation(), during=erase_alice))

    assert session.deltas
    assert str(alice.id) not in session.labels


def test_close_flushes_the_open_turn(application):
    tenant = make_tenant()
    alice = enrolled(tenant, "Alice Example", ENROLL_A)
    _, raw_key = make_key(tenant)
    # A speaks to the very last sample: no silence ends the turn, only the close does.
    speech = audio.clip([(18.6, 21.4)])

    session = run(lambda: stream_session(application, raw_key, speech))

    # Deltas come within the latency budget, so the turn arrives in pieces; the close sends
    # the last of them.
    assert session.deltas
    assert {d["speaker_label"] for d in session.deltas} == {str(alice.id)}
    for before, after in zip(session.deltas, session.deltas[1:], strict=False):
        assert after["start"] == before["end"]
    assert session.deltas[-1]["end"] == pytest.approx(len(speech) / 16_000, abs=0.04)
    assert session.closed is not None and session.closed["type"] == "closed"
    assert session.closed["audio_seconds"] == pytest.approx(len(speech) / 16_000, abs=0.04)
    assert session.close_code == 1000


def test_a_session_with_a_match_is_recorded(application):
    tenant = make_tenant()
    alice = enrolled(tenant, "Alice Example", ENROLL_A)
    key, raw_key = make_key(tenant)
    before = timezone.now()

    session = run(lambda: stream_session(application, raw_key, conversation()))

    assert str(alice.id) in session.labels
    alice.refresh_from_db()
    assert alice.last_used_at is not None and alice.last_used_at >= before
    event = AuditEvent.objects.get(action="stream.closed", tenant=tenant)
    assert event.actor == f"api-key:{key.prefix}"
    assert event.details["matched_speaker_ids"] == [str(alice.id)]
    assert event.details["audio_s"] == pytest.approx(CONVERSATION[1] - CONVERSATION[0], abs=0.05)


def test_a_session_without_a_match_leaves_speakers_unused(application):
    tenant = make_tenant()
    bob = enrolled(tenant, "Bob Example", ENROLL_B)
    _, raw_key = make_key(tenant)
    # A's turns alone, with a second of silence between them.
    speech = np.concatenate([audio.clip([ENROLL_A]), audio.silence(1.0)])

    session = run(lambda: stream_session(application, raw_key, speech, diarize=False))

    assert session.deltas
    bob.refresh_from_db()
    assert bob.last_used_at is None
    event = AuditEvent.objects.get(action="stream.closed", tenant=tenant)
    assert event.details["matched_speaker_ids"] == []


def test_a_dropped_connection_still_records_the_match(application):
    tenant = make_tenant()
    alice = enrolled(tenant, "Alice Example", ENROLL_A)
    _, raw_key = make_key(tenant)
    # A, then silence long enough to end the turn: a delta arrives before the client leaves.
    speech = np.concatenate([audio.clip([ENROLL_A]), audio.silence(1.0)])

    async def scenario():
        socket = Socket(application, bearer(raw_key))
        await socket.connect()
        await socket.send_json({"type": "open", "media_type": "audio/wav", "diarize": True})
        assert (await socket.receive())["type"] == "ready"
        for frame in wav_frames(speech):
            await socket.send_bytes(frame)
        delta = await socket.receive()
        await socket.disconnect()  # no close frame
        return delta

    delta = run(scenario)

    assert delta["speaker_label"] == str(alice.id)
    alice.refresh_from_db()
    assert alice.last_used_at is not None
    assert AuditEvent.objects.filter(action="stream.closed", tenant=tenant).count() == 1


def test_a_session_ended_by_an_error_still_records_its_matches(application, settings):
    """Labels already sent used the voiceprint: retention counts from that use."""
    settings.STREAM_MAX_SESSION_S = 8.0
    tenant = make_tenant()
    alice = enrolled(tenant, "Alice Example", ENROLL_A)
    _, raw_key = make_key(tenant)
    speech = np.concatenate([audio.clip([ENROLL_A]), audio.silence(1.0), audio.clip([ENROLL_A])])

    async def scenario():
        socket = Socket(application, bearer(raw_key))
        await socket.connect()
        await socket.send_json({"type": "open", "media_type": "audio/wav", "diarize": True})
        assert (await socket.receive())["type"] == "ready"
        for frame in wav_frames(speech):
            await socket.send_bytes(frame)
        deltas = []
        while (message := await socket.receive())["type"] == "delta":
            deltas.append(message)
        assert message["type"] == "error" and message["code"] == "session_too_long"
        assert await socket.close_code() == 4413
        await socket.disconnect()
        return deltas

    deltas = run(scenario)

    assert deltas and deltas[0]["speaker_label"] == str(alice.id)
    alice.refresh_from_db()
    assert alice.last_used_at is not None


def test_an_oversized_frame_is_refused(application, settings):
    settings.STREAM_MAX_FRAME_BYTES = 4096
    _, raw_key = make_key(make_tenant())

    async def scenario():
        socket = Socket(application, bearer(raw_key))
        await socket.connect()
        await socket.send_json({"type": "open", "media_type": "audio/pcm"})
        assert (await socket.receive())["type"] == "ready"
        await socket.send_bytes(b"\x00" * 4097)
        error = await expect_error(socket, "frame_too_large", 4413)
        await socket.disconnect()
        return error

    assert "4096" in run(scenario)["message"]


def test_a_session_that_never_authenticates_is_closed(application, settings):
    settings.STREAM_HANDSHAKE_TIMEOUT_S = 0.5

    async def scenario():
        socket = Socket(application, [])
        await socket.connect()
        error = await expect_error(socket, "handshake_timeout", 4408)
        await socket.disconnect()
        return error

    assert "open within" in run(scenario)["message"]


def test_a_silent_session_is_closed(application, settings):
    settings.STREAM_IDLE_TIMEOUT_S = 0.5
    _, raw_key = make_key(make_tenant())

    async def scenario():
        socket = Socket(application, bearer(raw_key))
        await socket.connect()
        await socket.send_json({"type": "open", "media_type": "audio/pcm"})
        assert (await socket.receive())["type"] == "ready"
        error = await expect_error(socket, "idle_timeout", 4408)
        await socket.disconnect()
        return error

    assert "No frame" in run(scenario)["message"]


def test_failed_stream_authentications_are_rate_limited(application, settings):
    settings.AUTH_FAILURE_LIMIT = 1

    async def attempt(key: str) -> dict[str, Any]:
        socket = Socket(application, bearer(key))
        await socket.connect()
        first = await socket.receive()
        await socket.close_code()
        await socket.disconnect()
        return first

    assert run(lambda: attempt("se_000000000000_wrong"))["code"] == "invalid_api_key"
    assert run(lambda: attempt("se_000000000000_wrong"))["code"] == "rate_limited"


# --- concurrent sessions ---------------------------------------------------------------------


async def opened(application: Any, raw_key: str) -> tuple[Socket, dict[str, Any]]:
    socket = Socket(application, bearer(raw_key))
    await socket.connect()
    await socket.send_json({"type": "open", "media_type": "audio/pcm"})
    return socket, await socket.receive()


def test_a_tenant_has_at_most_its_share_of_open_sessions(application, settings):
    settings.STREAM_MAX_SESSIONS_PER_TENANT = 2
    _, raw_key = make_key(make_tenant())
    _, other_key = make_key(make_tenant())

    async def scenario():
        first, first_ready = await opened(application, raw_key)
        second, second_ready = await opened(application, raw_key)
        third, refused = await opened(application, raw_key)
        refused_code = await third.close_code()
        await third.disconnect()
        other, other_ready = await opened(application, other_key)
        await first.send_json({"type": "close"})
        await first.receive()
        await first.close_code()
        await first.disconnect()
        again, again_ready = await opened(application, raw_key)
        for socket in (second, other, again):
            await socket.disconnect()
        return [first_ready, second_ready, other_ready, again_ready], refused, refused_code

    ready, refused, refused_code = run(scenario)

    assert [frame["type"] for frame in ready] == ["ready"] * 4
    assert refused["type"] == "error" and refused["code"] == "too_many_sessions"
    assert "STREAM_MAX_SESSIONS_PER_TENANT" in refused["message"]
    assert refused_code == 4429


def test_a_dropped_connection_frees_its_session_slot(application, settings):
    settings.STREAM_MAX_SESSIONS_PER_TENANT = 1
    _, raw_key = make_key(make_tenant())

    async def scenario():
        dropped, _ = await opened(application, raw_key)
        await dropped.disconnect()  # no close frame: the client just went away
        after, ready = await opened(application, raw_key)
        await after.disconnect()
        return ready

    assert run(scenario)["type"] == "ready"


def test_without_redis_a_session_is_refused_with_try_again_later(application, settings):
    from common.redis_client import redis_client
    from tests.live import free_port

    _, raw_key = make_key(make_tenant())
    shared_redis_url = settings.REDIS_URL
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    redis_client.cache_clear()

    async def scenario():
        socket = Socket(application, bearer(raw_key))
        await socket.connect()
        error = await expect_error(socket, "backend_unavailable", 1013)
        await socket.disconnect()
        return error

    try:
        assert "retry later" in run(scenario)["message"]
    finally:
        settings.REDIS_URL = shared_redis_url
        redis_client.cache_clear()


def test_a_session_is_recorded_even_when_its_slot_cannot_be_released(application, monkeypatch):
    from redis.exceptions import ConnectionError as RedisConnectionError

    from common import rate_limits

    _, raw_key = make_key(make_tenant())

    def redis_gone(name: str, holder: str) -> None:
        raise RedisConnectionError("connection refused")

    async def scenario():
        socket, ready = await opened(application, raw_key)
        monkeypatch.setattr(rate_limits, "release_slot", redis_gone)
        await socket.send_json({"type": "close"})
        closed = await socket.receive()
        await socket.close_code()
        await socket.disconnect()
        return ready, closed

    ready, closed = run(scenario)

    assert ready["type"] == "ready" and closed["type"] == "closed"
    assert AuditEvent.objects.filter(action="stream.closed").count() == 1


def test_an_open_session_keeps_its_slot_past_the_lease(application, settings, monkeypatch):
    """The watchdog renews the slot: a session open for longer than one lease still holds it
    (without renewals it would lapse after 2 s and let a second session in)."""
    from diarization import consumers
    from diarization.services import streams

    settings.STREAM_MAX_SESSIONS_PER_TENANT = 1
    monkeypatch.setattr(streams, "STREAM_SLOT_LEASE_S", 2)
    monkeypatch.setattr(consumers, "SLOT_RENEWAL_S", 0.3)
    _, raw_key = make_key(make_tenant())

    async def scenario():
        held, ready = await opened(application, raw_key)
        await asyncio.sleep(5.0)  # the watchdog wakes once a second
        second, refused = await opened(application, raw_key)
        if refused["type"] == "error":
            await second.close_code()
        await second.disconnect()
        await held.disconnect()
        return ready, refused

    ready, refused = run(scenario)

    assert ready["type"] == "ready"
    assert refused["code"] == "too_many_sessions"


# --- the key, checked again while the session runs ---------------------------------------------


async def close_message(socket: Socket) -> dict[str, Any]:
    message = await socket.communicator.receive_output(TIMEOUT_S)
    assert message["type"] == "websocket.close", message
    return message


def change_key(key: Any, **fields: Any) -> Callable[[], Awaitable[None]]:
    @database_sync_to_async
    def change() -> None:
        type(key).objects.filter(id=key.id).update(**fields)

    return change


@pytest.mark.parametrize(
    ("change", "code", "close_code"),
    [
        ({"revoked_at": timezone.now()}, "key_revoked", 4401),
        ({"scopes": [Scope.DIARIZE.value, Scope.ENROLL.value]}, "missing_scope", 4403),
    ],
    ids=["revoked", "transcribe-withdrawn"],
)
def test_an_open_session_ends_once_its_key_may_no_longer_stream(
    application, settings, change, code, close_code
):
    settings.STREAM_KEY_RECHECK_S = 0.2
    key, raw_key = make_key(make_tenant())

    async def scenario():
        socket, ready = await opened(application, raw_key)
        await change_key(key, **change)()
        error = await socket.receive()
        closed = await close_message(socket)
        await socket.disconnect()
        return ready, error, closed

    ready, error, closed = run(scenario)

    assert ready["type"] == "ready"
    assert error["type"] == "error" and error["code"] == code and error["message"]
    assert closed["code"] == close_code and closed["reason"] == code
    # The session is recorded as it ends, like any other.
    assert AuditEvent.objects.filter(action="stream.closed").count() == 1


def test_a_labelling_session_ends_once_its_key_loses_diarize(application, settings):
    settings.STREAM_KEY_RECHECK_S = 0.2
    key, raw_key = make_key(make_tenant(), [Scope.TRANSCRIBE.value, Scope.DIARIZE.value])

    async def scenario():
        socket = Socket(application, bearer(raw_key))
        await socket.connect()
        await socket.send_json({"type": "open", "media_type": "audio/pcm", "diarize": True})
        ready = await socket.receive()
        await change_key(key, scopes=[Scope.TRANSCRIBE.value])()
        error = await socket.receive()
        closed = await close_message(socket)
        await socket.disconnect()
        return ready, error, closed

    ready, error, closed = run(scenario)

    assert ready["diarize"] is True
    assert error["code"] == "missing_scope" and "scaiecho:diarize" in error["message"]
    assert closed["code"] == 4403


def test_a_session_without_labels_carries_on_when_its_key_loses_diarize(application, settings):
    settings.STREAM_KEY_RECHECK_S = 0.2
    key, raw_key = make_key(make_tenant(), [Scope.TRANSCRIBE.value, Scope.DIARIZE.value])

    async def scenario():
        socket = Socket(application, bearer(raw_key))
        await socket.connect()
        await socket.send_json({"type": "open", "media_type": "audio/pcm", "diarize": False})
        ready = await socket.receive()
        await change_key(key, scopes=[Scope.TRANSCRIBE.value])()
        await asyncio.sleep(2.0)  # several rechecks
        await socket.send_json({"type": "close"})
        closed = await socket.receive()
        code = await socket.close_code()
        await socket.disconnect()
        return ready, closed, code

    ready, closed, code = run(scenario)

    assert ready["diarize"] is False
    assert closed["type"] == "closed" and code == 1000


def test_a_key_revoked_before_open_ends_the_session_too(application, settings, monkeypatch):
    from diarization import consumers

    settings.STREAM_KEY_RECHECK_S = 0.2
    key, raw_key = make_key(make_tenant())
    authenticate = consumers._principal_for

    def revoked_right_after_authentication(raw: str) -> Any:
        # The handshake accepts the key; the revocation lands before the client sends "open".
        principal = authenticate(raw)
        type(key).objects.filter(id=key.id).update(revoked_at=timezone.now())
        return principal

    monkeypatch.setattr(consumers, "_principal_for", revoked_right_after_authentication)

    async def scenario():
        socket = Socket(application, bearer(raw_key))
        await socket.connect()
        frame = await expect_error(socket, "key_revoked", 4401)
        await socket.disconnect()
        return frame

    assert "revoked" in run(scenario)["message"]


def test_a_key_that_cannot_be_checked_ends_the_session(application, settings, monkeypatch):
    from django.db import OperationalError

    from diarization.services import streams

    settings.STREAM_KEY_RECHECK_S = 0.2
    _, raw_key = make_key(make_tenant())

    def database_gone(principal: Any) -> None:
        raise OperationalError("server closed the connection unexpectedly")

    async def scenario():
        socket, ready = await opened(application, raw_key)
        monkeypatch.setattr(streams, "current_principal", database_gone)
        error = await expect_error(socket, "backend_unavailable", 1013)
        await socket.disconnect()
        return error

    assert "retry later" in run(scenario)["message"]


def test_failed_stream_authentications_are_limited_per_key_and_per_forwarded_address(
    application, settings
):
    settings.AUTH_FAILURE_KEY_LIMIT = 1
    settings.AUTH_FAILURE_LIMIT = 2
    settings.TRUSTED_PROXY_HEADER = "X-Forwarded-For"
    _, good_key = make_key(make_tenant())

    async def attempt(key: str, client: str) -> dict[str, Any]:
        proxied = bearer(key) + [(b"x-forwarded-for", client.encode())]
        socket = Socket(application, proxied, client=("10.0.0.5", 40000))
        await socket.connect()
        # A refused key's error comes first, before the open is read.
        await socket.send_json({"type": "open", "media_type": "audio/pcm"})
        first = await socket.receive()
        await socket.disconnect()
        return first

    guess = "se_000000000000_wrong"
    assert run(lambda: attempt(guess, "198.51.100.1"))["code"] == "invalid_api_key"
    # That key's prefix is cut off, from any address.
    assert run(lambda: attempt(guess, "198.51.100.9"))["code"] == "rate_limited"
    assert run(lambda: attempt("se_111111111111_wrong", "198.51.100.1"))["code"] == (
        "invalid_api_key"
    )
    # The guesser's address is now cut off; its neighbour behind the same proxy is not.
    assert run(lambda: attempt(good_key, "198.51.100.1"))["code"] == "rate_limited"
    assert run(lambda: attempt(good_key, "198.51.100.2"))["type"] == "ready"
