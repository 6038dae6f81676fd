"""Enrollment workflows: the speaker intake and erasure (GDPR Art. 17)."""

from __future__ import annotations

import enum
import io
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.crypto import salted_hmac

from audit.models import ErasureAudit, ErasureConfirmation, ErasureOutcome, ErasureReason
from audit.services import confirm_erasure, record_event
from common.blobs import BlobStore, BlobStoreError, StoredBlob, get_blob_store
from common.errors import BlobStoreUnavailable, PreflightRejected, UploadTooLarge
from common.metrics import FANOUT_LATENCY, observe_preflight
from common.uploads import MULTIPART_OVERHEAD_BYTES
from consent.models import ConsentRecord
from consent.services import record_consent
from data_keys.crypto import SpeakerKey
from data_keys.services import create_data_key, destroy_data_key
from enrollment import lifecycle
from enrollment.distribution import distribution
from enrollment.galleries import tenant_gallery
from enrollment.models import EnrollmentStatus, Speaker
from enrollment.preflight import Preflight, PreflightReport
from enrollment.voiceprints import PREFLIGHT, add_voiceprint, delete_voiceprints
from storage import services as blob_intents
from storage.models import BlobPurpose
from tenancy.auth import ApiPrincipal
from tenancy.models import Tenant
from voice.engines import get_engine

logger = logging.getLogger(__name__)

NO_NODE_NOTE = (
    "No pyannote node is online: the speaker stays pending until a node comes online "
    "and takes the enrollment."
)
HELD_NOTE = (
    "An uncertain voice check held the enrollment for a person's review "
    "(POST speakers/{id}/review): it is on no node and labels nothing until it is approved."
)
# How long an enrollment whose connection was lost waits to learn its transaction's outcome.
COMMIT_OUTCOME_WAIT_S = 10.0
COMMIT_UNCONFIRMED_NOTE = (
    "The database connection was lost as the enrollment committed; it was stored all the "
    "same. The nodes get it from the reconciler after about NODE_REQUEUE_AFTER_S."
)


class UploadedRecording(Protocol):
    name: str | None
    size: int | None

    def read(self, size: int = -1) -> bytes: ...


@dataclass(frozen=True)
class SpeakerProfile:
    display_name: str
    language_primary: str
    description: str
    consent_user_full_name: str
    consent_stated_purpose: str
    consent_text: str


@dataclass
class EnrollmentOutcome:
    speaker: Speaker
    consent_record: ConsentRecord
    preflight: PreflightReport
    enrolled_on: list[str]
    note: str | None


def enrollment_body_limit() -> int:
    """The largest enrollment request: both recordings at their limit, plus the form."""
    return 2 * settings.ENROLLMENT_MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD_BYTES


def _read_upload(role: str, upload: UploadedRecording) -> bytes:
    limit = settings.ENROLLMENT_MAX_UPLOAD_BYTES
    if upload.size is not None and upload.size > limit:
        raise UploadTooLarge(
            f"The {role} recording is {upload.size} bytes; at most {limit} bytes are accepted.",
            details={"recording": role, "limit_bytes": limit},
        )
    data = upload.read(limit + 1)
    if len(data) > limit:
        raise UploadTooLarge(
            f"The {role} recording exceeds {limit} bytes.",
            details={"recording": role, "limit_bytes": limit},
        )
    return data


def client_address_pseudonym(client_ip: str | None) -> str:
    """HMAC-SHA256 of the address keyed with SECRET_KEY: stable, not reversible without it."""
    return salted_hmac(
        "scaiecho.enrollment.client-address", client_ip or "unknown", algorithm="sha256"
    ).hexdigest()


def recording_key(tenant: Tenant, speaker_id: uuid.UUID, role: str) -> str:
    # Keys are generated here, never derived from the client's file name.
    return f"tenants/{tenant.id}/speakers/{speaker_id}/{role}"


def enroll_speaker(
    *,
    principal: ApiPrincipal,
    profile: SpeakerProfile,
    reference: UploadedRecording,
    consent: UploadedRecording,
    client_ip: str | None,
) -> EnrollmentOutcome:
    """Preflight both recordings, then store blobs and rows together or not at all."""
    tenant = principal.tenant
    reference_bytes = _read_upload("reference", reference)
    consent_bytes = _read_upload("consent", consent)

    engine = get_engine()
    report = Preflight(engine).run(
        io.BytesIO(reference_bytes),
        io.BytesIO(consent_bytes),
        tenant_gallery(tenant.id, engine.model_id, engine.model_version),
    )
    observe_preflight(report.passed, [f.code for f in report.findings])
    if not report.passed:
        record_event(
            "preflight.rejected",
            actor=principal.actor,
            tenant=tenant,
            details={
                "findings": [f.code for f in report.findings if f.severity == "error"],
                # No speaker, so no data key: a keyed pseudonym lets repeated rejections from
                # one address be told apart without keeping the address.
                "client_address_hmac": client_address_pseudonym(client_ip),
            },
        )
        raise PreflightRejected(
            "The recordings did not pass the quality preflight; nothing was stored.",
            details={
                "findings": [f.to_dict() for f in report.findings],
                "preflight": report.to_dict(),
            },
        )

    speaker_id = uuid.uuid4()
    store = _blob_store()
    written: list[str] = []
    transaction_ids: list[str] = []  # to ask what became of it if the connection is lost
    try:
        reference_blob = _put(
            store,
            recording_key(tenant, speaker_id, "reference"),
            reference_bytes,
            written,
            BlobPurpose.ENROLLMENT_REFERENCE,
        )
        consent_blob = _put(
            store,
            recording_key(tenant, speaker_id, "consent"),
            consent_bytes,
            written,
            BlobPurpose.ENROLLMENT_CONSENT,
        )
        with transaction.atomic():
            # The recordings' intents clear only if the rows that own them commit.
            blob_intents.claim(written)
            data_key = create_data_key(speaker_id=speaker_id, tenant_id=tenant.id)
            speaker = _create_speaker(
                speaker_id, principal, profile, report, reference_blob, data_key
            )
            transaction_ids.append(_current_transaction_id())
            assert report.consent.audio is not None
            consent_record = record_consent(
                tenant=tenant,
                speaker_id=speaker.id,
                api_key=principal.api_key,
                client_ip=client_ip,
                full_name=profile.consent_user_full_name,
                stated_purpose=profile.consent_stated_purpose,
                consent_text=profile.consent_text,
                recording=consent_blob,
                recording_duration_s=report.consent.audio.duration_s,
                recording_speech_s=report.consent.speech_s,
                data_key=data_key,
            )
            # Tasks leave only once the rows are committed, so a node never misses them. A
            # held enrollment goes nowhere until a person approves it (enrollment.reviews).
            scheduled = [] if report.needs_review else distribution().fan_out(speaker)
            record_event(
                "speaker.enrolled",
                actor=principal.actor,
                tenant=tenant,
                speaker_id=str(speaker.id),
                details={
                    "consent_record_id": str(consent_record.id),
                    "reference_sha256": reference_blob.sha256,
                    "consent_sha256": consent_blob.sha256,
                    "quality_grade": report.quality_grade(),
                    "warm_scheduled_on": scheduled,
                    "held_for_review": [f.code for f in report.held_findings()],
                },
            )
    except DatabaseError:
        outcome = _commit_outcome(transaction_ids[0] if transaction_ids else None)
        if outcome is CommitOutcome.ABORTED:
            _remove_blobs(store, written)
            raise
        if outcome is CommitOutcome.UNKNOWN:
            # It may yet commit: its recordings stay rather than leave a consent record
            # pointing at nothing. If it did not, their intents outlive BLOB_INTENT_GRACE_S
            # and the orphan sweeper removes them.
            logger.error(
                "enrollment %s: commit outcome unknown; recordings kept at %s", speaker_id, written
            )
            raise
        logger.warning("enrollment %s: committed, but the connection was lost", speaker_id)
        # The post-commit sends never ran; the reconciler re-sends the queued assignments.
        speaker = Speaker.objects.get(id=speaker_id)
        return EnrollmentOutcome(
            speaker=speaker,
            consent_record=ConsentRecord.objects.get(speaker=speaker),
            preflight=report,
            enrolled_on=[],
            note=HELD_NOTE if report.needs_review else COMMIT_UNCONFIRMED_NOTE,
        )
    except BaseException:
        # Only a rollback gets here: the post-commit task sends are robust (logged, never
        # raised), and the reconciler re-sends what they could not.
        _remove_blobs(store, written)
        raise

    enrolled_on = wait_for_fan_out(speaker, scheduled)
    return EnrollmentOutcome(
        speaker=speaker,
        consent_record=consent_record,
        preflight=report,
        enrolled_on=enrolled_on,
        note=_enrollment_note(report, scheduled),
    )


def _enrollment_note(report: PreflightReport, scheduled: list[str]) -> str | None:
    if report.needs_review:
        return HELD_NOTE
    return None if scheduled else NO_NODE_NOTE


def wait_for_fan_out(speaker: Speaker, scheduled: list[str]) -> list[str]:
    """Waits up to ENROLLMENT_ACK_WAIT_S for the scheduled nodes; returns those that hold the
    speaker, whose row is read again."""
    waited = time.perf_counter()
    enrolled_on = (
        distribution().wait_until_warm(speaker, scheduled, settings.ENROLLMENT_ACK_WAIT_S)
        if scheduled
        else []
    )
    if enrolled_on:
        FANOUT_LATENCY.observe(time.perf_counter() - waited)
    speaker.refresh_from_db()
    return enrolled_on


class CommitOutcome(enum.Enum):
    COMMITTED = "committed"
    ABORTED = "aborted"
    UNKNOWN = "unknown"


def _current_transaction_id() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_xact_id()::text")
        return str(cursor.fetchone()[0])


def _commit_outcome(transaction_id: str | None) -> CommitOutcome:
    """What became of the enrollment's transaction after a database call failed.

    A connection lost while COMMIT is under way leaves its outcome unknown to the client: the
    server may have committed, or may still be committing (a slow flush, a synchronous
    standby). PostgreSQL is asked on a fresh connection until the transaction is no longer
    in progress, for at most COMMIT_OUTCOME_WAIT_S.
    """
    if connection.in_atomic_block:
        return CommitOutcome.ABORTED  # an enclosing transaction rolls everything back
    if transaction_id is None:
        return CommitOutcome.ABORTED  # it failed before its first write
    connection.close()
    deadline = time.monotonic() + COMMIT_OUTCOME_WAIT_S
    while True:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_xact_status(%s::xid8)", [transaction_id])
                status = cursor.fetchone()[0]
        except DatabaseError:
            connection.close()
            status = None
        if status in ("committed", "aborted"):
            return CommitOutcome(status)
        if time.monotonic() > deadline:
            return CommitOutcome.UNKNOWN
        time.sleep(0.2)


def _blob_store() -> BlobStore:
    try:
        return get_blob_store()
    except BlobStoreError as exc:
        logger.warning("blob store unavailable: %s", exc)
        raise BlobStoreUnavailable(
            "The recording store is unavailable; nothing was stored. Try again later."
        ) from exc


def _put(
    store: BlobStore, key: str, data: bytes, written: list[str], purpose: BlobPurpose
) -> StoredBlob:
    # Registered (committed) before the write: whatever becomes of this enrollment, the
    # sweeper can find the blob. Recorded in ``written`` too: a write that fails half-way may
    # still leave an object.
    blob_intents.register(key, purpose)
    written.append(key)
    try:
        return store.put(key, data)
    except BlobStoreError as exc:
        logger.warning("blob write failed for %s: %s", key, exc)
        raise BlobStoreUnavailable(
            "The recording store is unavailable; nothing was stored. Try again later."
        ) from exc


def _remove_blobs(store: BlobStore, keys: list[str]) -> None:
    """Removes the recordings of an enrollment that rolled back; a recording that cannot be
    removed keeps its intent, and the sweeper removes it later."""
    for key in keys:
        try:
            store.delete_all_versions(key)
        except BlobStoreError:
            logger.exception("could not remove blob %s after a failed enrollment", key)
            continue
        try:
            blob_intents.settle([key])
        except DatabaseError:
            logger.warning("blob %s removed; its intent stays for the sweeper", key)


def _create_speaker(
    speaker_id: uuid.UUID,
    principal: ApiPrincipal,
    profile: SpeakerProfile,
    report: PreflightReport,
    reference_blob: StoredBlob,
    data_key: SpeakerKey,
) -> Speaker:
    reference = report.reference
    assert reference.audio is not None and reference.voiceprint is not None
    speaker = Speaker.objects.create(
        id=speaker_id,
        tenant=principal.tenant,
        display_name=profile.display_name,
        language_primary=profile.language_primary,
        description=profile.description,
        reference_blob_key=reference_blob.key,
        reference_sha256=reference_blob.sha256,
        reference_size_bytes=reference_blob.size_bytes,
        reference_duration_s=reference.audio.duration_s,
        reference_speech_s=reference.speech_s,
        embedding_model_id=report.model_id,
        embedding_model_version=report.model_version,
        preflight=report.to_dict(),
        created_by_key=principal.api_key,
        enrollment_status=(
            EnrollmentStatus.NEEDS_REVIEW if report.needs_review else EnrollmentStatus.PENDING
        ),
    )
    # Into the voiceprint store: nodes of the same model load it instead of embedding again.
    add_voiceprint(
        data_key,
        tenant_id=principal.tenant.id,
        model_id=report.model_id,
        model_version=report.model_version,
        vector=reference.voiceprint,
        computed_by=PREFLIGHT,
    )
    return speaker


# --- erasure (GDPR Art. 17) ------------------------------------------------------------


@dataclass
class ErasureResult:
    erasure: ErasureAudit
    created: bool


def erase_speaker(speaker: Speaker, *, reason: str, actor: str) -> ErasureResult:
    """Tombstones the speaker, writes the receipt and sends an eviction to every node that
    may hold the embedding; once that is committed, deletes every version of both recordings.

    A second call returns the first receipt and does nothing else.
    """
    with transaction.atomic():
        result = record_erasure(speaker, reason=reason, actor=actor)
    # Only after the commit: a rollback must never leave a speaker whose recordings are gone.
    if result.created:
        delete_erased_blobs(result.erasure)
    return result


def record_erasure(speaker: Speaker, *, reason: str, actor: str) -> ErasureResult:
    """The erasure's rows, in the caller's transaction; once it commits, the caller deletes
    the recordings with :func:`delete_erased_blobs`."""
    with transaction.atomic():
        speaker = Speaker.objects.select_for_update().get(id=speaker.id)
        existing = ErasureAudit.objects.filter(speaker=speaker).first()
        if existing is not None:
            return ErasureResult(existing, created=False)
        consents = list(ConsentRecord.objects.filter(speaker=speaker))
        node_ids = distribution().evict_everywhere(speaker)
        lifecycle.tombstone(speaker.id, actor=actor)
        # Crypto-shredding, in the tombstone's transaction: the consent records and audit
        # events keep their ciphertexts, which nothing can read any more.
        data_key_destroyed = destroy_data_key(speaker.id)
        voiceprints_deleted = delete_voiceprints(speaker.id)
        now = timezone.now()
        erasure = ErasureAudit.objects.create(
            tenant_id=speaker.tenant_id,
            speaker=speaker,
            reason=reason,
            requested_by=actor,
            erased_at=now,
            blob_keys=[speaker.reference_blob_key, *[c.recording_blob_key for c in consents]],
            consent_record_ids=[str(c.id) for c in consents],
            nodes_to_evict=node_ids,
        )
        record_event(
            "speaker.erased",
            actor=actor,
            tenant_id=str(speaker.tenant_id),
            speaker_id=str(speaker.id),
            details={
                "erasure_id": str(erasure.id),
                "reason": reason,
                "nodes_to_evict": node_ids,
                "data_key_destroyed": data_key_destroyed,
                "voiceprints_deleted": voiceprints_deleted,
            },
        )
    return ErasureResult(erasure, created=True)


def delete_erased_blobs(erasure: ErasureAudit) -> bool:
    """Deletes every version of the erasure's blobs and confirms it; a failure is confirmed too
    (the receipt shows it) and retried by the orchestrator."""
    removed_bytes = removed_versions = 0
    try:
        store = get_blob_store()
        for key in erasure.blob_keys:
            removed = store.delete_all_versions(key)
            removed_bytes += removed.bytes
            removed_versions += removed.versions
    except BlobStoreError as exc:
        logger.warning("erasure %s: blob deletion failed: %s", erasure.id, exc)
        confirm_erasure(erasure, node_id="", outcome=ErasureOutcome.BLOB_ERROR, detail=str(exc))
        return False
    confirm_erasure(
        erasure,
        node_id="",
        outcome=ErasureOutcome.BLOBS_DELETED,
        detail="every version deleted",
        bytes_deleted=removed_bytes,
        versions_deleted=removed_versions,
    )
    return True


def retry_blob_erasures(older_than_s: float = 60.0) -> int:
    """Finishes blob deletions that failed, or that a crash interrupted, after a while."""
    done = ErasureConfirmation.objects.filter(outcome=ErasureOutcome.BLOBS_DELETED).values(
        "erasure_id"
    )
    cutoff = timezone.now() - timedelta(seconds=older_than_s)
    unfinished = ErasureAudit.objects.exclude(id__in=done).filter(erased_at__lte=cutoff)
    return sum(delete_erased_blobs(erasure) for erasure in unfinished)


def erase_expired_speakers(now: datetime | None = None) -> list[str]:
    """Erases every speaker unused for longer than its tenant's retention period."""
    now = now or timezone.now()
    erased = []
    for tenant in Tenant.objects.all():
        cutoff = now - timedelta(days=tenant.retention_days)
        expired = (
            Speaker.objects.filter(tenant=tenant)
            .exclude(enrollment_status=EnrollmentStatus.EVICTED)
            .annotate(last_activity=Coalesce("last_used_at", "created_at"))
            .filter(last_activity__lt=cutoff)
        )
        for speaker in expired:
            try:
                erase_speaker(
                    speaker, reason=ErasureReason.RETENTION_EXPIRED, actor="system:retention"
                )
            except Exception:  # one failure must not stop the sweep; the next run retries it
                logger.exception("retention erasure of speaker %s failed", speaker.id)
                continue
            erased.append(str(speaker.id))
    return erased
