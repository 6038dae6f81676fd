from __future__ import annotations

from typing import Any

import numpy as np

from diarization.models import DiarizationJob
from enrollment.models import EnrollmentStatus, Speaker
from tenancy.models import Tenant
from voice.gallery import EnrolledGallery


def job_for_tenant(tenant: Tenant, job_id: str) -> DiarizationJob | None:
    return DiarizationJob.objects.filter(tenant=tenant, id=job_id).first()


def job_body(job: DiarizationJob) -> dict[str, Any]:
    """A job as the API and the webhook show it."""
    body: dict[str, Any] = {
        "id": str(job.id),
        "status": job.status,
        "request_id": job.request_id or None,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "completed_at": job.completed_at.isoformat() if job.completed_at else None,
        "estimated_time": job.estimated_time_s,
        "audio_duration": job.audio_duration_s,
        "options": job.options,
        "node_id": job.node_id or None,
        "warnings": job.warnings,
    }
    if job.error:
        body["error"] = job.error
    if job.result is not None:
        body["result"] = job.result
    return body


def stream_gallery(
    tenant: Tenant, model_id: str, model_version: str
) -> tuple[EnrolledGallery, dict[str, str]]:
    """The tenant's ready voiceprints of the API's own model, for a streaming session."""
    rows = list(
        Speaker.objects.filter(
            tenant=tenant,
            enrollment_status=EnrollmentStatus.READY,
            voiceprint__isnull=False,
            embedding_model_id=model_id,
            embedding_model_version=model_version,
        ).values_list("id", "display_name", "voiceprint")
    )
    ids = [str(r[0]) for r in rows]
    vectors = (
        np.asarray([r[2] for r in rows], dtype=np.float32) if rows else np.zeros((0, 1), np.float32)
    )
    return EnrolledGallery(ids, vectors), {str(r[0]): r[1] for r in rows}
