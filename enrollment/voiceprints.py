"""The voiceprint store: each speaker's vector per embedding model, encrypted under the
speaker's data key and stamped with the SHA-256 of its plaintext float32 bytes.

A ciphertext is bound to the speaker and the model (id and version): copied to another speaker
or model it does not decrypt; a stamp that does not match what decrypted is refused too.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db import connection, transaction

from data_keys.crypto import CiphertextRejected, SpeakerKey, field_context
from data_keys.models import DataKey
from data_keys.selectors import speaker_key, speaker_keys
from data_keys.wrapping import unwrap_data_key
from enrollment.models import EnrollmentStatus, Speaker, Voiceprint

logger = logging.getLogger(__name__)

VOICEPRINT_DTYPE = np.dtype("<f4")
PREFLIGHT = "preflight"


class VoiceprintRefused(Exception):
    """A stored voiceprint that does not decrypt under its speaker's key for its model, or
    whose plaintext does not match its stamp: altered, or copied from another row."""


@dataclass(frozen=True)
class SealedVoiceprint:
    ciphertext: bytes
    vector_sha256: str


def node_author(node_id: str) -> str:
    return f"node:{node_id}"


def voiceprint_context(speaker_id: uuid.UUID | str, model_id: str, model_version: str) -> str:
    # Length-prefixed, so that no (id, version) pair reads as another.
    return field_context(
        "enrollment_voiceprint", speaker_id, f"{len(model_id)}:{model_id}:{model_version}"
    )


def seal_voiceprint(
    key: SpeakerKey, model_id: str, model_version: str, vector: Sequence[float] | np.ndarray
) -> SealedVoiceprint:
    plain = np.asarray(vector, dtype=VOICEPRINT_DTYPE).tobytes()
    context = voiceprint_context(key.speaker_id, model_id, model_version)
    return SealedVoiceprint(key.encrypt(context, plain), hashlib.sha256(plain).hexdigest())


def open_voiceprint(
    key: SpeakerKey, model_id: str, model_version: str, ciphertext: bytes, vector_sha256: str
) -> np.ndarray:
    """The vector; :class:`VoiceprintRefused` when it does not decrypt or match its stamp."""
    context = voiceprint_context(key.speaker_id, model_id, model_version)
    try:
        plain = key.decrypt(context, bytes(ciphertext))
    except CiphertextRejected as exc:
        raise VoiceprintRefused(f"voiceprint of {key.speaker_id}: {exc}") from exc
    if hashlib.sha256(plain).hexdigest() != vector_sha256:
        raise VoiceprintRefused(f"voiceprint of {key.speaker_id}: its stamp does not match")
    return np.frombuffer(plain, dtype=VOICEPRINT_DTYPE).astype(np.float32)


def add_voiceprint(
    key: SpeakerKey,
    *,
    tenant_id: uuid.UUID,
    model_id: str,
    model_version: str,
    vector: Sequence[float] | np.ndarray,
    computed_by: str,
) -> Voiceprint:
    """Stores a voiceprint in the caller's transaction (the preflight's, at intake)."""
    sealed = seal_voiceprint(key, model_id, model_version, vector)
    return Voiceprint.objects.create(
        speaker_id=key.speaker_id,
        tenant_id=tenant_id,
        model_id=model_id,
        model_version=model_version,
        ciphertext=sealed.ciphertext,
        vector_sha256=sealed.vector_sha256,
        computed_by=computed_by,
    )


def store_computed_voiceprint(
    speaker_id: uuid.UUID | str,
    *,
    model_id: str,
    model_version: str,
    vector: np.ndarray,
    computed_by: str,
    replace: bool,
) -> bool:
    """A node's voiceprint, stored unless one of that model is there already (``replace``: a
    refused row is replaced). False when the speaker was erased: under the speaker's row lock,
    which erasure takes too, so no vector is stored after an erasure deleted the others."""
    with transaction.atomic():
        speaker = (
            Speaker.objects.select_for_update()
            .exclude(enrollment_status=EnrollmentStatus.EVICTED)
            .filter(id=speaker_id)
            .values_list("tenant_id", flat=True)
            .first()
        )
        key = speaker_key(speaker_id) if speaker is not None else None
        if speaker is None or key is None:
            return False
        mine = Voiceprint.objects.filter(
            speaker_id=speaker_id, model_id=model_id, model_version=model_version
        )
        if replace:
            mine.delete()
        elif mine.exists():
            return False
        add_voiceprint(
            key,
            tenant_id=speaker,
            model_id=model_id,
            model_version=model_version,
            vector=vector,
            computed_by=computed_by,
        )
    return True


def load_voiceprint(
    speaker_id: uuid.UUID | str, model_id: str, model_version: str
) -> np.ndarray | None:
    """The stored vector of that model; None when there is none (or the key is gone);
    :class:`VoiceprintRefused` for a row that does not decrypt or match its stamp."""
    row = (
        Voiceprint.objects.filter(
            speaker_id=speaker_id, model_id=model_id, model_version=model_version
        )
        .values_list("ciphertext", "vector_sha256")
        .first()
    )
    key = speaker_key(speaker_id) if row is not None else None
    if row is None or key is None:
        return None
    return open_voiceprint(key, model_id, model_version, bytes(row[0]), row[1])


@dataclass
class OpenedVoiceprints:
    vectors: dict[uuid.UUID, np.ndarray]
    refused: list[uuid.UUID]


def open_voiceprints(
    rows: Iterable[tuple[uuid.UUID, bytes | memoryview, str]], model_id: str, model_version: str
) -> OpenedVoiceprints:
    """``(speaker id, ciphertext, stamp)`` rows of one model opened with one query for their
    keys; a speaker whose key is gone (erased meanwhile) is left out, a refused row is logged."""
    rows = list(rows)
    keys = speaker_keys(pk for pk, _, _ in rows)
    opened = OpenedVoiceprints({}, [])
    for pk, ciphertext, stamp in rows:
        if pk not in keys:
            continue
        try:
            opened.vectors[pk] = open_voiceprint(
                keys[pk], model_id, model_version, bytes(ciphertext), stamp
            )
        except VoiceprintRefused as exc:
            logger.warning("refused a stored voiceprint: %s", exc)
            opened.refused.append(pk)
    return opened


@dataclass
class StoredBatch:
    """Stored voiceprints of one model opened together: row ``i`` of ``vectors`` belongs to
    ``speaker_ids[i]`` (of ``tenant_ids[i]``, enrolled from ``reference_sha256s[i]``)."""

    speaker_ids: list[uuid.UUID]
    tenant_ids: list[uuid.UUID]
    reference_sha256s: list[str]
    vectors: np.ndarray
    refused: list[uuid.UUID]


def stream_stored_voiceprints(
    model_id: str,
    model_version: str,
    statuses: Sequence[str],
    batch_size: int,
    tenant_ids: Sequence[uuid.UUID] | None = None,
) -> Iterator[StoredBatch]:
    """Every stored voiceprint of one model whose speaker is in ``statuses`` (and of one of
    ``tenant_ids``, unless None), opened a batch at a time: one query through a server-side
    cursor, each row with its speaker's wrapped data key (an erased speaker has neither key nor
    row), nothing else queried per batch."""
    sql = (
        "SELECT v.speaker_id, s.tenant_id, s.reference_sha256, v.ciphertext, v.vector_sha256, "
        "k.wrapped_key, k.wrapping_key_id "
        f"FROM {Voiceprint._meta.db_table} v "
        f"JOIN {Speaker._meta.db_table} s ON s.id = v.speaker_id "
        f"JOIN {DataKey._meta.db_table} k ON k.speaker_id = v.speaker_id "
        "WHERE v.model_id = %s AND v.model_version = %s AND s.enrollment_status = ANY(%s)"
    )
    params: list[Any] = [model_id, model_version, list(statuses)]
    if tenant_ids is not None:
        sql += " AND s.tenant_id = ANY(%s)"
        params.append(list(tenant_ids))
    with connection.chunked_cursor() as cursor:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(batch_size):
            yield _open_rows(rows, model_id, model_version)


def _open_rows(rows: list[tuple], model_id: str, model_version: str) -> StoredBatch:
    opened = StoredBatch([], [], [], np.zeros((0, 0), VOICEPRINT_DTYPE), [])
    plains = []
    for speaker_id, tenant_id, reference_sha256, ciphertext, stamp, wrapped, key_id in rows:
        key = unwrap_data_key(speaker_id, wrapped, key_id)
        try:
            plain = key.decrypt(
                voiceprint_context(speaker_id, model_id, model_version), bytes(ciphertext)
            )
        except CiphertextRejected as exc:
            logger.warning("refused a stored voiceprint: voiceprint of %s: %s", speaker_id, exc)
            opened.refused.append(speaker_id)
            continue
        if hashlib.sha256(plain).hexdigest() != stamp:
            logger.warning(
                "refused a stored voiceprint: voiceprint of %s: its stamp does not match",
                speaker_id,
            )
            opened.refused.append(speaker_id)
            continue
        plains.append(plain)
        opened.speaker_ids.append(speaker_id)
        opened.tenant_ids.append(tenant_id)
        opened.reference_sha256s.append(reference_sha256)
    if plains:
        # One buffer for the batch: each speaker's vector is a row of it, not an array of its own.
        opened.vectors = np.frombuffer(b"".join(plains), VOICEPRINT_DTYPE).reshape(len(plains), -1)
    return opened


def delete_voiceprints(speaker_id: uuid.UUID | str) -> int:
    """Erasure: every stored voiceprint of the speaker, in the caller's transaction."""
    deleted, _ = Voiceprint.objects.filter(speaker_id=speaker_id).delete()
    return deleted
