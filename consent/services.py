from __future__ import annotations

import hashlib
import uuid

from common.blobs import StoredBlob
from consent.models import ConsentRecord
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
) -> ConsentRecord:
    return ConsentRecord.objects.create(
        tenant=tenant,
        speaker_id=speaker_id,
        consent_user_full_name=full_name,
        consent_stated_purpose=stated_purpose,
        consent_text=consent_text,
        consent_text_sha256=hashlib.sha256(consent_text.encode()).hexdigest(),
        recording_blob_key=recording.key,
        recording_sha256=recording.sha256,
        recording_size_bytes=recording.size_bytes,
        recording_duration_s=recording_duration_s,
        recording_speech_s=recording_speech_s,
        api_key=api_key,
        api_key_prefix=api_key.prefix,
        client_ip=client_ip,
    )
