from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import numpy as np

from diarization.models import DiarizationJob
from enrollment.models import EnrollmentStatus, Speaker, Voiceprint
from enrollment.voiceprints import open_voiceprints
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
        body["result"] = named_result(job.tenant_id, job.result)
    return body


def speaker_names(tenant_id: uuid.UUID | str, speaker_ids: Iterable[str]) -> dict[str, str | None]:
    """The current display name of each enrolled speaker id, in one query.

    None for an id whose speaker was erased (tombstoned: ``evicted``), or that the tenant
    does not know (a deleted row, another tenant's id): such an id reads as erased.
    """
    wanted = {str(i) for i in speaker_ids}
    valid = [i for i in wanted if _is_uuid(i)]
    names: dict[str, str | None] = dict.fromkeys(wanted)
    if valid:
        live = (
            Speaker.objects.filter(tenant_id=tenant_id, id__in=valid)
            .exclude(enrollment_status=EnrollmentStatus.EVICTED)
            .values_list("id", "display_name")
        )
        names.update((str(speaker_id), name) for speaker_id, name in live)
    return names


def named_result(tenant_id: uuid.UUID | str, result: dict[str, Any]) -> dict[str, Any]:
    """A stored result as it is shown: each enrolled speaker's label with its current
    ``display_name``, or ``"erased": true`` and no name once the speaker is erased."""
    enrolled = {s.get("speaker_label") for s in result.get("speakers", []) if s.get("enrolled")}
    names = speaker_names(tenant_id, {label for label in enrolled if label})

    def named(item: dict[str, Any]) -> dict[str, Any]:
        # A name in the stored item is never shown: a node on an older version may still
        # write one, and it would outlive the speaker's erasure.
        shown = {k: v for k, v in item.items() if k not in ("display_name", "erased")}
        label = item.get("speaker_label")
        if label not in names:
            return shown
        name = names[label]
        if name is None:
            return {**shown, "erased": True}
        return {**shown, "display_name": name}

    return {
        **result,
        "segments": [named(s) for s in result.get("segments", [])],
        "speakers": [named(s) for s in result.get("speakers", [])],
    }


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def stream_gallery(
    tenant: Tenant, model_id: str, model_version: str
) -> tuple[EnrolledGallery, dict[str, str]]:
    """The tenant's ready voiceprints of the API's own model, for a streaming session."""
    rows = list(
        Voiceprint.objects.filter(
            tenant=tenant,
            model_id=model_id,
            model_version=model_version,
            speaker__enrollment_status=EnrollmentStatus.READY,
        ).values_list("speaker_id", "speaker__display_name", "ciphertext", "vector_sha256")
    )
    # Stored encrypted under each speaker's data key; one erased meanwhile is left out.
    voiceprints = open_voiceprints(
        ((r[0], r[2], r[3]) for r in rows), model_id, model_version
    ).vectors
    ids = [str(pk) for pk in voiceprints]
    vectors = np.stack(list(voiceprints.values())) if voiceprints else np.zeros((0, 1), np.float32)
    names = {str(r[0]): r[1] for r in rows if r[0] in voiceprints}
    return EnrolledGallery(ids, vectors), names
