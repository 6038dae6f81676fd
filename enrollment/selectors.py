from __future__ import annotations

from django.db.models import QuerySet

from audit.models import AuditEvent
from enrollment import lifecycle
from enrollment.models import EnrollmentStatus, Speaker
from enrollment.preflight import KnownVoiceprint
from enrollment.voiceprints import open_voiceprints
from tenancy.models import Tenant


def speakers_for_tenant(tenant: Tenant, status: str | None = None) -> QuerySet[Speaker]:
    speakers = Speaker.objects.filter(tenant=tenant)
    if status:
        speakers = speakers.filter(enrollment_status=status)
    return speakers


def review_decisions(tenant: Tenant) -> QuerySet[AuditEvent]:
    """The tenant's review decisions, newest first."""
    return AuditEvent.objects.filter(
        tenant=tenant, action__in=[lifecycle.REVIEW_APPROVED, lifecycle.REVIEW_REJECTED]
    ).order_by("-seq")


def speaker_for_tenant(tenant: Tenant, speaker_id: str) -> Speaker | None:
    return Speaker.objects.filter(tenant=tenant, id=speaker_id).first()


def tenant_voiceprints(tenant: Tenant, model_id: str, model_version: str) -> list[KnownVoiceprint]:
    """Voiceprints of the tenant's live speakers made by the same model (others don't compare)."""
    rows = (
        Speaker.objects.filter(
            tenant=tenant,
            embedding_model_id=model_id,
            embedding_model_version=model_version,
            voiceprint_ciphertext__isnull=False,
        )
        .exclude(enrollment_status=EnrollmentStatus.EVICTED)
        .values_list("id", "voiceprint_ciphertext")
    )
    return [KnownVoiceprint(str(pk), vector) for pk, vector in open_voiceprints(rows).items()]
