"""The node side: what a pyannote node does with the work sent to it (warm, evict, start)."""

from __future__ import annotations

import io
import random
import time

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from audit.models import ErasureAudit, ErasureOutcome
from audit.services import confirm_erasure
from common.audio import AudioRejected, decode_audio
from common.blobs import BlobMissing, BlobStoreError, get_blob_store, sha256_hex
from enrollment import lifecycle
from enrollment.models import EnrollmentStatus, Speaker
from nodes import registry
from nodes.models import AssignmentState, Node, NodeAssignment
from nodes.runtime import GalleryEntry, NodeRuntime
from nodes.services.orchestrator import schedule_warm
from voice.vad import get_vad, speech_only


class NodeWorkError(Exception):
    """Warming failed; ``permanent`` errors are not retried."""

    def __init__(self, code: str, message: str, *, permanent: bool):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.permanent = permanent


def start_node(runtime: NodeRuntime) -> int:
    """Registers a booting node, drops what its previous boot held, queues its warm-up.

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
    with transaction.atomic():
        speakers = list(
            Speaker.objects.filter(
                enrollment_status__in=[EnrollmentStatus.PENDING, EnrollmentStatus.READY]
            ).order_by("created_at")
        )
        for speaker in speakers:
            schedule_warm(speaker, [runtime.node_id])
    return len(speakers)


def retry_delay_s(retries: int) -> float:
    """Exponential backoff with full jitter, capped at a minute."""
    return random.uniform(0, min(60.0, 2.0 ** (retries + 1)))


def warm_here(runtime: NodeRuntime, speaker_id: str) -> str:
    """Computes the speaker's embedding on this node and registers the node as warm.

    Idempotent: a duplicate delivery finds the embedding in the gallery and only
    confirms the registry and the assignment.
    """
    speaker = Speaker.objects.filter(id=speaker_id).first()
    if speaker is None or speaker.enrollment_status == EnrollmentStatus.EVICTED:
        evict_here(runtime, speaker_id)
        return "skipped"
    if speaker.enrollment_status == EnrollmentStatus.NEEDS_REVIEW:
        # Nothing fans out a held enrollment; a stray message warms nothing. No status leads
        # back to needs_review, so a speaker past this check is never held again.
        return "held"
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
        runtime.gallery.put(speaker_id, _embed_reference(runtime, speaker))
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
    erased = [
        str(s)
        for s in Speaker.objects.filter(
            id__in=runtime.gallery.speaker_ids(), enrollment_status=EnrollmentStatus.EVICTED
        ).values_list("id", flat=True)
    ]
    for speaker_id in erased:
        evict_here(runtime, speaker_id)
    return erased


def _embed_reference(runtime: NodeRuntime, speaker: Speaker) -> GalleryEntry:
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
    vector, _ = runtime.engine.voiceprint(speech)
    return GalleryEntry(
        tenant_id=str(speaker.tenant_id),
        vector=vector,
        model_id=runtime.engine.model_id,
        model_version=runtime.engine.model_version,
        reference_sha256=speaker.reference_sha256,
    )


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
