"""Enrollment fan-out to pyannote nodes, the node side of warming, and the warm registry views."""

from __future__ import annotations

import io
import logging
import random
import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from audit.models import ErasureAudit
from audit.services import confirm_erasure, record_event
from enrollment.audio import AudioRejected, decode_audio
from enrollment.blobs import BlobMissing, BlobStoreError, get_blob_store, sha256_hex
from enrollment.errors import ServiceError
from enrollment.models import EnrollmentStatus, Speaker
from nodes import registry
from nodes.models import AssignmentState, Node, NodeAssignment
from nodes.runtime import GalleryEntry, NodeRuntime, node_queue
from nodes.vad import get_vad, speech_only

logger = logging.getLogger(__name__)

WARM_TASK = "nodes.tasks.warm_speaker"
LIVE_STATUSES = (EnrollmentStatus.PENDING, EnrollmentStatus.READY, EnrollmentStatus.FAILED)


class NodeWorkError(Exception):
    """Warming failed; ``permanent`` errors are not retried."""

    def __init__(self, code: str, message: str, *, permanent: bool):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.permanent = permanent


class UnknownNodes(ServiceError):
    code = "unknown_nodes"


# --- scheduling (API and orchestrator side) ----------------------------------------


ERASED_STATES = (AssignmentState.EVICTING, AssignmentState.EVICTED)


def schedule_warm(speaker: Speaker, node_ids: list[str]) -> list[str]:
    """Records an assignment per node and, once the transaction commits, queues the work.

    An assignment already being evicted is never turned back into warm work.
    """
    now = timezone.now()
    scheduled = []
    for node_id in node_ids:
        assignment, created = NodeAssignment.objects.get_or_create(
            speaker=speaker,
            node_id=node_id,
            defaults={"state": AssignmentState.QUEUED, "queued_at": now},
        )
        if not created:
            requeued = (
                NodeAssignment.objects.filter(pk=assignment.pk)
                .exclude(state__in=ERASED_STATES)
                .update(state=AssignmentState.QUEUED, queued_at=now, last_error="")
            )
            if not requeued:
                continue
        scheduled.append(node_id)
    speaker_id = str(speaker.id)
    transaction.on_commit(lambda: _send_warm_tasks(speaker_id, scheduled), robust=True)
    return scheduled


def _send_warm_tasks(speaker_id: str, node_ids: list[str]) -> None:
    from config.celery import app

    for node_id in node_ids:
        app.send_task(WARM_TASK, args=[speaker_id], queue=node_queue(node_id))


def fan_out_enrollment(speaker: Speaker) -> list[str]:
    """One warm task per candidate node; returns the nodes scheduled (none when none is online)."""
    return schedule_warm(speaker, registry.candidate_node_ids())


def wait_for_nodes(speaker: Speaker, node_ids: list[str], timeout_s: float) -> list[str]:
    """Waits until every scheduled node answered or the time is up; returns the warm ones."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = dict(
            NodeAssignment.objects.filter(speaker=speaker, node_id__in=node_ids).values_list(
                "node_id", "state"
            )
        )
        warm = sorted(n for n, s in states.items() if s == AssignmentState.WARM)
        answered = all(s != AssignmentState.QUEUED for s in states.values())
        if answered or time.monotonic() >= deadline:
            return warm
        time.sleep(0.02)


@dataclass(frozen=True)
class WarmView:
    warm_node_ids: list[str]
    candidate_node_ids: list[str]
    stale_node_ids: list[str]


def warm_view(speaker: Speaker) -> WarmView:
    warm = registry.warm_node_ids(str(speaker.id))
    candidates = registry.candidate_node_ids()
    return WarmView(
        warm_node_ids=warm,
        candidate_node_ids=candidates,
        stale_node_ids=sorted(set(warm) - set(candidates)),
    )


def rewarm(speaker: Speaker, node_ids: list[str], actor: str) -> list[str]:
    """Re-enrolls on every candidate (empty list) or the given live candidates."""
    candidates = registry.candidate_node_ids()
    if not node_ids:
        targets = candidates
    else:
        unknown = sorted(set(node_ids) - set(candidates))
        if unknown:
            raise UnknownNodes(
                f"Not live pyannote nodes: {', '.join(unknown)}.",
                details={"node_ids": unknown, "candidate_node_ids": candidates},
            )
        targets = sorted(set(node_ids))
    with transaction.atomic():
        # Locked, so that an erasure cannot slip in between the check and the scheduling.
        speaker = Speaker.objects.select_for_update().get(id=speaker.id)
        if speaker.enrollment_status == EnrollmentStatus.EVICTED:
            raise ServiceError("This speaker was erased and cannot be warmed.")
        record_event(
            "speaker.rewarm_requested",
            actor=actor,
            tenant_id=str(speaker.tenant_id),
            speaker_id=str(speaker.id),
            details={"requested": node_ids, "scheduled": targets},
        )
        return schedule_warm(speaker, targets)


def reconcile_assignments(requeue_after_s: float) -> list[tuple[str, str]]:
    """Re-sends work that a live node should have done by now (a lost message, a Redis flush).

    Covers assignments still queued after ``requeue_after_s``, evictions a live node has
    not confirmed by then, and pending speakers that no live candidate was ever asked to
    hold. Returns the (speaker, node) pairs re-sent.
    """
    candidates = registry.candidate_node_ids()
    if not candidates:
        return []
    cutoff = timezone.now() - timedelta(seconds=requeue_after_s)
    resend: list[tuple[str, str]] = list(
        (str(s), n)
        for s, n in NodeAssignment.objects.filter(
            state=AssignmentState.QUEUED,
            queued_at__lte=cutoff,
            node_id__in=candidates,
            speaker__enrollment_status__in=LIVE_STATUSES,
        ).values_list("speaker_id", "node_id")
    )
    lost_evictions = list(
        (str(s), n)
        for s, n in NodeAssignment.objects.filter(
            state=AssignmentState.EVICTING, updated_at__lte=cutoff, node_id__in=candidates
        ).values_list("speaker_id", "node_id")
    )
    orphans = Speaker.objects.filter(
        enrollment_status=EnrollmentStatus.PENDING, created_at__lte=cutoff
    ).exclude(node_assignments__node_id__in=candidates)
    with transaction.atomic():
        for speaker_id, node_id in resend:
            NodeAssignment.objects.filter(speaker_id=speaker_id, node_id=node_id).update(
                queued_at=timezone.now()
            )
            transaction.on_commit(
                lambda s=speaker_id, n=node_id: _send_warm_tasks(s, [n])  # type: ignore[misc]
            )
        for speaker_id, node_id in lost_evictions:
            transaction.on_commit(
                lambda s=speaker_id, n=node_id: _send_evict_task(s, n),  # type: ignore[misc]
                robust=True,
            )
        for speaker in orphans:
            resend.extend((str(speaker.id), n) for n in schedule_warm(speaker, candidates))
    return resend + lost_evictions


EVICT_TASK = "nodes.tasks.evict_speaker"


def _send_evict_task(speaker_id: str, node_id: str) -> None:
    from config.celery import app

    app.send_task(EVICT_TASK, args=[speaker_id], queue=node_queue(node_id))


def evict_everywhere(speaker: Speaker) -> list[str]:
    """Marks every node that may hold the speaker as evicting and, on commit, tells each.

    The warm registry entries go at once; the nodes confirm their evictions later.
    """
    assignments = NodeAssignment.objects.filter(speaker=speaker).exclude(
        state=AssignmentState.EVICTED
    )
    node_ids = sorted(
        set(assignments.values_list("node_id", flat=True))
        | set(registry.warm_node_ids(str(speaker.id)))
    )
    now = timezone.now()
    for node_id in node_ids:
        NodeAssignment.objects.update_or_create(
            speaker=speaker,
            node_id=node_id,
            defaults={"state": AssignmentState.EVICTING, "last_error": ""},
            create_defaults={"state": AssignmentState.EVICTING, "queued_at": now},
        )
    speaker_id = str(speaker.id)

    def send() -> None:
        registry.forget_speaker(speaker_id)
        for node_id in node_ids:
            _send_evict_task(speaker_id, node_id)

    transaction.on_commit(send, robust=True)
    return node_ids


# --- the node side ----------------------------------------------------------------------


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
            return "evicted"
        confirm_erasure(
            erasure,
            node_id=runtime.node_id,
            outcome="evicted",
            detail="embedding removed from memory" if held else "embedding not held",
        )
    return "evicted"


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
        # Conditional: concurrent successes flip it once, and nothing flips it back.
        flipped = Speaker.objects.filter(
            id=speaker.id,
            enrollment_status__in=[EnrollmentStatus.PENDING, EnrollmentStatus.FAILED],
        ).update(enrollment_status=EnrollmentStatus.READY, updated_at=now, status_changed_at=now)
        if flipped:
            record_event(
                "speaker.status_changed",
                actor=f"node:{runtime.node_id}",
                tenant_id=str(speaker.tenant_id),
                speaker_id=str(speaker.id),
                details={
                    "from": previous,
                    "to": EnrollmentStatus.READY,
                    "node_id": runtime.node_id,
                },
            )
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
        now = timezone.now()
        with transaction.atomic():
            flipped = Speaker.objects.filter(
                id=speaker_id, enrollment_status=EnrollmentStatus.PENDING
            ).update(
                enrollment_status=EnrollmentStatus.FAILED, updated_at=now, status_changed_at=now
            )
            if flipped:
                tenant_id = Speaker.objects.values_list("tenant_id", flat=True).get(id=speaker_id)
                record_event(
                    "speaker.status_changed",
                    actor=f"node:{node_id}",
                    tenant_id=str(tenant_id),
                    speaker_id=speaker_id,
                    details={
                        "from": EnrollmentStatus.PENDING,
                        "to": EnrollmentStatus.FAILED,
                        "errors": dict(
                            NodeAssignment.objects.filter(speaker_id=speaker_id).values_list(
                                "node_id", "last_error"
                            )
                        ),
                    },
                )
