"""Factories for finished diarization jobs, with results written as the engine writes them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import numpy as np
from django.utils import timezone

from diarization.engine import Diarization, DiarizationOptions, Turn, as_result
from diarization.models import DiarizationJob, JobStatus, WebhookState
from tenancy.models import Tenant
from voice.gallery import EnrolledGallery


def engine_result(enrolled_speaker_id: str) -> dict[str, Any]:
    """A result as the engine writes it: a voice identified as the enrolled speaker, then an
    unknown voice (``spk_0``)."""
    turns = [
        Turn(start=0.0, end=4.0, cluster=0, confidence=0.9, run_s=4.0),
        Turn(start=4.5, end=8.0, cluster=1, confidence=0.8, run_s=3.5),
        Turn(start=8.5, end=12.0, cluster=0, confidence=0.9, run_s=3.5),
    ]
    centroids = np.eye(2, 256, dtype=np.float32)
    diarization = Diarization(
        duration_s=12.0, turns=turns, centroids=centroids, frame_confidence=None
    )
    # The enrolled voiceprint is the first voice's centroid: it matches, the second does not.
    diarization.identify(
        EnrolledGallery([enrolled_speaker_id], centroids[:1]), DiarizationOptions()
    )
    return as_result(diarization, DiarizationOptions(), extra={"node_id": "node-1"})


def make_finished_job(
    tenant: Tenant,
    result: dict[str, Any] | None,
    *,
    completed_at: datetime | None = None,
    status: JobStatus = JobStatus.SUCCEEDED,
    webhook_url: str = "",
    audio_kept: bool = False,
) -> DiarizationJob:
    """A job that completed at ``completed_at`` (now by default); its audio was deleted then,
    unless ``audio_kept`` (DIARIZE_KEEP_AUDIO)."""
    job_id = uuid.uuid4()
    completed_at = completed_at or timezone.now()
    return DiarizationJob.objects.create(
        id=job_id,
        tenant=tenant,
        status=status,
        audio_blob_key=f"diarize/{tenant.id}/{job_id}/audio",
        audio_deleted_at=None if audio_kept else completed_at,
        audio_sha256="0" * 64,
        audio_size_bytes=1,
        audio_duration_s=12.0,
        estimated_time_s=1,
        attempt=1,
        result=result,
        error={"code": "audio_undecodable", "message": "no"}
        if status == JobStatus.FAILED
        else None,
        webhook_url=webhook_url,
        webhook_state=WebhookState.PENDING if webhook_url else WebhookState.NONE,
        started_at=completed_at,
        completed_at=completed_at,
    )
