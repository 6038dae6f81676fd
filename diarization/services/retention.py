"""Result retention: a finished job's result, and its audio if it was kept, are deleted
DIARIZATION_RESULT_RETENTION_DAYS after the job completed (the orchestrator's beat runs it).

The job row stays, with its status, timestamps and ``result_expired_at``, as the record that
the job ran; ``GET diarize/{job}`` and its downloads then answer 410 ``result_expired``, and a
webhook not delivered by then is dropped (``webhook_state`` ``expired``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from audit.services import record_event
from common.blobs import BlobStoreError, get_blob_store
from common.errors import ServiceError
from diarization.models import DiarizationJob, JobStatus, WebhookState

logger = logging.getLogger(__name__)

FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED)
# Jobs expired per transaction: the row locks of one sweep stay short.
BATCH = 500


class ResultExpired(ServiceError):
    status_code = 410
    code = "result_expired"


@dataclass(frozen=True)
class Expiry:
    expired: list[str]
    audio_deleted: list[str]


def check_result_kept(job: DiarizationJob) -> None:
    """Raises ResultExpired (410) once retention deleted the job's result."""
    if job.result_expired_at is None:
        return
    raise ResultExpired(
        f"The job's result was deleted after {settings.DIARIZATION_RESULT_RETENTION_DAYS} days "
        "(DIARIZATION_RESULT_RETENTION_DAYS).",
        details={
            "status": job.status,
            "completed_at": job.completed_at.isoformat() if job.completed_at else None,
            "result_expired_at": job.result_expired_at.isoformat(),
        },
    )


def expire_results(now: datetime | None = None) -> Expiry:
    """Deletes the results of jobs completed more than DIARIZATION_RESULT_RETENTION_DAYS ago,
    drops their pending webhooks, and deletes their audio where it was kept.

    Idempotent; audio the blob store could not delete is tried again by the next run.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.DIARIZATION_RESULT_RETENTION_DAYS)
    expired: list[str] = []
    while batch := _expire_batch(cutoff, now):
        expired.extend(batch)
    return Expiry(expired, _delete_expired_audio(now))


def _expire_batch(cutoff: datetime, now: datetime) -> list[str]:
    with transaction.atomic():
        due = list(
            DiarizationJob.objects.select_for_update(skip_locked=True)
            .filter(status__in=FINISHED, completed_at__lte=cutoff, result_expired_at__isnull=True)
            .order_by("completed_at")
            .values_list("id", "tenant_id")[:BATCH]
        )
        if not due:
            return []
        DiarizationJob.objects.filter(id__in=[job_id for job_id, _ in due]).update(
            result=None,
            result_expired_at=now,
            webhook_state=Case(
                When(webhook_state=WebhookState.PENDING, then=Value(WebhookState.EXPIRED)),
                default=F("webhook_state"),
            ),
        )
        by_tenant: dict[str, list[str]] = {}
        for job_id, owner in due:
            by_tenant.setdefault(str(owner), []).append(str(job_id))
        for tenant_key, job_ids in by_tenant.items():
            record_event(
                "diarization.results_expired",
                actor="system:retention",
                tenant_id=tenant_key,
                details={
                    "job_ids": job_ids,
                    "retention_days": settings.DIARIZATION_RESULT_RETENTION_DAYS,
                },
            )
    return [str(job_id) for job_id, _ in due]


def _delete_expired_audio(now: datetime) -> list[str]:
    """Every version of the audio that expired jobs still keep (DIARIZE_KEEP_AUDIO)."""
    deleted = []
    for job_id, key in DiarizationJob.objects.filter(
        result_expired_at__isnull=False, audio_deleted_at__isnull=True
    ).values_list("id", "audio_blob_key"):
        try:
            get_blob_store().delete_all_versions(key)
        except BlobStoreError:
            logger.exception("diarization %s: could not delete its expired audio yet", job_id)
            continue
        DiarizationJob.objects.filter(id=job_id).update(audio_deleted_at=now)
        deleted.append(str(job_id))
    return deleted
