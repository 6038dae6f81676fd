"""Creating, destroying and re-wrapping the speakers' data keys."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import transaction

from data_keys.crypto import SpeakerKey
from data_keys.models import DataKey
from data_keys.selectors import speaker_key
from data_keys.wrapping import (
    UnknownWrappingKey,
    get_key_wrapper,
    new_wrapped_data_key,
    unwrap_data_key,
)

logger = logging.getLogger(__name__)

REWRAP_BATCH_SIZE = 500


class DataKeyMissing(Exception):
    """The speaker has no data key: never made, or destroyed by erasure."""


def check_key_encryption_key() -> None:
    """Called by the launcher as the service starts: the configured KEK must load (a local run
    generates it here; anywhere else ImproperlyConfigured says what is missing). Data keys
    wrapped by a KEK this process lacks (a rotation's retired key left out) are logged."""
    wrapper = get_key_wrapper()
    stored = DataKey.objects.values_list("wrapping_key_id", flat=True).distinct()
    unknown = sorted(key_id for key_id in stored if not wrapper.knows(key_id))
    if unknown:
        logger.error(
            "data keys wrapped by %s cannot be unwrapped with this configuration: add that "
            "key-encryption key to DATA_KEY_ENCRYPTION_KEYS_RETIRED",
            ", ".join(unknown),
        )


def create_data_key(*, speaker_id: uuid.UUID, tenant_id: uuid.UUID) -> SpeakerKey:
    """Makes and stores the speaker's data key (in the caller's transaction); returns it
    unwrapped, so that the caller encrypts without reading it back."""
    key, wrapped, key_id = new_wrapped_data_key(speaker_id)
    DataKey.objects.create(
        speaker_id=speaker_id, tenant_id=tenant_id, wrapped_key=wrapped, wrapping_key_id=key_id
    )
    return key


def destroy_data_key(speaker_id: uuid.UUID | str) -> bool:
    """Deletes the speaker's data key (crypto-shredding); True when there was one."""
    deleted, _ = DataKey.objects.filter(speaker_id=speaker_id).delete()
    return deleted > 0


def encrypt_for_speaker(speaker_id: uuid.UUID | str, context: str, plaintext: bytes) -> bytes:
    """One field encrypted under the speaker's key; :class:`DataKeyMissing` once it is gone."""
    key = speaker_key(speaker_id)
    if key is None:
        raise DataKeyMissing(f"speaker {speaker_id} has no data key")
    return key.encrypt(context, plaintext)


@dataclass
class RewrapReport:
    current_key_id: str
    rewrapped: int = 0
    already_current: int = 0
    # Data keys that could not be unwrapped, by the id of the key that wrapped them.
    unreadable: dict[str, int] = field(default_factory=dict)


def rewrap_data_keys(
    batch_size: int = REWRAP_BATCH_SIZE, on_batch: Callable[[int], None] | None = None
) -> RewrapReport:
    """Re-wraps every data key not wrapped by the current KEK, one transaction per batch.

    Idempotent: a second run finds nothing to do; an interrupted run resumes where it stopped.
    Keys wrapped by a KEK this process lacks are counted in ``unreadable`` and left as they are.
    """
    wrapper = get_key_wrapper()
    report = RewrapReport(current_key_id=wrapper.current_key_id)
    after: uuid.UUID | None = None
    while True:
        with transaction.atomic():
            batch = DataKey.objects.select_for_update().exclude(
                wrapping_key_id=wrapper.current_key_id
            )
            if after is not None:
                batch = batch.filter(speaker_id__gt=after)
            rows = list(batch.order_by("speaker_id")[:batch_size])
            if not rows:
                break
            changed = []
            for row in rows:
                try:
                    key = unwrap_data_key(row.speaker_id, row.wrapped_key, row.wrapping_key_id)
                except UnknownWrappingKey:
                    report.unreadable[row.wrapping_key_id] = (
                        report.unreadable.get(row.wrapping_key_id, 0) + 1
                    )
                    continue
                row.wrapped_key = wrapper.wrap(key.key, speaker_id=row.speaker_id)
                row.wrapping_key_id = wrapper.current_key_id
                changed.append(row)
            DataKey.objects.bulk_update(changed, ["wrapped_key", "wrapping_key_id"])
            report.rewrapped += len(changed)
            after = rows[-1].speaker_id
        if on_batch is not None:
            on_batch(len(changed))
    report.already_current = (
        DataKey.objects.filter(wrapping_key_id=wrapper.current_key_id).count() - report.rewrapped
    )
    return report
