"""The audit trail's hash chain: each event's canonical form, its hash, and the check of one link.

Shared by the appender and verifier (``audit.services``) and the checkpoint maker
(``audit.checkpoints``), which checks the links since the last checkpoint before signing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

from audit.models import AuditEvent

GENESIS_HASH = "0" * 64

LINK_BROKEN = "link to the previous event is broken (an event before it was removed or altered)"
CONTENT_ALTERED = "content does not match its hash"


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


class ChainRow(NamedTuple):
    """One stored event, as the verifiers read it (a tuple: a trail is read by the 100,000)."""

    seq: int
    prev_hash: str
    hash: str
    occurred_at: datetime
    tenant_id: UUID | None
    action: str
    actor: str
    speaker_id: UUID | None
    details: dict[str, Any]

    def problem(self, expected_prev: str) -> str | None:
        """What is wrong with this event, given the hash of the event stored before it."""
        if self.prev_hash != expected_prev:
            return LINK_BROKEN
        recomputed = event_hash(
            prev_hash=self.prev_hash,
            occurred_at=self.occurred_at,
            tenant_id=str(self.tenant_id) if self.tenant_id else None,
            action=self.action,
            actor=self.actor,
            speaker_id=str(self.speaker_id) if self.speaker_id else None,
            details=self.details,
        )
        return None if recomputed == self.hash else CONTENT_ALTERED


def chain_rows(from_seq: int | None = None) -> Iterator[ChainRow]:
    """The stored events in chain order, from ``from_seq`` on (all of them by default)."""
    events = AuditEvent.objects.order_by("seq")
    if from_seq is not None:
        events = events.filter(seq__gte=from_seq)
    for row in events.values_list(
        "seq",
        "prev_hash",
        "hash",
        "occurred_at",
        "tenant_id",
        "action",
        "actor",
        "speaker_id",
        "details",
    ).iterator(chunk_size=5000):
        yield ChainRow._make(row)
