"""The node side: what a pyannote node does with the work sent to it (warm, evict, start)."""

from __future__ import annotations

import io
import logging
import random
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from audit.models import ErasureAudit, ErasureOutcome
from audit.services import confirm_erasure
from common.audio import AudioRejected, decode_audio
from common.blobs import BlobMissing, BlobStoreError, get_blob_store, sha256_hex
from enrollment import lifecycle
from enrollment.models import WARMABLE_STATUSES, EnrollmentStatus, Speaker
from enrollment.voiceprints import (
    VoiceprintRefused,
    load_voiceprint,
    node_author,
    store_computed_voiceprint,
    stream_stored_voiceprints,
)
from nodes import pools, registry
from nodes.models import AssignmentState, Node, NodeAssignment
from nodes.runtime import GalleryEntry, NodeRuntime
from nodes.services.orchestrator import schedule_warm
from voice.engines import EmbeddingEngine
from voice.vad import get_vad, speech_only

logger = logging.getLogger(__name__)

# Stored voiceprints a starting node opens and records per transaction (and Redis pipeline).
LOAD_BATCH = 1000


class NodeWorkError(Exception):
    """Warming failed; ``permanent`` errors are not retried."""

    def __init__(self, code: str, message: str, *, permanent: bool):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.permanent = permanent


def start_node(runtime: NodeRuntime) -> int:
    """Registers a booting node, drops what its previous boot held, loads the stored
    voiceprints of its model and queues the warm-up of every other speaker, all of them of
    its pool's tenants.

    Returns how many speakers were queued for this node.
    """
    now = timezone.now()
    Node.objects.update_or_create(
        node_id=runtime.node_id,
        defaults={
            "engine": runtime.engine.engine_name,
            "model_id": runtime.engine.model_id,
            "model_version": runtime.engine.model_version,
            "boot_id": runtime.boot_id,
            "host": runtime.host,
            "pid": runtime.pid,
            "booted_at": now,
            "last_seen_at": now,
        },
    )
    registry.forget_node_warmth(runtime.node_id)
    # This boot holds nothing yet, so every eviction still owed by this node is done.
    for speaker_id in NodeAssignment.objects.filter(
        node_id=runtime.node_id, state=AssignmentState.EVICTING
    ).values_list("speaker_id", flat=True):
        evict_here(runtime, str(speaker_id))
    release_outside_pool(runtime)
    started = time.perf_counter()
    loaded = load_gallery(runtime)
    logger.info(
        "node %s loaded %d stored voiceprints in %.2f s (%d refused)",
        runtime.node_id,
        loaded.count,
        time.perf_counter() - started,
        loaded.refused,
    )
    with transaction.atomic():
        # What the store did not give (no vector of this model, a refused one, or enrolled
        # while the gallery loaded) goes through the warm task, which computes it if need be.
        # The loaded ones are those recorded warm by this boot, in the load's transactions.
        held = NodeAssignment.objects.filter(
            node_id=runtime.node_id, boot_id=runtime.boot_id, state=AssignmentState.WARM
        )
        speakers = list(
            Speaker.objects.filter(
                pools.configured_pools().served_by(runtime.pool),
                enrollment_status__in=WARMABLE_STATUSES,
            )
            .exclude(id__in=held.values("speaker_id"))
            .order_by("created_at", "id")
        )
        for speaker in speakers:
            schedule_warm(speaker, [runtime.node_id])
    return len(speakers)


def release_outside_pool(runtime: NodeRuntime) -> int:
    """Drops this node's assignments of speakers its pool no longer serves (their tenant moved
    to another pool): this boot holds none of them, and it is not theirs to warm. Evictions
    still owed stay, so that an erasure is confirmed whichever pool the tenant is in now."""
    configured = pools.configured_pools()
    if configured.serves_every_tenant(runtime.pool):
        return 0
    released, _ = (
        NodeAssignment.objects.filter(node_id=runtime.node_id)
        .exclude(state__in=[AssignmentState.EVICTING, AssignmentState.EVICTED])
        .exclude(configured.served_by(runtime.pool, "speaker__tenant"))
        .delete()
    )
    if released:
        logger.info(
            "node %s released %d assignments of tenants outside pool %s",
            runtime.node_id,
            released,
            runtime.pool,
        )
    return released


@dataclass
class GalleryLoad:
    count: int = 0
    refused: int = 0


def load_gallery(runtime: NodeRuntime) -> GalleryLoad:
    """Loads every stored voiceprint of this node's model into its gallery: one query streamed
    through a server-side cursor (rows and their wrapped keys), nothing fetched from the blob
    store. While one batch is recorded (PostgreSQL and Redis, on a thread of its own with its
    own connection) the next is decrypted."""
    engine = runtime.engine
    load = GalleryLoad()
    recording: deque[Future[int]] = deque()
    with ThreadPoolExecutor(1, thread_name_prefix=f"load-{runtime.node_id}") as recorder:
        try:
            for batch in stream_stored_voiceprints(
                engine.model_id,
                engine.model_version,
                WARMABLE_STATUSES,
                LOAD_BATCH,
                tenant_ids=pools.tenant_ids_served_by(runtime.pool),
            ):
                load.refused += len(batch.refused)
                entries = {
                    speaker_id: GalleryEntry(
                        tenant_id=str(tenant_id),
                        vector=vector,
                        model_id=engine.model_id,
                        model_version=engine.model_version,
                        reference_sha256=reference_sha256,
                    )
                    for speaker_id, tenant_id, reference_sha256, vector in zip(
                        batch.speaker_ids,
                        batch.tenant_ids,
                        batch.reference_sha256s,
                        batch.vectors,
                        strict=True,
                    )
                }
                recording.append(recorder.submit(_record_loaded, runtime, entries))
                # At most one batch waits behind the one being recorded: bounded memory.
                if len(recording) > 1:
                    load.count += recording.popleft().result()
            while recording:
                load.count += recording.popleft().result()
        finally:
            recorder.submit(_close_thread_connection).result()
    return load


def _close_thread_connection() -> None:
    connection.close()  # the calling thread's own


# Records a loaded batch as warm on this node in one statement: the speakers' row locks (taken
# in id order, so two loading nodes cannot deadlock), then the assignments, set-based.
_RECORD_LOADED = f"""
WITH held AS (
    SELECT id, enrollment_status FROM {Speaker._meta.db_table}
    WHERE id = ANY(%(speaker_ids)s) AND enrollment_status <> %(evicted)s
    ORDER BY id FOR UPDATE
), recorded AS (
    INSERT INTO {NodeAssignment._meta.db_table} (
        speaker_id, node_id, state, attempts, last_error, last_work_s, boot_id,
        embedding_model_id, embedding_model_version, queued_at, updated_at
    )
    SELECT id, %(node_id)s, %(warm)s, 1, '', 0.0, %(boot_id)s, %(model_id)s, %(model_version)s,
        %(now)s, %(now)s
    FROM held
    ON CONFLICT (speaker_id, node_id) DO UPDATE SET
        state = EXCLUDED.state,
        boot_id = EXCLUDED.boot_id,
        embedding_model_id = EXCLUDED.embedding_model_id,
        embedding_model_version = EXCLUDED.embedding_model_version,
        last_error = EXCLUDED.last_error,
        last_work_s = EXCLUDED.last_work_s,
        updated_at = EXCLUDED.updated_at
)
SELECT id, enrollment_status FROM held
"""


def _record_loaded(runtime: NodeRuntime, entries: dict[uuid.UUID, GalleryEntry]) -> int:
    """:func:`_record_warm` for a batch: under the speakers' row locks, so that an erasure is
    either fully before (the speaker is left out) or fully after (it evicts from this node)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            _RECORD_LOADED,
            {
                "speaker_ids": list(entries),
                "evicted": EnrollmentStatus.EVICTED,
                "node_id": runtime.node_id,
                "warm": AssignmentState.WARM,
                "boot_id": runtime.boot_id,
                "model_id": runtime.engine.model_id,
                "model_version": runtime.engine.model_version,
                "now": timezone.now(),
            },
        )
        statuses = dict(cursor.fetchall())
        runtime.gallery.put_many({str(s): entries[s] for s in statuses})
        registry.republish_warm(runtime.node_id, [str(s) for s in statuses])
        for speaker_id, status in statuses.items():
            if status == EnrollmentStatus.PENDING:
                lifecycle.mark_ready(speaker_id, node_id=runtime.node_id)
    return len(statuses)


def retry_delay_s(retries: int) -> float:
    """Exponential backoff with full jitter, capped at a minute."""
    return random.uniform(0, min(60.0, 2.0 ** (retries + 1)))


def warm_here(runtime: NodeRuntime, speaker_id: str) -> str:
    """Computes the speaker's embedding on this node and registers the node as warm.

    Idempotent: a duplicate delivery finds the embedding in the gallery and only
    confirms the registry and the assignment.
    """
    speaker = Speaker.objects.select_related("tenant").filter(id=speaker_id).first()
    if speaker is None or speaker.enrollment_status == EnrollmentStatus.EVICTED:
        evict_here(runtime, speaker_id)
        return "skipped"
    if speaker.enrollment_status == EnrollmentStatus.NEEDS_REVIEW:
        # Nothing fans out a held enrollment; a stray message warms nothing. No status leads
        # back to needs_review, so a speaker past this check is never held again.
        return "held"
    tenant_pool = pools.configured_pools().pool_of(speaker.tenant.slug)
    if tenant_pool != runtime.pool:
        # Sent before the tenant moved pools, or by a process whose NODE_POOLS differs.
        raise NodeWorkError(
            "outside_pool",
            f"node {runtime.node_id} serves pool {runtime.pool}; tenant {speaker.tenant.slug} "
            f"is in pool {tenant_pool} (is NODE_POOLS the same in every process?)",
            permanent=True,
        )
    NodeAssignment.objects.filter(speaker=speaker, node_id=runtime.node_id).update(
        attempts=F("attempts") + 1
    )
    started = time.perf_counter()
    engine = runtime.engine
    held = runtime.gallery.get(speaker_id)
    if not (
        held
        and held.reference_sha256 == speaker.reference_sha256
        and (held.model_id, held.model_version) == (engine.model_id, engine.model_version)
    ):
        runtime.gallery.put(speaker_id, _voiceprint_of(runtime, speaker))
    if not _record_warm(runtime, speaker, time.perf_counter() - started):
        evict_here(runtime, speaker_id)  # erased while we were computing
        return "skipped"
    return "warm"


def evict_here(runtime: NodeRuntime, speaker_id: str) -> str:
    """Drops the speaker's embedding from this node and confirms it on the erasure receipt.

    Idempotent: a repeated eviction confirms nothing twice.
    """
    held = runtime.gallery.remove(speaker_id)
    registry.mark_cold(runtime.node_id, speaker_id)
    erasure = ErasureAudit.objects.filter(speaker_id=speaker_id).first()
    # One transaction: the assignment is never "evicted" without the receipt's confirmation.
    with transaction.atomic():
        NodeAssignment.objects.filter(speaker_id=speaker_id, node_id=runtime.node_id).update(
            state=AssignmentState.EVICTED, last_error=""
        )
        if erasure is None:
            return AssignmentState.EVICTED
        confirm_erasure(
            erasure,
            node_id=runtime.node_id,
            outcome=ErasureOutcome.EVICTED,
            detail="embedding removed from memory" if held else "embedding not held",
        )
    return AssignmentState.EVICTED


def heartbeat(runtime: NodeRuntime) -> None:
    """Publishes the node's heartbeat; a node the registry had lost (first beat, expiry or a
    Redis flush, which may also have taken eviction messages) drops erased speakers, then
    republishes what it holds."""
    if registry.publish_heartbeat(runtime.heartbeat()):
        purge_erased(runtime)
        registry.republish_warm(runtime.node_id, runtime.gallery.speaker_ids())
    Node.objects.filter(node_id=runtime.node_id).update(last_seen_at=timezone.now())


def purge_erased(runtime: NodeRuntime) -> list[str]:
    """Evicts every speaker this node holds that has been erased meanwhile."""
    held = set(runtime.gallery.speaker_ids())
    # Every speaker the gallery holds has an assignment to this node (recorded with it), which
    # only this node's eviction turns evicted: asked that way, the query does not grow with
    # the gallery's 100,000 ids.
    erased = [
        str(s)
        for s in NodeAssignment.objects.filter(
            node_id=runtime.node_id, speaker__enrollment_status=EnrollmentStatus.EVICTED
        )
        .exclude(state=AssignmentState.EVICTED)
        .values_list("speaker_id", flat=True)
        if str(s) in held
    ]
    for speaker_id in erased:
        evict_here(runtime, speaker_id)
    return erased


def _voiceprint_of(runtime: NodeRuntime, speaker: Speaker) -> GalleryEntry:
    engine = runtime.engine
    return GalleryEntry(
        tenant_id=str(speaker.tenant_id),
        vector=stored_or_computed_voiceprint(engine, speaker, node_author(runtime.node_id)),
        model_id=engine.model_id,
        model_version=engine.model_version,
        reference_sha256=speaker.reference_sha256,
    )


def stored_or_computed_voiceprint(
    engine: EmbeddingEngine, speaker: Speaker, computed_by: str
) -> np.ndarray:
    """The stored voiceprint of the engine's model, else one computed from the reference and
    stored (a refused stored one is replaced): what a warm task and ``reembed`` hold."""
    refused = False
    try:
        vector = load_voiceprint(speaker.id, engine.model_id, engine.model_version)
    except VoiceprintRefused as exc:
        logger.warning("%s: %s; computing it again from the reference", computed_by, exc)
        vector, refused = None, True
    if vector is None:
        vector = _embed_reference(engine, speaker)
        stored = store_computed_voiceprint(
            speaker.id,
            model_id=engine.model_id,
            model_version=engine.model_version,
            vector=vector,
            computed_by=computed_by,
            replace=refused,
        )
        logger.info(
            "%s computed the voiceprint of %s from its reference (stored: %s)",
            computed_by,
            speaker.id,
            stored,
        )
    return vector


def _embed_reference(engine: EmbeddingEngine, speaker: Speaker) -> np.ndarray:
    try:
        data = get_blob_store().get(speaker.reference_blob_key)
    except BlobMissing as exc:
        raise NodeWorkError("reference_missing", str(exc), permanent=True) from exc
    except BlobStoreError as exc:
        raise NodeWorkError("blob_unavailable", str(exc), permanent=False) from exc
    digest = sha256_hex(data)
    if digest != speaker.reference_sha256:
        raise NodeWorkError(
            "reference_hash_mismatch",
            f"the reference blob's SHA-256 is {digest}, the enrollment recorded "
            f"{speaker.reference_sha256}; refusing to enroll from a changed recording",
            permanent=True,
        )
    try:
        audio = decode_audio(io.BytesIO(data), max_duration_s=settings.ENROLLMENT_MAX_DURATION_S)
    except AudioRejected as exc:
        raise NodeWorkError(exc.code, exc.message, permanent=True) from exc
    speech = speech_only(audio.samples, get_vad().speech_regions(audio.samples))
    if speech.size == 0:
        raise NodeWorkError("no_speech", "the reference has no speech", permanent=True)
    vector, _ = engine.voiceprint(speech)
    return vector


def _record_warm(runtime: NodeRuntime, speaker: Speaker, work_s: float) -> bool:
    """Records this node as holding the speaker; False when the speaker was erased meanwhile.

    One transaction under the speaker's row lock: the assignment, the registry entry and the
    status flip are seen together, and an erasure (which takes the same lock) is either
    fully before or fully after.
    """
    now = timezone.now()
    held = {
        "state": AssignmentState.WARM,
        "boot_id": runtime.boot_id,
        "embedding_model_id": runtime.engine.model_id,
        "embedding_model_version": runtime.engine.model_version,
        "last_error": "",
        "last_work_s": work_s,
    }
    with transaction.atomic():
        previous = (
            Speaker.objects.select_for_update()
            .values_list("enrollment_status", flat=True)
            .get(id=speaker.id)
        )
        if previous == EnrollmentStatus.EVICTED:
            return False
        NodeAssignment.objects.update_or_create(
            speaker=speaker,
            node_id=runtime.node_id,
            defaults=held,
            create_defaults={**held, "queued_at": now, "attempts": 1},
        )
        registry.mark_warm(runtime.node_id, str(speaker.id))
        lifecycle.mark_ready(speaker.id, node_id=runtime.node_id)
    return True


def defer_warm(node_id: str, speaker_id: str, error: str) -> None:
    """Hands work that a dependency outage kept from finishing to the reconciler.

    The assignment stays queued (so the speaker stays pending, never failed by an outage) with
    the error kept on it, and the reconciler sends it again ``NODE_REQUEUE_AFTER_S`` from now.
    """
    NodeAssignment.objects.filter(
        speaker_id=speaker_id, node_id=node_id, state=AssignmentState.QUEUED
    ).update(queued_at=timezone.now(), last_error=error[:2000])


def record_failure(node_id: str, speaker_id: str, error: str) -> None:
    """Keeps the node's error; the speaker fails only when no node can still hold it."""
    NodeAssignment.objects.filter(speaker_id=speaker_id, node_id=node_id).update(
        state=AssignmentState.FAILED, last_error=error[:2000]
    )
    still_possible = NodeAssignment.objects.filter(
        speaker_id=speaker_id, state__in=[AssignmentState.QUEUED, AssignmentState.WARM]
    ).exists()
    if not still_possible:
        errors = dict(
            NodeAssignment.objects.filter(speaker_id=speaker_id).values_list(
                "node_id", "last_error"
            )
        )
        lifecycle.mark_failed(speaker_id, node_id=node_id, errors=errors)
