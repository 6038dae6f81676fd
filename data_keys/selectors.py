"""Reading a speaker's data key: None once erasure destroyed it."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from data_keys.crypto import SpeakerKey
from data_keys.models import DataKey
from data_keys.wrapping import unwrap_data_key


def _as_uuid(value: uuid.UUID | str) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def speaker_key(speaker_id: uuid.UUID | str) -> SpeakerKey | None:
    """The speaker's unwrapped data key; None when it was destroyed (the speaker is erased)."""
    row = (
        DataKey.objects.filter(speaker_id=speaker_id)
        .values_list("wrapped_key", "wrapping_key_id")
        .first()
    )
    if row is None:
        return None
    return unwrap_data_key(_as_uuid(speaker_id), row[0], row[1])


def speaker_keys(speaker_ids: Iterable[uuid.UUID | str]) -> dict[uuid.UUID, SpeakerKey]:
    """The data keys of those speakers that still have one, in one query."""
    ids = {_as_uuid(s) for s in speaker_ids}
    if not ids:
        return {}
    rows = DataKey.objects.filter(speaker_id__in=ids).values_list(
        "speaker_id", "wrapped_key", "wrapping_key_id"
    )
    return {pk: unwrap_data_key(pk, wrapped, key_id) for pk, wrapped, key_id in rows}


def speakers_with_keys(speaker_ids: Iterable[uuid.UUID | str]) -> set[uuid.UUID]:
    """Which of those speakers still have a data key (nothing is unwrapped)."""
    ids = {_as_uuid(s) for s in speaker_ids}
    if not ids:
        return set()
    return set(DataKey.objects.filter(speaker_id__in=ids).values_list("speaker_id", flat=True))


def decrypt_for_speaker(
    speaker_id: uuid.UUID | str, context: str, ciphertext: bytes | None
) -> bytes | None:
    """The plaintext of one field; None when there is none or the speaker's key is gone."""
    if ciphertext is None:
        return None
    key = speaker_key(speaker_id)
    return None if key is None else key.decrypt(context, bytes(ciphertext))
