"""Signed checkpoints of the audit trail's head, kept in the blob store, outside the database.

A checkpoint signs the newest event's sequence number and hash, when it was made, its own number
in the series and the digest of the checkpoint before it. Whoever holds the database's
credentials can cut the chain's tail or rewrite it with recomputed hashes, but cannot sign a
checkpoint for the result: the verifier finds that the trail no longer holds what was signed.

Each checkpoint is stored as ``<prefix><counter>.json``, then copied to ``<prefix>latest.json``;
a reader starts at that copy and looks one number further, so a checkpoint whose copy was never
written (a crash in between) is found all the same. The maker runs on the orchestrator's beat
(``audit.tasks.checkpoint_trail``), never in the appender's transaction, so appending an event
costs no more than before.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.utils import timezone

from audit import signing
from audit.chain import GENESIS_HASH, ChainRow, chain_rows
from audit.models import AuditEvent
from common.blobs import BlobMissing, BlobStore, BlobStoreError, get_blob_store
from common.errors import ServiceError

logger = logging.getLogger(__name__)

# One maker at a time; a lock of its own, so that appenders never wait for it.
CHECKPOINT_LOCK_KEY = 0x5CA1EC0B
# How many of the newest checkpoints a verification reads and checks against the trail. Each new
# checkpoint is signed only over a trail that still holds the one before it, so the newest
# vouches for the older ones; the few before it are checked too, at one read each.
RECENT_CHECKPOINTS = 3
# How far past the latest-checkpoint copy a reader looks for newer checkpoints.
FORWARD_PROBES = 64
LATEST_NAME = "latest.json"

# What a verdict says, without sequence numbers (tenants read it); the detail names them.
TRUNCATED = "the trail ends before its last signed checkpoint (events were removed from its tail)"
REWRITTEN = "an event does not have the hash a signed checkpoint holds (the trail was rewritten)"
SIGNED_EVENT_MISSING = "an event a signed checkpoint holds is missing (the trail was rewritten)"
BAD_SIGNATURE = "a checkpoint's signature does not verify (it was forged or altered)"
UNKNOWN_KEY = "a checkpoint is signed by a key this service does not know"
NO_VERIFY_KEY = "checkpoints exist but no key to verify them is configured (AUDIT_VERIFY_KEY)"
CHECKPOINT_MISSING = "a checkpoint is missing or unreadable (checkpoints were removed or altered)"
SERIES_BROKEN = "a checkpoint does not follow from the one before it (checkpoints were replaced)"
KEY_UNREADABLE = "the key to verify checkpoints with is misconfigured"


class CheckpointsUnavailable(ServiceError):
    status_code = 503
    code = "blob_store_unavailable"


class CheckpointRefused(Exception):
    """The trail no longer holds what the last checkpoint signed (or the series is broken):
    nothing is signed over it."""


@dataclass(frozen=True)
class Checkpoint:
    counter: int
    seq: int
    hash: str
    made_at: datetime
    previous: str | None
    key_id: str
    signed: bytes

    @property
    def digest(self) -> str:
        """What the next checkpoint names as its ``previous``."""
        return hashlib.sha256(self.signed).hexdigest()


@dataclass(frozen=True)
class CheckpointSeries:
    """The newest checkpoints, newest first, each with a good signature and following from the
    next older one; or the problem that stopped the reading."""

    recent: tuple[Checkpoint, ...] = ()
    problem: str | None = None
    detail: str | None = None

    @property
    def latest(self) -> Checkpoint | None:
        return self.recent[0] if self.recent else None


class _Broken(Exception):
    def __init__(self, problem: str, detail: str):
        super().__init__(detail)
        self.problem = problem
        self.detail = detail


def _blob_key(counter: int | None) -> str:
    name = LATEST_NAME if counter is None else f"{counter:012d}.json"
    return f"{settings.AUDIT_CHECKPOINT_PREFIX}{name}"


def _signed_bytes(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _store() -> BlobStore:
    try:
        return get_blob_store()
    except BlobStoreError as exc:
        raise _unavailable(exc) from exc


def _unavailable(exc: BlobStoreError) -> CheckpointsUnavailable:
    logger.warning("audit checkpoints: blob store failed: %s", exc)
    return CheckpointsUnavailable(
        "The blob store that keeps the audit trail's checkpoints is unavailable; try again later."
    )


def _parse(data: bytes, where: str) -> tuple[Checkpoint, bytes]:
    try:
        document = json.loads(data)
        payload = document["checkpoint"]
        previous = payload["previous"]
        if previous is not None and not isinstance(previous, str):
            raise TypeError("previous is neither a digest nor null")
        checkpoint = Checkpoint(
            counter=int(payload["counter"]),
            seq=int(payload["seq"]),
            hash=str(payload["hash"]),
            made_at=datetime.fromisoformat(payload["made_at"]),
            previous=previous,
            key_id=str(payload["key_id"]),
            signed=_signed_bytes(payload),
        )
        signature = base64.b64decode(document["signature"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise _Broken(CHECKPOINT_MISSING, f"{where} is malformed ({exc})") from exc
    return checkpoint, signature


def _load(
    store: BlobStore, keys: dict[str, Ed25519PublicKey], counter: int | None
) -> Checkpoint | None:
    """Checkpoint ``counter`` (None: the latest copy) with a good signature, or None if absent."""
    where = "the latest-checkpoint copy" if counter is None else f"checkpoint #{counter}"
    try:
        data = store.get(_blob_key(counter))
    except BlobMissing:
        return None
    except BlobStoreError as exc:
        raise _unavailable(exc) from exc
    checkpoint, signature = _parse(data, where)
    if not keys:
        raise _Broken(NO_VERIFY_KEY, f"{where} exists, but no verify key is configured")
    key = keys.get(checkpoint.key_id)
    if key is None:
        raise _Broken(
            UNKNOWN_KEY, f"{where} is signed by key {checkpoint.key_id}, not by {sorted(keys)}"
        )
    try:
        key.verify(signature, checkpoint.signed)
    except InvalidSignature as exc:
        raise _Broken(BAD_SIGNATURE, f"the signature of {where} does not verify") from exc
    if counter is not None and checkpoint.counter != counter:
        raise _Broken(SERIES_BROKEN, f"{where} says it is #{checkpoint.counter}")
    return checkpoint


def _follows(newer: Checkpoint, older: Checkpoint) -> None:
    if newer.previous != older.digest or newer.seq < older.seq:
        raise _Broken(
            SERIES_BROKEN, f"checkpoint #{newer.counter} does not follow from #{older.counter}"
        )


def _first(checkpoint: Checkpoint) -> None:
    if checkpoint.previous is not None:
        raise _Broken(SERIES_BROKEN, "checkpoint #1 names a checkpoint before it")


def read_series() -> CheckpointSeries:
    """The newest checkpoints, checked; raises CheckpointsUnavailable when the store fails."""
    store = _store()
    try:
        keys = signing.verify_keys()
    except ImproperlyConfigured as exc:
        return CheckpointSeries(problem=KEY_UNREADABLE, detail=str(exc))
    try:
        latest = _load(store, keys, None) or _load(store, keys, 1)
        if latest is None:
            return CheckpointSeries()
        for _ in range(FORWARD_PROBES):
            newer = _load(store, keys, latest.counter + 1)
            if newer is None:
                break
            _follows(newer, latest)
            latest = newer
        else:
            raise _Broken(
                CHECKPOINT_MISSING,
                f"more than {FORWARD_PROBES} checkpoints are newer than the latest-checkpoint copy",
            )
        recent = [latest]
        while len(recent) < RECENT_CHECKPOINTS and recent[-1].counter > 1:
            wanted = recent[-1].counter - 1
            older = _load(store, keys, wanted)
            if older is None:
                raise _Broken(CHECKPOINT_MISSING, f"checkpoint #{wanted} is missing")
            _follows(recent[-1], older)
            recent.append(older)
        if recent[-1].counter == 1:
            _first(recent[-1])
    except _Broken as broken:
        return CheckpointSeries(problem=broken.problem, detail=broken.detail)
    return CheckpointSeries(tuple(recent))


@contextmanager
def _maker_lock() -> Iterator[bool]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [CHECKPOINT_LOCK_KEY])
        held = bool(cursor.fetchone()[0])
    try:
        yield held
    finally:
        if held:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [CHECKPOINT_LOCK_KEY])


def _due(latest: Checkpoint | None, now: datetime) -> bool:
    """AUDIT_CHECKPOINT_EVERY_EVENTS events, or any event and AUDIT_CHECKPOINT_INTERVAL_S,
    since the last checkpoint."""
    newer = AuditEvent.objects.all()
    if latest is not None:
        newer = newer.filter(seq__gt=latest.seq)
    if not newer.exists():
        return False
    if latest is None:
        return True
    if now - latest.made_at >= timedelta(seconds=settings.AUDIT_CHECKPOINT_INTERVAL_S):
        return True
    every = settings.AUDIT_CHECKPOINT_EVERY_EVENTS
    return newer.order_by("seq")[:every].count() >= every


def _checked_head(latest: Checkpoint | None) -> ChainRow | None:
    """The newest event, once every link since the last checkpoint holds; else refused."""
    rows = chain_rows(latest.seq if latest else None)
    expected_prev = GENESIS_HASH
    if latest is not None:
        signed = next(rows, None)
        if signed is None or signed.seq != latest.seq or signed.hash != latest.hash:
            raise CheckpointRefused(
                f"event #{latest.seq} no longer holds what checkpoint #{latest.counter} signed"
            )
        expected_prev = signed.hash
    head = None
    for row in rows:
        problem = row.problem(expected_prev)
        if problem:
            raise CheckpointRefused(f"event #{row.seq}: {problem}")
        expected_prev = row.hash
        head = row
    return head


def _sign(
    store: BlobStore,
    key: Ed25519PrivateKey,
    latest: Checkpoint | None,
    head: ChainRow,
    now: datetime,
) -> Checkpoint:
    counter = latest.counter + 1 if latest else 1
    payload: dict[str, Any] = {
        "counter": counter,
        "seq": head.seq,
        "hash": head.hash,
        "made_at": now.isoformat(),
        "previous": latest.digest if latest else None,
        "key_id": signing.key_id(key.public_key()),
    }
    signed = _signed_bytes(payload)
    document = json.dumps(
        {"checkpoint": payload, "signature": base64.b64encode(key.sign(signed)).decode()},
        sort_keys=True,
    ).encode()
    try:
        store.put(_blob_key(counter), document)
        store.put(_blob_key(None), document)
    except BlobStoreError as exc:
        raise _unavailable(exc) from exc
    checkpoint, _ = _parse(document, "the new checkpoint")
    logger.info(
        "audit checkpoint #%d signed event #%d (key %s)",
        checkpoint.counter,
        checkpoint.seq,
        checkpoint.key_id,
    )
    return checkpoint


def make_checkpoint(now: datetime | None = None) -> Checkpoint | None:
    """Signs the trail's head when a checkpoint is due (see ``_due``); None when none was due,
    or another maker is at work. Raises CheckpointRefused over a trail or series that does not
    hold, and ImproperlyConfigured without a signing key."""
    key = signing.signing_key()
    if key is None:
        raise ImproperlyConfigured(
            "No audit signing key on this process: set AUDIT_SIGNING_KEY or AUDIT_SIGNING_KEY_FILE"
        )
    now = now or timezone.now()
    with _maker_lock() as held:
        if not held:
            return None
        series = read_series()
        if series.problem:
            raise CheckpointRefused(series.detail or series.problem)
        if not _due(series.latest, now):
            return None
        head = _checked_head(series.latest)
        if head is None:
            return None
        return _sign(_store(), key, series.latest, head, now)
