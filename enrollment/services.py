"""Enrollment workflows: tenants and keys, and the speaker intake."""

from __future__ import annotations

import io
import logging
import secrets
import uuid
from dataclasses import dataclass
from typing import Protocol

from django.conf import settings
from django.db import transaction

from consent.models import ConsentRecord
from consent.services import record_consent
from enrollment.auth import KEY_PREFIX_LENGTH, ApiPrincipal, hash_api_key
from enrollment.blobs import BlobStore, BlobStoreError, StoredBlob, get_blob_store
from enrollment.errors import PreflightRejected, ServiceError, UploadTooLarge
from enrollment.models import ALL_SCOPES, ApiKey, Speaker, Tenant
from enrollment.preflight import Preflight, PreflightReport
from enrollment.selectors import tenant_voiceprints
from nodes.engine import get_engine
from nodes.services import fan_out_enrollment, wait_for_nodes

logger = logging.getLogger(__name__)

NO_NODE_NOTE = (
    "No pyannote node is online: the speaker stays pending until a node comes online "
    "and takes the enrollment."
)


class UploadedRecording(Protocol):
    name: str | None
    size: int | None

    def read(self, size: int = -1) -> bytes: ...


class BlobStoreUnavailable(ServiceError):
    status_code = 503
    code = "blob_store_unavailable"


def create_tenant(slug: str, name: str = "") -> Tenant:
    tenant, _ = Tenant.objects.get_or_create(slug=slug, defaults={"name": name or slug})
    return tenant


def create_api_key(tenant: Tenant, scopes: list[str], name: str = "") -> tuple[ApiKey, str]:
    """Returns the key row and the raw key, which is shown once and never stored."""
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if unknown or not scopes:
        raise ServiceError(
            f"unknown scopes {unknown}" if unknown else "at least one scope is required",
            details={"valid_scopes": ALL_SCOPES},
        )
    prefix = secrets.token_hex(KEY_PREFIX_LENGTH // 2)
    raw_key = f"se_{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey.objects.create(
        tenant=tenant,
        name=name,
        prefix=prefix,
        key_sha256=hash_api_key(raw_key),
        scopes=sorted(set(scopes)),
    )
    return key, raw_key


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
        tenant_voiceprints(tenant, engine.model_id, engine.model_version),
    )
    if not report.passed:
        raise PreflightRejected(
            "The recordings did not pass the quality preflight; nothing was stored.",
            details={
                "findings": [f.to_dict() for f in report.findings],
                "preflight": report.to_dict(),
            },
        )

    speaker_id = uuid.uuid4()
    store = get_blob_store()
    written: list[str] = []
    try:
        reference_blob = _put(
            store, recording_key(tenant, speaker_id, "reference"), reference_bytes, written
        )
        consent_blob = _put(
            store, recording_key(tenant, speaker_id, "consent"), consent_bytes, written
        )
        with transaction.atomic():
            speaker = _create_speaker(speaker_id, principal, profile, report, reference_blob)
            assert report.consent.audio is not None
            consent_record = record_consent(
                speaker=speaker,
                api_key=principal.api_key,
                client_ip=client_ip,
                full_name=profile.consent_user_full_name,
                stated_purpose=profile.consent_stated_purpose,
                consent_text=profile.consent_text,
                recording=consent_blob,
                recording_duration_s=report.consent.audio.duration_s,
                recording_speech_s=report.consent.speech_s,
            )
            # Tasks leave only once the rows are committed, so a node never misses them.
            scheduled = fan_out_enrollment(speaker)
    except BaseException:
        _remove_blobs(store, written)
        raise

    enrolled_on = (
        wait_for_nodes(speaker, scheduled, settings.ENROLLMENT_ACK_WAIT_S) if scheduled else []
    )
    speaker.refresh_from_db()
    return EnrollmentOutcome(
        speaker=speaker,
        consent_record=consent_record,
        preflight=report,
        enrolled_on=enrolled_on,
        note=None if scheduled else NO_NODE_NOTE,
    )


def _put(store: BlobStore, key: str, data: bytes, written: list[str]) -> StoredBlob:
    # Recorded before the write: a write that fails half-way may still leave an object.
    written.append(key)
    try:
        return store.put(key, data)
    except BlobStoreError as exc:
        logger.warning("blob write failed for %s: %s", key, exc)
        raise BlobStoreUnavailable(
            "The recording store is unavailable; nothing was stored. Try again later."
        ) from exc


def _remove_blobs(store: BlobStore, keys: list[str]) -> None:
    for key in keys:
        try:
            store.delete_all_versions(key)
        except BlobStoreError:
            logger.exception("could not remove blob %s after a failed enrollment", key)


def _create_speaker(
    speaker_id: uuid.UUID,
    principal: ApiPrincipal,
    profile: SpeakerProfile,
    report: PreflightReport,
    reference_blob: StoredBlob,
) -> Speaker:
    reference = report.reference
    assert reference.audio is not None and reference.voiceprint is not None
    return Speaker.objects.create(
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
        voiceprint=[float(x) for x in reference.voiceprint],
        embedding_model_id=report.model_id,
        embedding_model_version=report.model_version,
        preflight=report.to_dict(),
        created_by_key=principal.api_key,
    )
