"""The stored voiceprint: its float32 bytes, encrypted under the speaker's data key."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

import numpy as np

from data_keys.crypto import SpeakerKey, field_context
from data_keys.selectors import speaker_keys

VOICEPRINT_DTYPE = np.dtype("<f4")


def voiceprint_context(speaker_id: uuid.UUID | str) -> str:
    return field_context("enrollment_speaker", speaker_id, "voiceprint")


def seal_voiceprint(key: SpeakerKey, vector: Sequence[float] | np.ndarray) -> bytes:
    plain = np.asarray(vector, dtype=VOICEPRINT_DTYPE).tobytes()
    return key.encrypt(voiceprint_context(key.speaker_id), plain)


def open_voiceprint(key: SpeakerKey, ciphertext: bytes) -> np.ndarray:
    plain = key.decrypt(voiceprint_context(key.speaker_id), bytes(ciphertext))
    return np.frombuffer(plain, dtype=VOICEPRINT_DTYPE).astype(np.float32)


def open_voiceprints(
    rows: Iterable[tuple[uuid.UUID, bytes | memoryview | None]],
) -> dict[uuid.UUID, np.ndarray]:
    """The voiceprints of ``(speaker id, ciphertext)`` rows, with one query for their keys;
    a speaker without one, or whose key is gone (erased meanwhile), is left out."""
    sealed = [(pk, bytes(ciphertext)) for pk, ciphertext in rows if ciphertext is not None]
    keys = speaker_keys(pk for pk, _ in sealed)
    return {pk: open_voiceprint(keys[pk], ciphertext) for pk, ciphertext in sealed if pk in keys}
