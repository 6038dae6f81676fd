from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import Any

from django.db.models import QuerySet

from consent.models import (
    CLIENT_IP,
    CONSENT_TEXT,
    FULL_NAME,
    ConsentRecord,
    consent_field_context,
)
from data_keys.crypto import CiphertextRejected, SpeakerKey
from data_keys.selectors import speaker_keys, speakers_with_keys
from tenancy.permissions import ConsentFieldAccess

logger = logging.getLogger(__name__)


def consent_records_for_speaker(
    tenant_id: uuid.UUID, speaker_id: uuid.UUID
) -> QuerySet[ConsentRecord]:
    return ConsentRecord.objects.filter(tenant_id=tenant_id, speaker_id=speaker_id)


class _Unreadable(Exception):
    pass


def _opened(key: SpeakerKey, record: ConsentRecord, column: str, ciphertext: Any) -> str | None:
    if ciphertext is None:
        return None
    try:
        return key.decrypt_text(consent_field_context(record.id, column), bytes(ciphertext))
    except CiphertextRejected as exc:
        # Only someone writing to the immutable table as its owner gets here: say so loudly,
        # and show the rest of the record rather than fail the whole answer.
        logger.error("consent record %s: its %s does not decrypt (%s)", record.id, column, exc)
        raise _Unreadable from exc


def consent_record_body(
    record: ConsentRecord, key: SpeakerKey | None, erased: bool, access: ConsentFieldAccess
) -> dict[str, Any]:
    """A record as it is shown (documented by audit.api.serializers.ConsentRecordSerializer):
    personal fields only where ``access`` allows and the speaker's key still exists; null
    otherwise, with ``erased`` telling the two apart. A field whose ciphertext does not decrypt
    under the speaker's key (altered, or copied from another record) is null and listed in
    ``unreadable_fields``."""
    personal: dict[str, str | None] = {FULL_NAME: None, CONSENT_TEXT: None, CLIENT_IP: None}
    shown: list[tuple[str, Any]] = []
    if access.identity:
        shown += [
            (FULL_NAME, record.full_name_ciphertext),
            (CONSENT_TEXT, record.consent_text_ciphertext),
        ]
    if access.client_address:
        shown.append((CLIENT_IP, record.client_ip_ciphertext))
    unreadable = []
    if key is not None and not erased:
        for column, ciphertext in shown:
            try:
                personal[column] = _opened(key, record, column, ciphertext)
            except _Unreadable:
                unreadable.append(column)
    return {
        "id": record.id,
        "speaker_id": record.speaker_id,
        "consent_user_full_name": personal[FULL_NAME],
        "consent_stated_purpose": record.consent_stated_purpose,
        "consent_text": personal[CONSENT_TEXT],
        "consent_text_sha256": record.consent_text_sha256,
        "recording_blob_key": record.recording_blob_key,
        "recording_sha256": record.recording_sha256,
        "recording_size_bytes": record.recording_size_bytes,
        "recording_duration_s": record.recording_duration_s,
        "recording_speech_s": record.recording_speech_s,
        "api_key_prefix": record.api_key_prefix,
        "client_ip": personal[CLIENT_IP],
        "recorded_at": record.recorded_at,
        "erased": erased,
        "unreadable_fields": unreadable,
    }


def consent_record_bodies(
    records: Iterable[ConsentRecord], access: ConsentFieldAccess
) -> list[dict[str, Any]]:
    """Records as ``access`` may see them, with one query for their speakers' keys; a key is
    unwrapped only when a personal field is to be shown. A record whose speaker has no key
    any more (erased) reads as erased for everyone."""
    records = list(records)
    speaker_ids = {record.speaker_id for record in records}
    keys: dict[uuid.UUID, SpeakerKey] = speaker_keys(speaker_ids) if access.any else {}
    living = set(keys) if access.any else speakers_with_keys(speaker_ids)
    return [
        consent_record_body(
            record, keys.get(record.speaker_id), record.speaker_id not in living, access
        )
        for record in records
    ]
