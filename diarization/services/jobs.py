"""Batch diarization jobs on the orchestrator's side: intake, dispatch to a node, the periodic
recovery, and the completion without a node (speech segments, no speaker labels)."""

from __future__ import annotations

import logging
import random
import uuid
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import DatabaseError, transaction
from django.db.models import Count
from django.utils import timezone

from common.audio import AudioHeader, AudioRejected, probe_audio
from common.blobs import BlobStoreError, get_blob_store
from common.errors import BlobStoreUnavailable, ServiceError, UploadTooLarge
from common.tasks import send_task
from diarization.engine import DiarizationOptions
from diarization.models import DiarizationJob, JobStatus, WebhookState
from diarization.segmentation import get_speech_detector
from diarization.services import completion, tuning, webhook_delivery
from diarization.services.completion import UNFINISHED, NodeJobError
from diarization.webhooks import check_webhook_url
from nodes import pools, registry
from nodes.models import Node
from nodes.runtime import node_queue
from storage import services as blob_intents
from storage.models import BlobPurpose
from tenancy.auth import ApiPrincipal

logger = logging.getLogger(__name__)

RUN_TASK = "diarization.tasks.run_job"
DEGRADE_TASK = "diarization.tasks.complete_without_node"


class AudioUnusable(ServiceError):
    status_code = 422
    code = "audio_unusable"


class JobNotFinished(ServiceError):
    status_code = 409
    code = "job_not_finished"


class JobFailed(ServiceError):
    status_code = 409
    code = "job_failed"


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


# --- intake (API side) -------------------------------------------------------------------


def submit_job(principal: ApiPrincipal, request: JobRequest, audio: UploadedFile) -> DiarizationJob:
    """Checks the audio's header, streams it to the blob store, records the job and, on
    commit, sends it to a node.

    Nothing here decodes the audio or holds it in memory: the node decodes it and enforces
    the limits on what it really holds (a header may lie or declare no duration). Nothing is
    kept when a step before the commit fails: the blob is removed if the row cannot be
    written. Once committed, the job is kept even if the message cannot leave (the periodic
    recovery sends it again).
    """
    if audio.size is not None and audio.size > settings.DIARIZE_MAX_UPLOAD_BYTES:
        raise UploadTooLarge(
            f"The audio is {audio.size} bytes; at most {settings.DIARIZE_MAX_UPLOAD_BYTES} "
            "bytes are accepted.",
            details={"limit_bytes": settings.DIARIZE_MAX_UPLOAD_BYTES},
        )
    if request.webhook:
        check_webhook_url(request.webhook)
    header = _probe(audio)
    tenant = principal.tenant
    options = DiarizationOptions(
        num_speakers=request.num_speakers,
        min_speakers=request.min_speakers,
        max_speakers=request.max_speakers,
        identify=request.identify,
        threshold=tuning.identification_threshold(tenant, request.threshold),
        exclusive=request.exclusive,
        confidence=request.confidence,
    )
    job_id = uuid.uuid4()
    key = f"diarize/{tenant.id}/{job_id}/audio"
    store = get_blob_store()
    audio.seek(0)
    # Committed before the write: an upload whose job row never commits (a crash) is swept.
    blob_intents.register(key, BlobPurpose.DIARIZATION_UPLOAD)
    try:
        stored = store.put_file(key, audio)
    except BlobStoreError as exc:
        _delete_audio_quietly(key)  # a write that failed half-way may still leave an object
        raise BlobStoreUnavailable(
            "The blob store is unavailable; nothing was stored. Try again later."
        ) from exc
    # Until the node has decoded it, the job goes by what the header declares; with no
    # declared duration, the estimate is for the longest recording the limits let through.
    expected_s = header.duration_s
    if expected_s is None:
        expected_s = tuning.longest_accepted_s(header.sample_rate, header.channels)
    try:
        with transaction.atomic():
            blob_intents.claim([key])
            job = DiarizationJob.objects.create(
                id=job_id,
                tenant=tenant,
                created_by_key=principal.api_key,
                request_id=request.request_id,
                options=_job_options(options),
                audio_blob_key=key,
                audio_sha256=stored.sha256,
                audio_size_bytes=stored.size_bytes,
                audio_duration_s=round(header.duration_s or 0.0, 3),
                estimated_time_s=tuning.estimated_time_s(expected_s),
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
    for tuned in tuning.service_tuning():
        kept.pop(tuned)
    return kept


def _probe(audio: UploadedFile) -> AudioHeader:
    # The header only: a file whose header already declares too much is refused before
    # anything is stored.
    try:
        return probe_audio(
            audio,
            max_duration_s=settings.DIARIZE_MAX_DURATION_S,
            max_input_samples=settings.DIARIZE_MAX_INPUT_SAMPLES,
        )
    except AudioRejected as rejected:
        raise AudioUnusable(
            rejected.message,
            details={
                "reason": rejected.code,
                "measured": rejected.measured,
                "threshold": rejected.threshold,
            },
        ) from rejected


def _delete_audio_quietly(key: str) -> None:
    """Removes the upload of a job that was never recorded; one that cannot be removed keeps
    its intent, and the orphan sweeper removes it later."""
    try:
        get_blob_store().delete_all_versions(key)
    except BlobStoreError:
        logger.exception("could not remove the audio of an abandoned diarization job (%s)", key)
        return
    try:
        blob_intents.settle([key])
    except DatabaseError:
        logger.warning("audio %s removed; its intent stays for the sweeper", key)


# --- dispatch ------------------------------------------------------------------------------


def dispatch(job: DiarizationJob) -> None:
    """Sends the job's next attempt to the least busy live node of the tenant's pool (the
    nodes that hold its speakers), or completes it without one.

    Must run inside a transaction: the message leaves only when the attempt is committed.
    After DIARIZE_MAX_ATTEMPTS attempts (a job that keeps killing nodes) it completes
    without labels.
    """
    candidates = pools.tenant_candidate_node_ids(job.tenant_id)
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
    if node_id:
        send_task(RUN_TASK, args=[job_id, attempt], queue=node_queue(node_id))
    else:
        send_task(DEGRADE_TASK, args=[job_id, attempt, reason])


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


# --- recovery (periodic, orchestrator side) ---------------------------------------------


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
        webhook_delivery.queue_webhook(webhook_job)
    return Recovery(redispatched, resent, webhooks)


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


# --- the orchestrator's degraded path -------------------------------------------------------


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
        audio = completion.load_audio(job)
    except NodeJobError as exc:
        if not exc.permanent:
            raise  # the task retries a blob store outage
        completion.fail(job, attempt, exc.code, exc.message)
        return "failed"
    regions = get_speech_detector().detect(audio.samples).speech
    segments = [
        {
            "start": round(start / 16_000, 3),
            "end": round(end / 16_000, 3),
            "speaker_label": None,
            "confidence": None,
            "reason": "diarization_unavailable",
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
    completion.complete(job, attempt, body, matched=[], actor="orchestrator")
    return "succeeded"


def _warning(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}
