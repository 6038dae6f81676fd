"""The review hold: a person decides on an enrollment that an uncertain voice check held.

A held speaker (``needs_review``) keeps its recordings and consent record and is on no node.
Approval hands it to the fan-out like a fresh enrollment; rejection erases it like a DELETE,
receipt and all. Held enrollments nobody decides on are erased after ``REVIEW_EXPIRY_DAYS``.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.models import AuditEvent, ErasureAudit, ErasureReason
from common.blobs import BlobMissing, BlobStoreError, get_blob_store
from common.errors import BlobStoreUnavailable, ServiceError
from consent.models import ConsentRecord
from data_keys.selectors import decrypt_for_speaker
from data_keys.services import encrypt_for_speaker
from enrollment import lifecycle
from enrollment.distribution import distribution
from enrollment.models import EnrollmentStatus, Speaker
from enrollment.services import (
    NO_NODE_NOTE,
    delete_erased_blobs,
    record_erasure,
    wait_for_fan_out,
)
from tenancy.auth import ApiPrincipal

logger = logging.getLogger(__name__)

APPROVE = "approve"
REJECT = "reject"
DECISIONS = (APPROVE, REJECT)
# The associated data the reviewer's note is encrypted under (the speaker's data key).
NOTE_CONTEXT = "audit.review_note"
EXPIRY_ACTOR = "system:review-expiry"


class NotUnderReview(ServiceError):
    status_code = 409
    code = "not_under_review"


class SameReviewer(ServiceError):
    status_code = 403
    code = "same_reviewer"


class RecordingMissing(ServiceError):
    status_code = 404
    code = "recording_missing"


RECORDING_ROLES = ("reference", "consent")
# The media type a browser needs to play a recording, by the container the preflight decoded.
MEDIA_TYPES = {"wav": "audio/wav", "mp3": "audio/mpeg", "flac": "audio/flac", "ogg": "audio/ogg"}


@dataclass
class ReviewOutcome:
    decision: str
    speaker: Speaker
    enrolled_on: list[str]
    note: str | None = None
    erasure: ErasureAudit | None = None


def review_expires_at(speaker: Speaker) -> datetime:
    return speaker.created_at + timedelta(days=settings.REVIEW_EXPIRY_DAYS)


def held_findings(speaker: Speaker) -> list[dict[str, Any]]:
    """The preflight findings that held the enrollment."""
    return [f for f in speaker.preflight.get("findings", []) if f.get("severity") == "review"]


def decide(speaker: Speaker, *, principal: ApiPrincipal, decision: str, note: str) -> ReviewOutcome:
    """Approves (fans out) or rejects (erases) a held enrollment, with its audit event, in one
    transaction; nothing changes when the speaker is not held or the reviewer may not decide."""
    if decision not in DECISIONS:
        raise ValueError(f"unknown review decision {decision!r}")
    with transaction.atomic():
        speaker = Speaker.objects.select_for_update().get(id=speaker.id)
        _check_reviewer(speaker, principal)
        details = _decision_details(speaker, principal, note)
        if decision == REJECT:
            lifecycle.reject_review(speaker.id, actor=principal.actor, details=details)
            erasure = record_erasure(
                speaker, reason=ErasureReason.REVIEW_REJECTED, actor=principal.actor
            ).erasure
        else:
            lifecycle.approve_review(speaker.id, actor=principal.actor, details=details)
            scheduled = distribution().fan_out(speaker)
    if decision == REJECT:
        delete_erased_blobs(erasure)  # only once committed, as every erasure
        speaker.refresh_from_db()
        return ReviewOutcome(REJECT, speaker, [], erasure=erasure)
    enrolled_on = wait_for_fan_out(speaker, scheduled)
    return ReviewOutcome(APPROVE, speaker, enrolled_on, None if scheduled else NO_NODE_NOTE)


def _check_reviewer(speaker: Speaker, principal: ApiPrincipal) -> None:
    if speaker.enrollment_status != EnrollmentStatus.NEEDS_REVIEW:
        raise NotUnderReview(
            f"This speaker is {speaker.enrollment_status}, not held for review.",
            details={"enrollment_status": speaker.enrollment_status},
        )
    if (
        settings.REVIEW_REQUIRE_OTHER_REVIEWER
        and speaker.created_by_key_id is not None
        and speaker.created_by_key_id == principal.api_key.id
    ):
        raise SameReviewer(
            "The enrollment must be reviewed by someone other than who enrolled it "
            "(REVIEW_REQUIRE_OTHER_REVIEWER)."
        )


def _decision_details(speaker: Speaker, principal: ApiPrincipal, note: str) -> dict[str, Any]:
    # The note may name people: only its ciphertext under the speaker's data key is kept, so
    # the speaker's erasure (a rejection's included) makes it unreadable.
    details: dict[str, Any] = {
        "reviewer_key_id": str(principal.api_key.id),
        "enrolled_by_key_id": str(speaker.created_by_key_id or ""),
        "findings": [f.get("code") for f in held_findings(speaker)],
        "note_length": len(note),
    }
    if note:
        ciphertext = encrypt_for_speaker(speaker.id, NOTE_CONTEXT, note.encode())
        details["note_ciphertext"] = base64.b64encode(ciphertext).decode()
    return details


def erase_expired_reviews(now: datetime | None = None) -> list[str]:
    """Erases every held enrollment older than ``REVIEW_EXPIRY_DAYS`` (reason
    ``review_expired``)."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.REVIEW_EXPIRY_DAYS)
    erased = []
    held = Speaker.objects.filter(
        enrollment_status=EnrollmentStatus.NEEDS_REVIEW, created_at__lt=cutoff
    )
    for speaker_id in held.values_list("id", flat=True):
        try:
            with transaction.atomic():
                # Under the lock: one approved meanwhile is no longer held, and stays.
                speaker = held.select_for_update().filter(id=speaker_id).first()
                if speaker is None:
                    continue
                erasure = record_erasure(
                    speaker, reason=ErasureReason.REVIEW_EXPIRED, actor=EXPIRY_ACTOR
                ).erasure
        except Exception:  # one failure must not stop the sweep; the next run retries it
            logger.exception("review expiry of speaker %s failed", speaker_id)
            continue
        delete_erased_blobs(erasure)
        erased.append(str(speaker_id))
    return erased


@dataclass(frozen=True)
class HeldRecording:
    data: bytes
    media_type: str


def held_recording(speaker: Speaker, role: str) -> HeldRecording:
    """One recording of a held enrollment, for its reviewer to listen to; only while held."""
    if role not in RECORDING_ROLES:
        raise RecordingMissing(f"No recording {role!r}: reference or consent.")
    if speaker.enrollment_status != EnrollmentStatus.NEEDS_REVIEW:
        raise NotUnderReview(f"This speaker is {speaker.enrollment_status}, not held for review.")
    key = (
        speaker.reference_blob_key
        if role == "reference"
        else ConsentRecord.objects.filter(speaker=speaker)
        .order_by("recorded_at")
        .values_list("recording_blob_key", flat=True)
        .first()
    )
    try:
        if key is None:
            raise BlobMissing(f"speaker {speaker.id} has no consent recording")
        data = get_blob_store().get(key)
    except BlobMissing as exc:
        raise RecordingMissing(f"The {role} recording is not in the store.") from exc
    except BlobStoreError as exc:
        logger.warning("recording %s of speaker %s unavailable: %s", role, speaker.id, exc)
        raise BlobStoreUnavailable("The recording store is unavailable; try again later.") from exc
    container = str(speaker.preflight.get(role, {}).get("format", ""))
    # PyAV names MP4-family containers "mov,mp4,m4a,3gp,3g2,mj2".
    media_type = "audio/mp4" if "mp4" in container else MEDIA_TYPES.get(container)
    return HeldRecording(data, media_type or "application/octet-stream")


def decision_note(event: AuditEvent) -> str | None:
    """A review decision's note, readable while the speaker's data key lives."""
    ciphertext = event.details.get("note_ciphertext")
    if not ciphertext or event.speaker_id is None:
        return None
    plaintext = decrypt_for_speaker(event.speaker_id, NOTE_CONTEXT, base64.b64decode(ciphertext))
    return None if plaintext is None else plaintext.decode()
