"""A job's end, on its node or on the orchestrator: its audio loaded and checked, its result
or failure written once (a superseded attempt writes nothing), then its audio deleted and its
webhook queued."""

from __future__ import annotations

import io
import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import record_event
from common.audio import AudioRejected, DecodedAudio, decode_audio
from common.blobs import BlobStoreError, get_blob_store, sha256_hex
from diarization.models import DiarizationJob, JobStatus, WebhookState
from diarization.services import tuning, webhook_delivery
from enrollment.models import EnrollmentStatus, Speaker

logger = logging.getLogger(__name__)

UNFINISHED = (JobStatus.PENDING, JobStatus.RUNNING)


class StaleAttempt(Exception):
    """The job finished or was given to another node meanwhile."""


class SpeakerErasedMeanwhile(Exception):
    """A matched speaker was erased while the job ran; the task runs the job again."""


class NodeJobError(Exception):
    def __init__(self, code: str, message: str, *, permanent: bool):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.permanent = permanent


def load_audio(job: DiarizationJob) -> DecodedAudio:
    """The job's audio, decoded under the limits the intake could only check against the
    header; the duration measured replaces the declared one (and the estimate with it).

    Audio that cannot be used is a permanent NodeJobError whose code says why
    (``audio_undecodable``, ``audio_too_long``, ``audio_too_costly``, ...).
    """
    try:
        data = get_blob_store().get(job.audio_blob_key)
    except BlobStoreError as exc:
        raise NodeJobError("blob_unavailable", str(exc), permanent=False) from exc
    if sha256_hex(data) != job.audio_sha256:
        raise NodeJobError(
            "audio_hash_mismatch", "the stored audio changed after intake", permanent=True
        )
    try:
        audio = decode_audio(
            io.BytesIO(data),
            max_duration_s=settings.DIARIZE_MAX_DURATION_S,
            max_input_samples=settings.DIARIZE_MAX_INPUT_SAMPLES,
        )
    except AudioRejected as exc:
        raise NodeJobError(exc.code, exc.message, permanent=True) from exc
    measured_s = round(audio.duration_s, 3)
    DiarizationJob.objects.filter(id=job.id, status__in=UNFINISHED).update(
        audio_duration_s=measured_s, estimated_time_s=tuning.estimated_time_s(measured_s)
    )
    return audio


def complete(
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


def fail(
    job: DiarizationJob, attempt: int, code: str, message: str, *, actor: str = "orchestrator"
) -> None:
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
                actor=f"node:{actor}" if actor != "orchestrator" else actor,
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
        webhook_delivery.queue_webhook(job_id)
