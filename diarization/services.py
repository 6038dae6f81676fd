"""Batch diarization jobs: intake, dispatch to a node, the node's work, degraded completion."""

from __future__ import annotations

import io
import json
import logging
import random
import uuid
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import Count
from django.utils import timezone
from redis.exceptions import RedisError

from audit.services import record_event
from diarization.engine import (
    DiarizationOptions,
    EnrolledGallery,
    as_result,
    diarize,
)
from diarization.models import DiarizationJob, JobStatus, WebhookState
from diarization.segmentation import get_speech_detector
from diarization.webhooks import check_webhook_url
from enrollment.audio import AudioRejected, DecodedAudio, decode_audio
from enrollment.auth import ApiPrincipal
from enrollment.blobs import BlobStoreError, get_blob_store, sha256_hex
from enrollment.errors import ServiceError, UploadTooLarge
from enrollment.models import EnrollmentStatus, Scope, Speaker, Tenant
from enrollment.services import MULTIPART_OVERHEAD_BYTES
from nodes import registry
from nodes.models import Node
from nodes.runtime import NodeRuntime, node_queue
from operations import rate_limits

if TYPE_CHECKING:
    from diarization.streaming import StreamDiarizer

logger = logging.getLogger(__name__)

RUN_TASK = "diarization.tasks.run_job"
DEGRADE_TASK = "diarization.tasks.complete_without_node"
WEBHOOK_TASK = "diarization.tasks.deliver_webhook"
UNFINISHED = (JobStatus.PENDING, JobStatus.RUNNING)


class AudioUnusable(ServiceError):
    status_code = 422
    code = "audio_unusable"


class JobNotFinished(ServiceError):
    status_code = 409
    code = "job_not_finished"


class JobFailed(ServiceError):
    status_code = 409
    code = "job_failed"


class BlobStoreUnavailable(ServiceError):
    status_code = 503
    code = "blob_store_unavailable"


@dataclass(frozen=True)
class JobRequest:
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None
    identify: bool = True
    threshold: float | None = None
    exclusive: bool = False
    confidence: bool = False
    webhook: str = ""
    request_id: str = ""


def identification_threshold(tenant: Tenant, requested: float | None) -> float:
    if requested is not None:
        return requested
    if tenant.identification_threshold is not None:
        return tenant.identification_threshold
    return float(settings.DIARIZE_IDENTIFICATION_THRESHOLD)


def service_tuning() -> dict[str, Any]:
    """The engine's settings that are the service's, not the request's."""
    return {
        "min_label_s": settings.DIARIZE_MIN_LABEL_S,
        "affinity_pruning": settings.DIARIZE_AFFINITY_PRUNING,
        "merge_threshold": settings.DIARIZE_MERGE_THRESHOLD,
        "shared_match_margin": settings.DIARIZE_SHARED_MATCH_MARGIN,
    }


def options_for(job: DiarizationJob) -> DiarizationOptions:
    return DiarizationOptions(**job.options, **service_tuning())


def estimated_time_s(duration_s: float) -> int:
    return max(1, int(round(duration_s * settings.DIARIZE_ESTIMATED_RTF + 1.0)))


# --- intake (API side) -------------------------------------------------------------------


def diarize_body_limit() -> int:
    """The largest diarization request: the audio at its limit, plus the form."""
    return settings.DIARIZE_MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD_BYTES


def submit_job(principal: ApiPrincipal, request: JobRequest, audio: UploadedFile) -> DiarizationJob:
    """Checks the audio, stores it, records the job and, on commit, sends it to a node.

    Nothing is kept when a step before the commit fails: the blob is removed if the row
    cannot be written. Once committed, the job is kept even if the message cannot leave
    (the periodic recovery sends it again).
    """
    if audio.size is not None and audio.size > settings.DIARIZE_MAX_UPLOAD_BYTES:
        raise UploadTooLarge(
            f"The audio is {audio.size} bytes; at most {settings.DIARIZE_MAX_UPLOAD_BYTES} "
            "bytes are accepted.",
            details={"limit_bytes": settings.DIARIZE_MAX_UPLOAD_BYTES},
        )
    if request.webhook:
        check_webhook_url(request.webhook)
    data = audio.read()
    decoded = _decode(data)
    tenant = principal.tenant
    options = DiarizationOptions(
        num_speakers=request.num_speakers,
        min_speakers=request.min_speakers,
        max_speakers=request.max_speakers,
        identify=request.identify,
        threshold=identification_threshold(tenant, request.threshold),
        exclusive=request.exclusive,
        confidence=request.confidence,
    )
    job_id = uuid.uuid4()
    key = f"diarize/{tenant.id}/{job_id}/audio"
    store = get_blob_store()
    try:
        stored = store.put(key, data)
    except BlobStoreError as exc:
        raise BlobStoreUnavailable(
            "The blob store is unavailable; nothing was stored. Try again later."
        ) from exc
    try:
        with transaction.atomic():
            job = DiarizationJob.objects.create(
                id=job_id,
                tenant=tenant,
                created_by_key=principal.api_key,
                request_id=request.request_id,
                options=_job_options(options),
                audio_blob_key=key,
                audio_sha256=stored.sha256,
                audio_size_bytes=stored.size_bytes,
                audio_duration_s=round(decoded.duration_s, 3),
                estimated_time_s=estimated_time_s(decoded.duration_s),
                webhook_url=request.webhook,
                webhook_state=WebhookState.PENDING if request.webhook else WebhookState.NONE,
            )
            dispatch(job)
    except BaseException:
        _delete_audio_quietly(key)
        raise
    return job


def _job_options(options: DiarizationOptions) -> dict[str, Any]:
    kept = asdict(options)
    for tuned in service_tuning():
        kept.pop(tuned)
    return kept


def _decode(data: bytes) -> DecodedAudio:
    # Checked and measured only: the node decodes it again, so the API keeps no samples.
    try:
        return decode_audio(
            io.BytesIO(data), max_duration_s=settings.DIARIZE_MAX_DURATION_S, keep_samples=False
        )
    except AudioRejected as rejected:
        raise AudioUnusable(
            rejected.message,
            details={"reason": rejected.code, "measured": rejected.measured},
        ) from rejected


def _delete_audio_quietly(key: str) -> None:
    try:
        get_blob_store().delete_all_versions(key)
    except BlobStoreError:
        logger.exception("could not remove the audio of an abandoned diarization job (%s)", key)


def dispatch(job: DiarizationJob) -> None:
    """Sends the job's next attempt to the least busy live node, or completes it without one.

    Must run inside a transaction: the message leaves only when the attempt is committed.
    After DIARIZE_MAX_ATTEMPTS attempts (a job that keeps killing nodes) it completes
    without labels.
    """
    candidates = registry.candidate_node_ids()
    if job.attempt >= settings.DIARIZE_MAX_ATTEMPTS:
        candidates = []
    job.attempt += 1
    job.node_id = _least_busy(candidates) if candidates else ""
    job.dispatched_at = timezone.now()
    job.status = JobStatus.PENDING
    job.save(update_fields=["attempt", "node_id", "dispatched_at", "status"])
    reason = "no_node_online" if job.attempt == 1 else "node_failed"
    job_id, attempt, node_id = str(job.id), job.attempt, job.node_id
    # Robust: a broker failure after the commit must not undo the committed job; the periodic
    # recovery sends the message again.
    transaction.on_commit(lambda: _send(job_id, attempt, node_id, reason), robust=True)


def _send(job_id: str, attempt: int, node_id: str, reason: str) -> None:
    from config.celery import app

    if node_id:
        app.send_task(RUN_TASK, args=[job_id, attempt], queue=node_queue(node_id))
    else:
        app.send_task(DEGRADE_TASK, args=[job_id, attempt, reason])


def hand_to_orchestrator(job_id: str, attempt: int) -> None:
    """The node gave up on the job: the orchestrator completes it without labels."""
    _send(job_id, attempt, "", "node_failed")


def _least_busy(candidates: list[str]) -> str:
    busy = dict(
        DiarizationJob.objects.filter(status__in=UNFINISHED, node_id__in=candidates)
        .values_list("node_id")
        .annotate(n=Count("id"))
        .values_list("node_id", "n")
    )
    fewest = min(busy.get(n, 0) for n in candidates)
    return random.choice([n for n in candidates if busy.get(n, 0) == fewest])


@dataclass(frozen=True)
class Recovery:
    redispatched: list[str]
    resent: list[str]
    webhooks: list[str]


def recover_stalled_jobs() -> Recovery:
    """The periodic safety net: nothing accepted is lost.

    - a job whose node stopped heartbeating (for DIARIZE_NODE_GRACE_S) gets a new attempt on
      another node, or completes without labels;
    - a job still pending DIARIZE_REQUEUE_AFTER_S after its dispatch (its message was lost)
      has the same attempt sent again (a duplicate is ignored by attempt number);
    - a job running far longer than its estimate (a hung node) gets a new attempt;
    - a finished job whose webhook was never tried has it sent.
    """
    now = timezone.now()
    candidates = registry.candidate_node_ids()
    gone = set(
        Node.objects.filter(
            last_seen_at__lte=now - timedelta(seconds=settings.DIARIZE_NODE_GRACE_S)
        ).values_list("node_id", flat=True)
    ) - set(candidates)
    stuck = {
        (job_id, attempt): node_id
        for job_id, attempt, node_id, started_at, estimate in DiarizationJob.objects.filter(
            status=JobStatus.RUNNING
        ).values_list("id", "attempt", "node_id", "started_at", "estimated_time_s")
        if started_at is not None
        and now - started_at > timedelta(seconds=10 * estimate + settings.DIARIZE_REQUEUE_AFTER_S)
    }
    orphaned = DiarizationJob.objects.filter(status__in=UNFINISHED, node_id__in=gone)
    redispatched = []
    for job_id, attempt in [*orphaned.values_list("id", "attempt"), *stuck]:
        with transaction.atomic():
            job = (
                DiarizationJob.objects.select_for_update()
                .filter(id=job_id, attempt=attempt, status__in=UNFINISHED)
                .first()
            )
            if job is None:
                continue
            if job.node_id in gone:
                code, message = "node_lost", f"Node {job.node_id} stopped during the job"
            else:
                code, message = "node_timeout", f"Node {job.node_id or 'orchestrator'} overran"
            logger.warning("diarization %s: %s, re-dispatching", job.id, message)
            job.warnings = [*job.warnings, _warning(code, f"{message}; it was sent again.")]
            job.save(update_fields=["warnings"])
            dispatch(job)
            redispatched.append(str(job.id))
    lost = DiarizationJob.objects.filter(
        status=JobStatus.PENDING,
        dispatched_at__lte=now - timedelta(seconds=settings.DIARIZE_REQUEUE_AFTER_S),
    ).exclude(node_id__in=gone)
    resent = []
    for job_id, attempt, node_id in lost.values_list("id", "attempt", "node_id"):
        DiarizationJob.objects.filter(id=job_id, attempt=attempt).update(dispatched_at=now)
        _send(str(job_id), attempt, node_id, "no_node_online" if attempt == 1 else "node_failed")
        resent.append(str(job_id))
    unsent = DiarizationJob.objects.filter(
        webhook_state=WebhookState.PENDING,
        webhook_attempts=0,
        completed_at__lte=now - timedelta(seconds=settings.DIARIZE_REQUEUE_AFTER_S),
    ).values_list("id", flat=True)
    webhooks = [str(job_id) for job_id in unsent]
    for webhook_job in webhooks:
        _send_webhook(webhook_job)
    return Recovery(redispatched, resent, webhooks)


# --- the work (node side, and the orchestrator's degraded path) ----------------------------


class StaleAttempt(Exception):
    """The job finished or was given to another node meanwhile."""


def run_job_here(runtime: NodeRuntime, job_id: str, attempt: int) -> str:
    """Diarizes the job's audio on this node, labelled from this node's gallery.

    Idempotent: a redelivered or superseded attempt does nothing.
    """
    started = DiarizationJob.objects.filter(
        id=job_id, attempt=attempt, status__in=UNFINISHED
    ).update(status=JobStatus.RUNNING, started_at=timezone.now())
    if not started:
        return "skipped"
    job = DiarizationJob.objects.select_related("tenant").get(id=job_id)
    audio = _load_audio(job)
    options = options_for(job)
    detector = get_speech_detector()
    regions, overlap = detector.regions(audio.samples)
    gallery = _gallery_for(runtime, str(job.tenant_id))
    result = diarize(audio.samples, regions, runtime.engine, gallery, options, overlap=overlap)
    # The node's gallery may still hold a speaker erased a moment ago: check the matches
    # against the tombstones, evict the erased ones, and match again without every speaker
    # that is not ready. (_complete checks once more, under the speakers' row locks.)
    excluded: set[str] = set()
    while not_ready := _not_ready(result.labelled_speaker_ids(options.min_label_s)):
        from nodes.services import evict_here

        for speaker_id in _erased(not_ready):
            evict_here(runtime, speaker_id)
        excluded.update(not_ready)
        result.identify(_gallery_for(runtime, str(job.tenant_id)).without(excluded), options)
    matched = result.labelled_speaker_ids(options.min_label_s)
    names = dict(Speaker.objects.filter(id__in=matched).values_list("id", "display_name"))
    body = as_result(
        result,
        options,
        {str(k): v for k, v in names.items()},
        extra={
            "node_id": runtime.node_id,
            "model": {
                "embedding_model_id": runtime.engine.model_id,
                "embedding_model_version": runtime.engine.model_version,
                "voice_activity": detector.model_id,
                "gallery_size": len(gallery),
            },
        },
    )
    _complete(job, attempt, body, matched=matched, actor=runtime.node_id)
    return "succeeded"


def complete_without_node(job_id: str, attempt: int, reason: str) -> str:
    """Completes the job with speech segments but no speaker labels, and says why.

    Used when no node is online or the node failed: the caller still gets a result.
    """
    job = (
        DiarizationJob.objects.select_related("tenant")
        .filter(id=job_id, attempt=attempt, status__in=UNFINISHED)
        .first()
    )
    if job is None:
        return "skipped"
    messages = {
        "no_node_online": "No pyannote node was online; speech segments are returned "
        "without speaker labels.",
        "node_failed": "Diarization failed on the node; speech segments are returned "
        "without speaker labels.",
    }
    try:
        audio = _load_audio(job)
    except NodeJobError as exc:
        if not exc.permanent:
            raise  # the task retries a blob store outage
        _fail(job, attempt, exc.code, exc.message)
        return "failed"
    regions, _ = get_speech_detector().regions(audio.samples)
    segments = [
        {
            "start": round(start / 16_000, 3),
            "end": round(end / 16_000, 3),
            "speaker_label": None,
            "confidence": None,
            "unlabelled_reason": "diarization_unavailable",
        }
        for start, end in regions
    ]
    warning = _warning("diarization_unavailable", messages.get(reason, reason))
    body = {
        "duration": round(audio.duration_s, 3),
        "segments": segments,
        "speakers": [],
        "warnings": [warning],
        "node_id": None,
    }
    _complete(job, attempt, body, matched=[], actor="orchestrator")
    return "succeeded"


class NodeJobError(Exception):
    def __init__(self, code: str, message: str, *, permanent: bool):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.permanent = permanent


def _load_audio(job: DiarizationJob) -> DecodedAudio:
    try:
        data = get_blob_store().get(job.audio_blob_key)
    except BlobStoreError as exc:
        raise NodeJobError("blob_unavailable", str(exc), permanent=False) from exc
    if sha256_hex(data) != job.audio_sha256:
        raise NodeJobError(
            "audio_hash_mismatch", "the stored audio changed after intake", permanent=True
        )
    try:
        return decode_audio(io.BytesIO(data), max_duration_s=settings.DIARIZE_MAX_DURATION_S)
    except AudioRejected as exc:
        raise NodeJobError(exc.code, exc.message, permanent=True) from exc


def _gallery_for(runtime: NodeRuntime, tenant_id: str) -> EnrolledGallery:
    return runtime.gallery.matrix_for(tenant_id, runtime.engine.model_id)


def _not_ready(speaker_ids: list[str]) -> set[str]:
    if not speaker_ids:
        return set()
    ready = Speaker.objects.filter(id__in=speaker_ids, enrollment_status=EnrollmentStatus.READY)
    return set(speaker_ids) - {str(s) for s in ready.values_list("id", flat=True)}


def _erased(speaker_ids: set[str]) -> set[str]:
    """Of these, the erased ones (tombstoned, or gone): a node must not keep holding them."""
    kept = Speaker.objects.filter(id__in=speaker_ids).exclude(
        enrollment_status=EnrollmentStatus.EVICTED
    )
    return speaker_ids - {str(s) for s in kept.values_list("id", flat=True)}


class SpeakerErasedMeanwhile(Exception):
    """A matched speaker was erased while the job ran; the task runs the job again."""


def _warning(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def _complete(
    job: DiarizationJob, attempt: int, body: dict[str, Any], *, matched: list[str], actor: str
) -> None:
    now = timezone.now()
    warnings = [*job.warnings, *body.get("warnings", [])]
    body["warnings"] = warnings
    with transaction.atomic():
        # The same row locks an erasure takes: it is either fully before (and the job runs
        # again without that speaker) or fully after this result is written.
        live = Speaker.objects.select_for_update().filter(
            id__in=matched, enrollment_status=EnrollmentStatus.READY
        )
        if len(live) != len(matched):
            raise SpeakerErasedMeanwhile(str(job.id))
        done = DiarizationJob.objects.filter(
            id=job.id, attempt=attempt, status__in=UNFINISHED
        ).update(status=JobStatus.SUCCEEDED, result=body, warnings=warnings, completed_at=now)
        if not done:
            raise StaleAttempt(str(job.id))
        if matched:
            # Retention counts from the last use of a voiceprint.
            Speaker.objects.filter(id__in=matched).update(last_used_at=now)
        record_event(
            "diarization.completed",
            actor=f"node:{actor}" if actor != "orchestrator" else actor,
            tenant_id=str(job.tenant_id),
            details={
                "job_id": str(job.id),
                "matched_speaker_ids": matched,
                "diarized": all(w["code"] != "diarization_unavailable" for w in warnings),
            },
        )
        transaction.on_commit(lambda: _after_finish(str(job.id)), robust=True)


def _fail(job: DiarizationJob, attempt: int, code: str, message: str) -> None:
    with transaction.atomic():
        done = DiarizationJob.objects.filter(
            id=job.id, attempt=attempt, status__in=UNFINISHED
        ).update(
            status=JobStatus.FAILED,
            error={"code": code, "message": message},
            completed_at=timezone.now(),
        )
        if done:
            record_event(
                "diarization.failed",
                actor="orchestrator",
                tenant_id=str(job.tenant_id),
                details={"job_id": str(job.id), "error": {"code": code, "message": message}},
            )
            transaction.on_commit(lambda: _after_finish(str(job.id)), robust=True)


def _after_finish(job_id: str) -> None:
    """The audio is not kept once the job is done; the webhook is told."""
    job = DiarizationJob.objects.get(id=job_id)
    if not settings.DIARIZE_KEEP_AUDIO and job.audio_deleted_at is None:
        try:
            get_blob_store().delete_all_versions(job.audio_blob_key)
            DiarizationJob.objects.filter(id=job_id).update(audio_deleted_at=timezone.now())
        except BlobStoreError:
            logger.exception("diarization %s: could not delete its audio yet", job_id)
    if job.webhook_state == WebhookState.PENDING:
        _send_webhook(job_id)


def _send_webhook(job_id: str) -> None:
    from config.celery import app

    app.send_task(WEBHOOK_TASK, args=[job_id])


def delete_finished_audio() -> int:
    """Deletes the audio of finished jobs that an earlier attempt could not delete."""
    if settings.DIARIZE_KEEP_AUDIO:
        return 0
    deleted = 0
    for job_id, key in DiarizationJob.objects.filter(
        status__in=[JobStatus.SUCCEEDED, JobStatus.FAILED], audio_deleted_at__isnull=True
    ).values_list("id", "audio_blob_key"):
        try:
            get_blob_store().delete_all_versions(key)
        except BlobStoreError:
            continue
        DiarizationJob.objects.filter(id=job_id).update(audio_deleted_at=timezone.now())
        deleted += 1
    return deleted


# --- webhooks (orchestrator side) -----------------------------------------------------------


class WebhookRetry(Exception):
    def __init__(self, countdown_s: float, reason: str):
        super().__init__(reason)
        self.countdown_s = countdown_s


def deliver_webhook(job_id: str) -> str:
    """POSTs the finished job to its webhook, once it succeeds; raises WebhookRetry to back off."""
    from diarization import webhooks
    from diarization.selectors import job_body
    from enrollment.services import webhook_secret

    job = DiarizationJob.objects.select_related("tenant").filter(id=job_id).first()
    if job is None or job.webhook_state != WebhookState.PENDING or not job.is_finished:
        return "skipped"
    body = json.dumps(job_body(job), separators=(",", ":"), default=str).encode()
    attempts = job.webhook_attempts + 1
    DiarizationJob.objects.filter(id=job_id).update(webhook_attempts=attempts)
    try:
        webhooks.post(job.webhook_url, body, webhook_secret(job.tenant), str(job.id))
    except (webhooks.DeliveryFailed, webhooks.WebhookNotAllowed) as exc:
        reason = str(exc)[:1000]
        if attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
            DiarizationJob.objects.filter(id=job_id).update(
                webhook_state=WebhookState.FAILED, webhook_last_error=reason
            )
            logger.warning("diarization %s: webhook given up after %d attempts", job_id, attempts)
            return "failed"
        DiarizationJob.objects.filter(id=job_id).update(webhook_last_error=reason)
        backoff = settings.WEBHOOK_BACKOFF_S * 2 ** (attempts - 1)
        raise WebhookRetry(min(settings.WEBHOOK_MAX_BACKOFF_S, backoff), reason) from exc
    DiarizationJob.objects.filter(id=job_id).update(
        webhook_state=WebhookState.DELIVERED,
        webhook_delivered_at=timezone.now(),
        webhook_last_error="",
    )
    return "delivered"


# --- streaming (API side) ---------------------------------------------------------------------


# How long a session's slot outlives its last renewal (the consumer renews it every few
# seconds): the slots of an API process that died lapse after this.
STREAM_SLOT_LEASE_S = 30


def _stream_slots(principal: ApiPrincipal) -> str:
    return f"streams:{principal.tenant.id}"


def _take_stream_slot(principal: ApiPrincipal, session_id: str) -> None:
    """Takes one of the tenant's STREAM_MAX_SESSIONS_PER_TENANT session slots."""
    from diarization.streaming import StreamError

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
    and the key holds scaiecho:diarize."""
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
    from silero_vad import load_silero_vad

    from diarization.selectors import stream_gallery
    from diarization.streaming import StreamDiarizer, StreamSettings
    from nodes.engine import get_engine

    label = diarize_requested and principal.has_scope(Scope.DIARIZE.value)
    engine = get_engine()
    gallery, names = (
        stream_gallery(principal.tenant, engine.model_id, engine.model_version)
        if label
        else (None, {})
    )
    tuning = StreamSettings(
        end_of_turn_ms=settings.STREAM_END_OF_TURN_MS,
        max_turn_s=settings.STREAM_MAX_TURN_S,
        cluster_threshold=settings.STREAM_CLUSTER_THRESHOLD,
        threshold=identification_threshold(principal.tenant, None),
        min_label_s=settings.DIARIZE_MIN_LABEL_S,
    )
    diarizer = StreamDiarizer(
        engine,
        load_silero_vad(),
        tuning,
        gallery=gallery,
        display_names=names,
        label_speakers=label,
        is_live=speaker_is_live,
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
