"""The append-only, hash-chained audit trail and erasure receipts."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from audit.models import AuditEvent, ErasureAudit, ErasureConfirmation
from tenancy.models import Tenant

GENESIS_HASH = "0" * 64
# One appender at a time, so that every event links to the one committed before it.
CHAIN_LOCK_KEY = 0x5CA1EC0A


def canonical_event(
    *,
    prev_hash: str,
    occurred_at: datetime,
    tenant_id: str | None,
    action: str,
    actor: str,
    speaker_id: str | None,
    details: dict[str, Any],
) -> bytes:
    return json.dumps(
        {
            "prev_hash": prev_hash,
            "occurred_at": occurred_at.isoformat(),
            "tenant_id": tenant_id,
            "action": action,
            "actor": actor,
            "speaker_id": speaker_id,
            "details": details,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        default=str,
    ).encode()


def event_hash(**fields: Any) -> str:
    """SHA-256 of an event's canonical form (see canonical_event for the fields)."""
    return hashlib.sha256(canonical_event(**fields)).hexdigest()


def _json_safe(value: Any) -> Any:
    """Non-finite floats become None and NUL characters go: jsonb refuses both."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {str(k).replace("\x00", ""): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def record_event(
    action: str,
    *,
    actor: str,
    tenant: Tenant | None = None,
    tenant_id: str | None = None,
    speaker_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Appends an event; inside a transaction it commits (or vanishes) with that transaction."""
    tenant_key = str(tenant.id) if tenant else tenant_id
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK_KEY])
            # Hash exactly what jsonb will hand back to the verifier (its numbers, its keys).
            cursor.execute(
                "SELECT %s::jsonb",
                [json.dumps(_json_safe(details or {}), default=str, allow_nan=False)],
            )
            # Django hands jsonb back as text and decodes it in the field; so do we.
            payload = json.loads(cursor.fetchone()[0])
        prev_hash = (
            AuditEvent.objects.order_by("-seq").values_list("hash", flat=True).first()
            or GENESIS_HASH
        )
        occurred_at = timezone.now()
        digest = event_hash(
            prev_hash=prev_hash,
            occurred_at=occurred_at,
            tenant_id=tenant_key,
            action=action,
            actor=actor,
            speaker_id=speaker_id,
            details=payload,
        )
        return AuditEvent.objects.create(
            tenant_id=tenant_key,
            occurred_at=occurred_at,
            action=action,
            actor=actor,
            speaker_id=speaker_id,
            details=payload,
            prev_hash=prev_hash,
            hash=digest,
        )


@dataclass(frozen=True)
class ChainVerdict:
    intact: bool
    events_checked: int
    first_broken_seq: int | None = None
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "intact": self.intact,
            "events_checked": self.events_checked,
            "first_broken_seq": self.first_broken_seq,
            "problem": self.problem,
        }


def _chain_rows() -> Iterator[tuple[Any, ...]]:
    return (
        AuditEvent.objects.order_by("seq")
        .values_list(
            "seq",
            "prev_hash",
            "hash",
            "occurred_at",
            "tenant_id",
            "action",
            "actor",
            "speaker_id",
            "details",
        )
        .iterator(chunk_size=5000)
    )


def verify_chain() -> ChainVerdict:
    """Walks the whole trail; names the first event whose link or content does not hold."""
    expected_prev = GENESIS_HASH
    checked = 0
    for (
        seq,
        prev_hash,
        digest,
        occurred_at,
        tenant_id,
        action,
        actor,
        speaker_id,
        details,
    ) in _chain_rows():
        checked += 1
        if prev_hash != expected_prev:
            return ChainVerdict(
                False,
                checked,
                seq,
                "link to the previous event is broken (an event before it was removed or altered)",
            )
        recomputed = event_hash(
            prev_hash=prev_hash,
            occurred_at=occurred_at,
            tenant_id=str(tenant_id) if tenant_id else None,
            action=action,
            actor=actor,
            speaker_id=str(speaker_id) if speaker_id else None,
            details=details,
        )
        if recomputed != digest:
            return ChainVerdict(False, checked, seq, "content does not match its hash")
        expected_prev = digest
    return ChainVerdict(True, checked)


def confirm_erasure(
    erasure: ErasureAudit,
    *,
    node_id: str,
    outcome: str,
    detail: str = "",
    bytes_deleted: int | None = None,
    versions_deleted: int | None = None,
) -> bool:
    """Appends a confirmation once per (erasure, node, outcome); returns False for a repeat."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                [CHAIN_LOCK_KEY, f"{erasure.id}:{node_id}:{outcome}"],
            )
        if ErasureConfirmation.objects.filter(
            erasure=erasure, node_id=node_id, outcome=outcome
        ).exists():
            return False
        ErasureConfirmation.objects.create(
            erasure=erasure,
            node_id=node_id,
            outcome=outcome,
            detail=detail,
            bytes_deleted=bytes_deleted,
            versions_deleted=versions_deleted,
            confirmed_at=timezone.now(),
        )
        record_event(
            f"erasure.{outcome}",
            actor=f"node:{node_id}" if node_id else "system",
            tenant_id=str(erasure.tenant_id),
            speaker_id=str(erasure.speaker_id),
            details={
                "erasure_id": str(erasure.id),
                "node_id": node_id,
                "detail": detail,
                "bytes_deleted": bytes_deleted,
                "versions_deleted": versions_deleted,
            },
        )
        return True
