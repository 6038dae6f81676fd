from __future__ import annotations

import hashlib
import uuid

from common.blobs import StoredBlob
from consent.models import (
    CLIENT_IP,
    CONSENT_TEXT,
    FULL_NAME,
    ConsentRecord,
    consent_field_context,
)
from data_keys.crypto import SpeakerKey
from data_keys.selectors import speaker_key
from data_keys.services import DataKeyMissing
from tenancy.models import ApiKey, Tenant


def record_consent(
    *,
    tenant: Tenant,
    speaker_id: uuid.UUID,
    api_key: ApiKey,
    client_ip: str | None,
    full_name: str,
    stated_purpose: str,
    consent_text: str,
    recording: StoredBlob,
    recording_duration_s: float,
    recording_speech_s: float,
    data_key: SpeakerKey | None = None,
) -> ConsentRecord:
    """Stores the record with its personal fields encrypted under the speaker's data key
    (``data_key``, else the one stored for the speaker)."""
    key = data_key or speaker_key(speaker_id)
    if key is None or key.speaker_id != speaker_id:
        raise DataKeyMissing(f"speaker {speaker_id} has no data key to record consent under")
    record_id = uuid.uuid4()

    def sealed(column: str, value: str) -> bytes:
        return key.encrypt_text(consent_field_context(record_id, column), value)

    return ConsentRecord.objects.create(
        id=record_id,
        tenant=tenant,
        speaker_id=speaker_id,
        full_name_ciphertext=sealed(FULL_NAME, full_name),
        consent_stated_purpose=stated_purpose,
        consent_text_ciphertext=sealed(CONSENT_TEXT, consent_text),
        consent_text_sha256=hashlib.sha256(consent_text.encode()).hexdigest(),
        recording_blob_key=recording.key,
        recording_sha256=recording.sha256,
        recording_size_bytes=recording.size_bytes,
        recording_duration_s=recording_duration_s,
        recording_speech_s=recording_speech_s,
        api_key=api_key,
        api_key_prefix=api_key.prefix,
        client_ip_ciphertext=sealed(CLIENT_IP, client_ip) if client_ip else None,
    )
