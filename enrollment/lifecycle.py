"""The speaker's lifecycle: the one module that changes ``Speaker.enrollment_status``.

An enrollment starts ``pending``, or ``needs_review`` when an uncertain voice check held it.
``needs_review -> pending`` when a person approves it (then it fans out like any enrollment);
a rejection erases it. ``pending -> ready`` on the first node that holds the voiceprint
(``failed -> ready`` too, when a later warm succeeds), ``pending -> failed`` once no node can
still hold it, anything ``-> evicted`` on erasure. Each transition locks the speaker's row,
changes the status only from the states it allows (so concurrent callers flip it once and
nothing flips it back) and writes its ``speaker.status_changed`` audit event in the same
transaction; a review decision also writes ``speaker.review_approved`` or ``_rejected``.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db import transaction
from django.utils import timezone

from audit.services import record_event
from enrollment.models import EnrollmentStatus, Speaker

STATUS_CHANGED = "speaker.status_changed"
REVIEW_APPROVED = "speaker.review_approved"
REVIEW_REJECTED = "speaker.review_rejected"


def _transition(
    speaker_id: uuid.UUID | str,
    *,
    allowed_from: tuple[str, ...],
    to: EnrollmentStatus,
    actor: str,
    details: dict[str, Any] | None = None,
    **fields: Any,
) -> str | None:
    """Moves the speaker to ``to``; returns the status it left, or None when its status was
    not one of ``allowed_from`` (nothing changed, nothing recorded)."""
    with transaction.atomic():
        row = (
            Speaker.objects.select_for_update()
            .filter(id=speaker_id)
            .values_list("enrollment_status", "tenant_id")
            .first()
        )
        if row is None or row[0] not in allowed_from:
            return None
        previous, tenant_id = row
        now = timezone.now()
        Speaker.objects.filter(id=speaker_id).update(
            enrollment_status=to, updated_at=now, status_changed_at=now, **fields
        )
        record_event(
            STATUS_CHANGED,
            actor=actor,
            tenant_id=str(tenant_id),
            speaker_id=str(speaker_id),
            details={"from": previous, "to": to, **(details or {})},
        )
        return str(previous)


def approve_review(speaker_id: uuid.UUID | str, *, actor: str, details: dict[str, Any]) -> bool:
    """A person approved the held enrollment: it becomes ``pending`` and may fan out. False
    (nothing recorded) when it was not held."""
    with transaction.atomic():
        previous = _transition(
            speaker_id,
            allowed_from=(EnrollmentStatus.NEEDS_REVIEW,),
            to=EnrollmentStatus.PENDING,
            actor=actor,
            details={"review": "approved"},
        )
        if previous is None:
            return False
        _record_decision(REVIEW_APPROVED, speaker_id, actor, details)
    return True


def reject_review(speaker_id: uuid.UUID | str, *, actor: str, details: dict[str, Any]) -> bool:
    """A person rejected the held enrollment; the caller erases it in the same transaction
    (the tombstone is the transition). False (nothing recorded) when it was not held."""
    with transaction.atomic():
        held = (
            Speaker.objects.select_for_update()
            .filter(id=speaker_id, enrollment_status=EnrollmentStatus.NEEDS_REVIEW)
            .exists()
        )
        if not held:
            return False
        _record_decision(REVIEW_REJECTED, speaker_id, actor, details)
    return True


def _record_decision(
    action: str, speaker_id: uuid.UUID | str, actor: str, details: dict[str, Any]
) -> None:
    tenant_id = Speaker.objects.values_list("tenant_id", flat=True).get(id=speaker_id)
    record_event(
        action,
        actor=actor,
        tenant_id=str(tenant_id),
        speaker_id=str(speaker_id),
        details=details,
    )


def mark_ready(speaker_id: uuid.UUID | str, *, node_id: str) -> bool:
    """A node holds the speaker's voiceprint; True when this call made the speaker ready."""
    previous = _transition(
        speaker_id,
        allowed_from=(EnrollmentStatus.PENDING, EnrollmentStatus.FAILED),
        to=EnrollmentStatus.READY,
        actor=f"node:{node_id}",
        details={"node_id": node_id},
    )
    return previous is not None


def mark_failed(speaker_id: uuid.UUID | str, *, node_id: str, errors: dict[str, str]) -> bool:
    """No node can still hold the speaker; ``errors`` is each node's last error."""
    previous = _transition(
        speaker_id,
        allowed_from=(EnrollmentStatus.PENDING,),
        to=EnrollmentStatus.FAILED,
        actor=f"node:{node_id}",
        details={"errors": errors},
    )
    return previous is not None


def tombstone(speaker_id: uuid.UUID | str, *, actor: str) -> str | None:
    """Erasure: the speaker becomes ``evicted`` and its personal fields are blanked; returns
    the status it left (None when it was erased already)."""
    return _transition(
        speaker_id,
        allowed_from=(
            EnrollmentStatus.PENDING,
            EnrollmentStatus.NEEDS_REVIEW,
            EnrollmentStatus.READY,
            EnrollmentStatus.FAILED,
        ),
        to=EnrollmentStatus.EVICTED,
        actor=actor,
        display_name="",
        description="",
        reference_sha256="",
        preflight={},
    )
