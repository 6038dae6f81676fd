"""The streaming WebSocket route: ``/v1/modules/scaiecho/stream``.

Protocol (seed section 4): the client authenticates with ``Authorization: Bearer <key>`` on
the upgrade request or, where it cannot set headers, with a first text frame
``{"type": "auth", "token": "<key>"}``; sends ``{"type": "open", "language_hint", "media_type",
"diarize"}``; gets ``{"type": "ready", "backend_used", ...}``; pushes binary audio; receives
``{"type": "delta", "start", "end", "text", "speaker_label"}`` as turns are decided; sends
``{"type": "close"}`` to flush the last turn and gets ``{"type": "closed"}``. Errors are a
``{"type": "error", "code", "message"}`` frame followed by a close with a 4xxx code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

from channels.db import DatabaseSyncToAsync
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import DatabaseError
from redis.exceptions import RedisError

from common.client_address import client_address_of_scope
from diarization.services import streams
from diarization.streaming import PcmDecoder, StreamDiarizer, StreamError
from tenancy.auth import (
    ApiPrincipal,
    AuthenticationThrottled,
    FailedAuthentications,
    resolve_api_key,
)
from tenancy.permissions import STREAM, allows

logger = logging.getLogger(__name__)

CLOSE_CODES = {
    "unauthenticated": 4401,
    "invalid_api_key": 4401,
    "key_revoked": 4401,
    "missing_scope": 4403,
    "protocol_error": 4400,
    "unsupported_media_type": 4415,
    "malformed_audio": 4400,
    "session_too_long": 4413,
    "frame_too_large": 4413,
    "handshake_timeout": 4408,
    "idle_timeout": 4408,
    "rate_limited": 4429,
    "too_many_sessions": 4429,
    # 1013: "try again later"; the registry's Redis did not answer.
    "backend_unavailable": 1013,
    "internal_error": 1011,
}


REDIS_DOWN = ("backend_unavailable", "The service's Redis is unavailable; retry later.")
DATABASE_DOWN = (
    "backend_unavailable",
    "The service's database did not answer while checking the API key; retry later.",
)
# Well inside streams.STREAM_SLOT_LEASE_S, so that a live session never loses its slot.
SLOT_RENEWAL_S = 10.0


def _in_thread(func: Any) -> Any:
    # Audio work runs off the event loop, one pool thread per call, with Django's connection
    # housekeeping around it (DatabaseSyncToAsync closes stale connections).
    return DatabaseSyncToAsync(func, thread_sensitive=False)


def _principal_for(raw_key: str) -> ApiPrincipal | None:
    key = resolve_api_key(raw_key)
    if key is None:
        return None
    return ApiPrincipal(api_key=key, tenant=key.tenant, scopes=frozenset(key.scopes))


class StreamConsumer(AsyncWebsocketConsumer):
    principal: ApiPrincipal | None = None
    diarizer: StreamDiarizer | None = None
    decoder: PcmDecoder | None = None
    # Whether the open session labels speakers, which needs scaiecho:diarize as long as it runs.
    labelling = False

    async def connect(self) -> None:
        await self.accept()
        self.session_id = uuid.uuid4().hex
        self.last_frame_at = time.monotonic()
        self.client_address = client_address_of_scope(self.scope)
        # Sessions that never authenticate, never open or fall silent are closed, so that
        # idle sockets cannot pile up; open ones have their key checked again.
        self.watchdog = asyncio.create_task(self._watch())
        headers = dict(self.scope.get("headers", []))
        header = headers.get(b"authorization", b"").decode("latin-1")
        try:
            # An address already cut off is told so before it sends a key.
            await _in_thread(FailedAuthentications.of("", self.client_address).check)()
            if header:
                scheme, _, raw_key = header.partition(" ")
                if scheme.lower() != "bearer" or not raw_key.strip():
                    await self._fail("invalid_api_key", "Authorization must be 'Bearer <api key>'.")
                    return
                await self._authenticate(raw_key.strip())
        except AuthenticationThrottled as throttled:
            await self._fail("rate_limited", throttled.message)
        except RedisError:
            logger.exception("stream session %s: Redis unavailable", self.session_id)
            await self._fail(*REDIS_DOWN)

    async def _authenticate(self, raw_key: str) -> bool:
        """Raises AuthenticationThrottled while the key's prefix or the address is cut off."""
        failures = FailedAuthentications.of(raw_key, self.client_address)
        await _in_thread(failures.check)()
        principal = await _in_thread(_principal_for)(raw_key)
        if principal is None:
            await _in_thread(failures.count)()
            await self._fail("invalid_api_key", "Invalid or revoked API key.")
            return False
        if not allows(principal, STREAM):
            await self._fail("missing_scope", "This API key lacks the scope scaiecho:transcribe.")
            return False
        self.principal = principal
        return True

    async def _watch(self) -> None:
        opened_by = time.monotonic() + settings.STREAM_HANDSHAKE_TIMEOUT_S
        slot_renewed_at = key_checked_at = time.monotonic()
        while True:
            await asyncio.sleep(
                min(1.0, settings.STREAM_HANDSHAKE_TIMEOUT_S / 2, settings.STREAM_KEY_RECHECK_S)
            )
            now = time.monotonic()
            if self.principal is not None and now - key_checked_at >= (
                settings.STREAM_KEY_RECHECK_S
            ):
                key_checked_at = now
                if not await self._recheck_key():
                    return
            if self.diarizer is not None and now - slot_renewed_at > SLOT_RENEWAL_S:
                slot_renewed_at = now
                try:
                    await _in_thread(streams.renew_stream_slot)(self.principal, self.session_id)
                except RedisError:
                    # A Redis blip does not end a running session; the next renewal retries.
                    logger.warning("stream session %s: slot renewal failed", self.session_id)
            if self.diarizer is None and now > opened_by:
                await self._fail(
                    "handshake_timeout",
                    f"Authenticate and open within {settings.STREAM_HANDSHAKE_TIMEOUT_S:.0f} s.",
                )
                return
            if self.diarizer is not None and now - self.last_frame_at > (
                settings.STREAM_IDLE_TIMEOUT_S
            ):
                await self._fail(
                    "idle_timeout", f"No frame for {settings.STREAM_IDLE_TIMEOUT_S:.0f} s."
                )
                return

    async def _recheck_key(self) -> bool:
        """False (the session closed) once the key was revoked or lost a scope it uses."""
        assert self.principal is not None
        try:
            self.principal = await _in_thread(streams.recheck_key)(self.principal, self.labelling)
        except StreamError as exc:
            await self._fail(exc.code, exc.message)
            return False
        except DatabaseError:
            # A key that cannot be checked is not trusted any longer.
            logger.exception("stream session %s: key recheck failed", self.session_id)
            await self._fail(*DATABASE_DOWN)
            return False
        return True

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.last_frame_at = time.monotonic()
        try:
            if bytes_data is not None:
                await self._audio(bytes_data)
            elif text_data is not None:
                await self._control(text_data)
        except StreamError as exc:
            await self._fail(exc.code, exc.message)
        except AuthenticationThrottled as throttled:
            await self._fail("rate_limited", throttled.message)
        except RedisError:
            logger.exception("stream session %s: Redis unavailable", self.session_id)
            await self._fail(*REDIS_DOWN)
        except Exception:
            logger.exception("stream session %s failed", getattr(self, "session_id", "?"))
            await self._fail("internal_error", "The session failed; no further deltas.")

    async def _control(self, text: str) -> None:
        try:
            frame = json.loads(text)
        except ValueError as exc:
            raise StreamError("protocol_error", "Text frames must be JSON objects.") from exc
        kind = frame.get("type") if isinstance(frame, dict) else None
        if kind == "auth":
            if self.principal is not None:
                raise StreamError("protocol_error", "Already authenticated.")
            token = frame.get("token")
            if not isinstance(token, str) or not token:
                raise StreamError("unauthenticated", "The auth frame needs a 'token'.")
            await self._authenticate(token)
            return
        if self.principal is None:
            raise StreamError(
                "unauthenticated",
                'Send \'Authorization: Bearer <api key>\' or a first {"type": "auth"} frame.',
            )
        if kind == "open":
            await self._open(frame)
        elif kind == "close":
            await self._close_session()
        else:
            raise StreamError("protocol_error", f"Unknown frame type {kind!r}.")

    async def _open(self, frame: dict[str, Any]) -> None:
        if self.diarizer is not None:
            raise StreamError("protocol_error", "The session is already open.")
        media_type = frame.get("media_type", "audio/wav")
        if not isinstance(media_type, str):
            raise StreamError("protocol_error", "media_type must be a string.")
        self.decoder = PcmDecoder(media_type)
        requested = bool(frame.get("diarize", False))
        assert self.principal is not None
        self.diarizer, labelled = await _in_thread(streams.open_stream)(
            self.principal, requested, self.session_id
        )
        self.labelling = labelled
        ready: dict[str, Any] = {
            "type": "ready",
            "backend_used": settings.STREAM_BACKEND_NAME,
            "session_id": self.session_id,
            "diarize": labelled,
        }
        if requested and not labelled:
            ready["warnings"] = [
                {
                    "code": "diarize_not_permitted",
                    "message": "This API key lacks scaiecho:diarize: deltas carry no labels.",
                }
            ]
        await self.send(text_data=json.dumps(ready))

    async def _audio(self, data: bytes) -> None:
        if self.diarizer is None or self.decoder is None:
            raise StreamError("protocol_error", "Send an open frame before audio.")
        if len(data) > settings.STREAM_MAX_FRAME_BYTES:
            raise StreamError(
                "frame_too_large",
                f"Binary frames carry at most {settings.STREAM_MAX_FRAME_BYTES} bytes.",
            )
        samples = await _in_thread(self.decoder.decode)(data)
        if self.diarizer.received_s + len(samples) / 16_000 > settings.STREAM_MAX_SESSION_S:
            raise StreamError(
                "session_too_long",
                f"A session carries at most {settings.STREAM_MAX_SESSION_S:.0f} s of audio.",
            )
        deltas = await _in_thread(self.diarizer.feed)(samples)
        for delta in deltas:
            await self.send(text_data=json.dumps(delta.message()))

    async def _close_session(self) -> None:
        self._stop_watching()
        diarizer, received_s = self.diarizer, 0.0
        if diarizer is not None and self.decoder is not None:
            tail = await _in_thread(self.decoder.finish)()
            deltas = await _in_thread(diarizer.feed)(tail) if len(tail) else []
            for delta in deltas + await _in_thread(diarizer.flush)():
                await self.send(text_data=json.dumps(delta.message()))
            received_s = diarizer.received_s
        await self._end_session()
        await self.send(
            text_data=json.dumps({"type": "closed", "audio_seconds": round(received_s, 3)})
        )
        await self.close(code=1000)

    async def disconnect(self, code: int) -> None:
        self._stop_watching()
        await self._end_session()

    async def _end_session(self) -> None:
        """Records the session (and the last use of every voiceprint it matched) once."""
        diarizer, self.diarizer = self.diarizer, None
        if diarizer is not None and self.principal is not None:
            await _in_thread(streams.close_stream)(
                self.principal, self.session_id, diarizer.matched, diarizer.received_s
            )

    async def _fail(self, code: str, message: str) -> None:
        self._stop_watching()
        await self.send(text_data=json.dumps({"type": "error", "code": code, "message": message}))
        try:
            await self._end_session()
        finally:
            # Closed even when the session's record fails (the database that failed a recheck);
            # the reason repeats the error's code, for clients that only see the close.
            await self.close(code=CLOSE_CODES.get(code, 4400), reason=code)

    def _stop_watching(self) -> None:
        watchdog = getattr(self, "watchdog", None)
        if watchdog is not None and watchdog is not asyncio.current_task():
            watchdog.cancel()
