"""Streaming sessions on the API's side: a session's diarizer, its slot among the tenant's
STREAM_MAX_SESSIONS_PER_TENANT, and its record once closed."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from redis.exceptions import RedisError
from silero_vad import load_silero_vad

from audit.services import record_event
from common import rate_limits
from diarization.segmentation import get_overlap_detector
from diarization.selectors import stream_gallery
from diarization.services.tuning import identification_threshold, scoring_rules
from diarization.streaming import StreamDiarizer, StreamError, StreamSettings
from enrollment.models import EnrollmentStatus, Speaker
from tenancy.auth import ApiPrincipal, current_principal
from tenancy.permissions import LABEL_SPEAKERS, STREAM, allows
from voice.engines import get_engine

logger = logging.getLogger(__name__)

# How long a session's slot outlives its last renewal (the consumer renews it every few
# seconds): the slots of an API process that died lapse after this.
STREAM_SLOT_LEASE_S = 30


def _stream_slots(principal: ApiPrincipal) -> str:
    return f"streams:{principal.tenant.id}"


def _take_stream_slot(principal: ApiPrincipal, session_id: str) -> None:
    """Takes one of the tenant's STREAM_MAX_SESSIONS_PER_TENANT session slots."""
    try:
        rate_limits.take_slot(
            _stream_slots(principal),
            session_id,
            settings.STREAM_MAX_SESSIONS_PER_TENANT,
            STREAM_SLOT_LEASE_S,
        )
    except rate_limits.SlotsTaken as taken:
        raise StreamError(
            "too_many_sessions",
            f"This tenant already has {taken.limit} open streaming sessions "
            "(STREAM_MAX_SESSIONS_PER_TENANT); close one or retry later.",
        ) from taken


def open_stream(
    principal: ApiPrincipal, diarize_requested: bool, session_id: str
) -> tuple[StreamDiarizer, bool]:
    """A session's diarizer, in one of the tenant's session slots; labels only when asked for
    and the key may label speakers (scaiecho:diarize)."""
    _take_stream_slot(principal, session_id)
    try:
        return _stream_diarizer(principal, diarize_requested)
    except BaseException:
        _release_stream_slot(principal, session_id)
        raise


def renew_stream_slot(principal: ApiPrincipal, session_id: str) -> None:
    """Keeps an open session's slot; one lost meanwhile (Redis restarted empty) is not taken
    again, so a renewal racing the session's end can never bring its slot back."""
    if settings.STREAM_MAX_SESSIONS_PER_TENANT <= 0:
        return
    if not rate_limits.renew_slot(_stream_slots(principal), session_id, STREAM_SLOT_LEASE_S):
        logger.warning("stream session %s: its slot was lost; it runs on uncounted", session_id)


def recheck_key(principal: ApiPrincipal, labelling: bool) -> ApiPrincipal:
    """The session's key as it stands now; a StreamError once it was revoked or lost
    scaiecho:transcribe, or, for a session that labels speakers, scaiecho:diarize (labels are
    not silently dropped mid-session: the client reopens without them)."""
    current = current_principal(principal)
    if current is None:
        raise StreamError("key_revoked", "The API key was revoked; the session is closed.")
    if not allows(current, STREAM):
        raise StreamError(
            "missing_scope", "The API key no longer holds scaiecho:transcribe; session closed."
        )
    if labelling and not allows(current, LABEL_SPEAKERS):
        raise StreamError(
            "missing_scope",
            "The API key no longer holds scaiecho:diarize, which this session's labels need; "
            "open a session without diarize, or with a key that holds it.",
        )
    return current


def _release_stream_slot(principal: ApiPrincipal, session_id: str) -> None:
    if settings.STREAM_MAX_SESSIONS_PER_TENANT <= 0:
        return
    try:
        rate_limits.release_slot(_stream_slots(principal), session_id)
    except RedisError:
        logger.warning("stream session %s: slot not released; its lease lapses", session_id)


def _stream_diarizer(
    principal: ApiPrincipal, diarize_requested: bool
) -> tuple[StreamDiarizer, bool]:
    label = diarize_requested and allows(principal, LABEL_SPEAKERS)
    engine = get_engine()
    gallery, names = (
        stream_gallery(principal.tenant, engine.model_id, engine.model_version)
        if label
        else (None, {})
    )
    tuning = StreamSettings(
        end_of_turn_ms=settings.STREAM_END_OF_TURN_MS,
        cluster_threshold=settings.STREAM_CLUSTER_THRESHOLD,
        threshold=identification_threshold(principal.tenant, None),
        min_label_s=settings.DIARIZE_MIN_LABEL_S,
        step_s=settings.STREAM_STEP_S,
        max_latency_s=settings.STREAM_MAX_LATENCY_S,
        shared_match_margin=settings.DIARIZE_SHARED_MATCH_MARGIN,
        rules=scoring_rules(),
    )
    diarizer = StreamDiarizer(
        engine,
        load_silero_vad(),
        tuning,
        gallery=gallery,
        display_names=names,
        label_speakers=label,
        is_live=speaker_is_live,
        overlap=get_overlap_detector() if label else None,
    )
    return diarizer, label


def speaker_is_live(speaker_id: str) -> bool:
    """Checked before every enrolled label: an erasure takes effect mid-session."""
    return Speaker.objects.filter(id=speaker_id, enrollment_status=EnrollmentStatus.READY).exists()


def close_stream(
    principal: ApiPrincipal, session_id: str, matched: set[str], received_s: float
) -> None:
    """Records the session (and its matches' last use), then frees its slot."""
    now = timezone.now()
    try:
        with transaction.atomic():
            if matched:
                Speaker.objects.filter(id__in=matched, tenant=principal.tenant).update(
                    last_used_at=now
                )
            record_event(
                "stream.closed",
                actor=principal.actor,
                tenant_id=str(principal.tenant.id),
                details={"matched_speaker_ids": sorted(matched), "audio_s": round(received_s, 3)},
            )
    finally:
        _release_stream_slot(principal, session_id)
