from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import QuerySet

from audit.models import AuditEvent, ErasureAudit, ErasureOutcome
from consent.models import ConsentRecord
from data_keys.selectors import speakers_with_keys
from tenancy.models import Tenant


def erasure_receipt(erasure: ErasureAudit) -> dict[str, Any]:
    """The receipt: the immutable audit row plus every confirmation appended since."""
    nodes = {
        node_id: {"node_id": node_id, "state": "pending", "detail": ""}
        for node_id in erasure.nodes_to_evict
    }
    blobs: dict[str, Any] = {"state": "pending", "detail": "", "bytes": 0, "versions": 0}
    for confirmation in erasure.confirmations.all():
        if confirmation.outcome == ErasureOutcome.BLOBS_DELETED:
            blobs.update(
                state="deleted",
                detail="",
                bytes=confirmation.bytes_deleted or 0,
                versions=confirmation.versions_deleted or 0,
            )
        elif confirmation.outcome == ErasureOutcome.BLOB_ERROR:
            if blobs["state"] != "deleted":
                blobs.update(state="failing", detail=confirmation.detail)
        else:
            nodes.setdefault(confirmation.node_id, {"node_id": confirmation.node_id}).update(
                state=confirmation.outcome,
                detail=confirmation.detail,
                confirmed_at=confirmation.confirmed_at.isoformat(),
            )
    node_states = sorted(nodes.values(), key=lambda n: n["node_id"])
    errors = {
        n["node_id"]: n.get("detail") or n["state"]
        for n in node_states
        if n["state"] != ErasureOutcome.EVICTED
    }
    if blobs["state"] != "deleted":
        errors["blob_store"] = blobs["detail"] or "pending"
    # Destroyed in the erasure's own transaction; a key still there is an erasure gone wrong.
    data_key_destroyed = not speakers_with_keys([erasure.speaker_id])
    if not data_key_destroyed:
        errors["data_key"] = "not destroyed"
    return {
        "audit_id": str(erasure.id),
        "speaker_id": str(erasure.speaker_id),
        "reason": erasure.reason,
        "requested_by": erasure.requested_by,
        "erased_at": erasure.erased_at.isoformat(),
        "blob_keys": erasure.blob_keys,
        "blobs_state": blobs["state"],
        "blob_versions_deleted": blobs["versions"],
        "blob_bytes_deleted": blobs["bytes"],
        "consent_record_ids": erasure.consent_record_ids,
        "data_key_destroyed": data_key_destroyed,
        "nodes": node_states,
        "error_summary": errors,
        "complete": not errors,
    }


def _window(
    queryset: QuerySet[Any], field: str, since: datetime | None, until: datetime | None
) -> QuerySet[Any]:
    if since:
        queryset = queryset.filter(**{f"{field}__gte": since})
    if until:
        queryset = queryset.filter(**{f"{field}__lt": until})
    return queryset


def consent_records(
    tenant: Tenant,
    speaker_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[ConsentRecord]:
    records = ConsentRecord.objects.filter(tenant=tenant).order_by("recorded_at", "id")
    if speaker_id:
        records = records.filter(speaker_id=speaker_id)
    return _window(records, "recorded_at", since, until)


def erasures(
    tenant: Tenant,
    speaker_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[ErasureAudit]:
    rows = ErasureAudit.objects.filter(tenant=tenant).order_by("erased_at", "id")
    if speaker_id:
        rows = rows.filter(speaker_id=speaker_id)
    return _window(rows, "erased_at", since, until).prefetch_related("confirmations")


def audit_events(
    tenant: Tenant,
    speaker_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[AuditEvent]:
    events = AuditEvent.objects.filter(tenant=tenant).order_by("seq")
    if speaker_id:
        events = events.filter(speaker_id=speaker_id)
    return _window(events, "occurred_at", since, until)


def erasure_for_tenant(tenant: Tenant, audit_id: str) -> ErasureAudit | None:
    return ErasureAudit.objects.filter(tenant=tenant, id=audit_id).first()
