from __future__ import annotations

from django.db.models import QuerySet

from audit.models import AuditEvent
from enrollment import lifecycle
from enrollment.models import Speaker
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
