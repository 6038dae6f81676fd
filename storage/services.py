"""Blob write intents: every blob is registered before it is written, so that a blob whose
owning row never committed (a crash, a rollback whose clean-up failed, a commit whose outcome
stayed unknown) can still be found and removed."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection, transaction
from django.utils import timezone

from common.errors import ServiceError
from storage.models import BlobIntent, BlobPurpose


class IntentExpired(ServiceError):
    """The write took so long that the sweeper removed its blobs as orphans."""

    status_code = 503
    code = "upload_expired"


def register(key: str, purpose: BlobPurpose) -> None:
    """Records that ``key`` is about to be written, committed before this returns.

    Refused (RuntimeError) inside an open atomic block: a rollback of that block would lose
    the intent while the blob stays.
    """
    with transaction.atomic(durable=True):
        # A key written again (a retried upload) starts its grace period afresh.
        BlobIntent.objects.bulk_create(
            [BlobIntent(key=key, purpose=purpose, created_at=timezone.now())],
            update_conflicts=True,
            unique_fields=["key"],
            update_fields=["purpose", "created_at"],
        )


def claim(keys: Iterable[str]) -> None:
    """Clears the intents of the blobs a row being written owns, inside that row's
    transaction, so that the row and the cleared intents commit together.

    Raises IntentExpired when an intent is gone: the sweeper took the blob for an orphan, and
    the row must not commit pointing at nothing.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("claim() runs inside the transaction that writes the owning row")
    wanted = set(keys)
    # The DELETE locks the rows until the commit; one the sweeper holds is waited for.
    cleared, _ = BlobIntent.objects.filter(key__in=wanted).delete()
    if cleared != len(wanted):
        raise IntentExpired(
            "The upload took too long and its recordings were removed as abandoned; nothing "
            "was stored. Try again."
        )


def settle(keys: Iterable[str]) -> int:
    """Clears the intents of blobs that are gone (every version deleted); how many it cleared."""
    deleted, _ = BlobIntent.objects.filter(key__in=list(keys)).delete()
    return deleted
