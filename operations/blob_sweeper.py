"""The orphan sweeper: removes recordings that no row owns, so that no erasure could reach.

Every recording is registered as a blob intent before it is written (``storage/services.py``);
the intent is cleared when the row that owns the blob commits, or once the blob is removed. An
intent older than ``BLOB_INTENT_GRACE_S`` (longer than any enrollment or upload takes) names a
blob whose owner never committed: an enrollment whose commit outcome stayed unknown and that
did not commit, a rolled-back enrollment whose clean-up failed with the store, an upload whose
process died before its job row. The sweeper deletes every version of such a blob and its
intent; one that cannot be deleted keeps its intent for the next run. It also removes the
``.partial`` files that a write killed mid-way left in the local store. Each run that finds
something writes one ``storage.orphans_swept`` audit event listing it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import record_event
from common.blobs import BlobStoreError, LocalBlobStore, get_blob_store
from consent.models import ConsentRecord
from diarization.models import DiarizationJob
from enrollment.models import Speaker
from storage.models import BlobIntent

ACTOR = "system:blob-sweeper"
# Intents looked at per run (the oldest first); the next run takes the rest.
SWEEP_BATCH = 500
# No deletion starts after this long: with the store stalling, each one waits out the S3
# timeouts, and a run must end well within the broker's visibility timeout.
SWEEP_TIME_BUDGET_S = 300.0


@dataclass
class SweepReport:
    removed: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    # Intents whose blob a row does own: cleared, the blob stays.
    owned: list[str] = field(default_factory=list)
    partials_removed: list[str] = field(default_factory=list)
    partials_failed: list[str] = field(default_factory=list)

    def found_anything(self) -> bool:
        return any(
            (self.removed, self.failed, self.owned, self.partials_removed, self.partials_failed)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "removed": self.removed,
            "failed": self.failed,
            "owned": self.owned,
            "partials_removed": self.partials_removed,
            "partials_failed": self.partials_failed,
        }


def _owned_keys(keys: list[str]) -> set[str]:
    """Those of ``keys`` that a committed row points at."""
    return (
        set(
            Speaker.objects.filter(reference_blob_key__in=keys).values_list(
                "reference_blob_key", flat=True
            )
        )
        | set(
            ConsentRecord.objects.filter(recording_blob_key__in=keys).values_list(
                "recording_blob_key", flat=True
            )
        )
        | set(
            DiarizationJob.objects.filter(audio_blob_key__in=keys).values_list(
                "audio_blob_key", flat=True
            )
        )
    )


def sweep_orphan_blobs(now: datetime | None = None) -> SweepReport:
    """Removes every blob whose intent is older than ``BLOB_INTENT_GRACE_S`` and that no row
    owns (every version), and the local store's stale ``.partial`` files; says what it did.

    Raises BlobStoreError when the store cannot be reached at all.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.BLOB_INTENT_GRACE_S)
    store = get_blob_store()
    report = SweepReport()
    stale = list(
        BlobIntent.objects.filter(created_at__lte=cutoff)
        .order_by("created_at")
        .values_list("key", flat=True)[:SWEEP_BATCH]
    )
    # Read before the intents are locked: a row that commits later claims (deletes) its
    # intent first, and the lock below then finds nothing to sweep.
    owned = _owned_keys(stale)
    deadline = time.monotonic() + SWEEP_TIME_BUDGET_S
    for key in stale:
        if time.monotonic() > deadline:
            break
        with transaction.atomic():
            # Held until the blob is gone: an owner's claim waits, then finds no intent and
            # rolls back rather than commit a row pointing at nothing.
            intent = (
                BlobIntent.objects.select_for_update(skip_locked=True)
                .filter(key=key, created_at__lte=cutoff)
                .first()
            )
            if intent is None:
                continue  # claimed, settled or written again meanwhile
            if key in owned:
                intent.delete()
                report.owned.append(key)
                continue
            try:
                removal = store.delete_all_versions(key)
            except BlobStoreError as exc:
                report.failed.append({"key": key, "purpose": intent.purpose, "error": str(exc)})
                continue
            intent.delete()
            report.removed.append(
                {
                    "key": key,
                    "purpose": intent.purpose,
                    "versions": removal.versions,
                    "bytes": removal.bytes,
                }
            )
    if isinstance(store, LocalBlobStore):
        partials = store.remove_stale_partials(cutoff.timestamp())
        report.partials_removed = partials.removed
        report.partials_failed = partials.failed
    if report.found_anything():
        record_event(
            "storage.orphans_swept",
            actor=ACTOR,
            details={**report.to_dict(), "grace_s": settings.BLOB_INTENT_GRACE_S},
        )
    return report
