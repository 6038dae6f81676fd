"""The append-only, hash-chained audit trail and erasure receipts."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from audit import checkpoints
from audit.chain import GENESIS_HASH, chain_rows, event_hash
from audit.checkpoints import Checkpoint
from audit.models import AuditEvent, ErasureAudit, ErasureConfirmation
from tenancy.models import Tenant

# One appender at a time, so that every event links to the one committed before it.
CHAIN_LOCK_KEY = 0x5CA1EC0A


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


ANCHOR_NONE = "none"  # no checkpoint yet: a fresh trail
ANCHOR_CURRENT = "current"  # the newest checkpoint holds, and it is recent enough
# Events older than the checkpoints' interval allows are under no checkpoint: the maker is not
# running, or checkpoints were removed from the blob store.
ANCHOR_OVERDUE = "overdue"


@dataclass(frozen=True)
class ChainVerdict:
    """A verification of the whole trail: its links, and the newest signed checkpoints.

    ``events_checked`` and ``first_broken_seq`` are over the whole trail, for operators
    (``verify_audit_trail``); ``problem`` names no sequence number, ``detail`` does.
    ``tenant_events`` and ``break_in_tenant_events`` answer for the tenant the verification
    was asked for (``for_tenant``).
    """

    intact: bool
    events_checked: int
    first_broken_seq: int | None = None
    problem: str | None = None
    detail: str | None = None
    anchor: str = ANCHOR_NONE
    checkpoint: Checkpoint | None = None
    tenant_events: int = 0
    # Whether the event the break was found at is the tenant's: None when intact, or when the
    # break is at no one event (a cut tail, a rewrite found at a checkpoint).
    break_in_tenant_events: bool | None = None

    def for_tenant(self) -> dict[str, Any]:
        """A tenant's view: the whole trail's verdict, but only counts of its own events, and a
        sequence number only when the break is at one of its own events."""
        return {
            "intact": self.intact,
            "events_checked": self.tenant_events,
            "first_broken_seq": self.first_broken_seq if self.break_in_tenant_events else None,
            "problem": self.problem,
            "break_in_own_events": self.break_in_tenant_events,
            "anchor": self.anchor,
        }


def _unanchored_for_too_long(since: datetime | None) -> bool:
    if since is None:
        return False
    allowed = 2 * settings.AUDIT_CHECKPOINT_INTERVAL_S + settings.AUDIT_CHECKPOINT_CHECK_S
    return timezone.now() - since > timedelta(seconds=allowed)


def verify_chain(tenant: Tenant | None = None) -> ChainVerdict:
    """Walks the whole trail, names the first event whose link or content does not hold, and
    checks it against the newest signed checkpoints; counts ``tenant``'s events on the way.

    A break anywhere matters to every tenant, so the whole trail is always walked. Raises
    CheckpointsUnavailable when the blob store cannot be read.
    """
    # Read first: a checkpoint made during the walk could sign events the walk does not see.
    series = checkpoints.read_series()
    latest = series.latest
    signed = {checkpoint.seq: checkpoint for checkpoint in series.recent}
    anchor = ANCHOR_CURRENT if latest else ANCHOR_NONE
    checked = own = 0
    expected_prev = GENESIS_HASH
    last_seq: int | None = None
    unanchored_since: datetime | None = None
    matched: set[int] = set()
    for row in chain_rows():
        checked += 1
        mine = tenant is not None and row.tenant_id == tenant.id
        own += mine
        problem = row.problem(expected_prev)
        if problem:
            return ChainVerdict(
                intact=False,
                events_checked=checked,
                first_broken_seq=row.seq,
                problem=problem,
                detail=f"event #{row.seq}: {problem}",
                anchor=anchor,
                checkpoint=latest,
                tenant_events=own,
                break_in_tenant_events=mine,
            )
        checkpoint = signed.get(row.seq)
        if checkpoint is not None and checkpoint.hash != row.hash:
            return ChainVerdict(
                intact=False,
                events_checked=checked,
                first_broken_seq=row.seq,
                problem=checkpoints.REWRITTEN,
                detail=f"event #{row.seq} is not the one checkpoint #{checkpoint.counter} signed",
                anchor=anchor,
                checkpoint=latest,
                tenant_events=own,
            )
        if checkpoint is not None:
            matched.add(row.seq)
        if unanchored_since is None and (latest is None or row.seq > latest.seq):
            unanchored_since = row.occurred_at
        expected_prev = row.hash
        last_seq = row.seq
    if series.problem:
        return ChainVerdict(
            intact=False,
            events_checked=checked,
            problem=series.problem,
            detail=series.detail,
            tenant_events=own,
        )
    for checkpoint in series.recent:
        if checkpoint.seq in matched:
            continue
        cut = last_seq is None or checkpoint.seq > last_seq
        return ChainVerdict(
            intact=False,
            events_checked=checked,
            problem=checkpoints.TRUNCATED if cut else checkpoints.SIGNED_EVENT_MISSING,
            detail=(
                f"checkpoint #{checkpoint.counter} signed event #{checkpoint.seq}, "
                + (f"but the trail ends at #{last_seq}" if cut else "which is missing")
            ),
            anchor=anchor,
            checkpoint=latest,
            tenant_events=own,
        )
    return ChainVerdict(
        intact=True,
        events_checked=checked,
        anchor=ANCHOR_OVERDUE if _unanchored_for_too_long(unanchored_since) else anchor,
        checkpoint=latest,
        tenant_events=own,
    )


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
