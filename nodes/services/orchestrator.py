"""The orchestrator side of the nodes: fan-out, re-warm, eviction, reconciliation, warm views.

Runs in API processes and the orchestrator worker; what a node does itself is in
``nodes.services.node_work``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from audit.services import record_event
from common.errors import ServiceError
from common.tasks import send_task
from enrollment.models import WARMABLE_STATUSES, EnrollmentStatus, Speaker
from nodes import pools, registry
from nodes.models import AssignmentState, NodeAssignment
from nodes.runtime import node_queue

logger = logging.getLogger(__name__)

WARM_TASK = "nodes.tasks.warm_speaker"
LIVE_STATUSES = (EnrollmentStatus.PENDING, EnrollmentStatus.READY, EnrollmentStatus.FAILED)
# What a node may hold: held-for-review, failed and erased speakers are never sent to one.


class UnknownNodes(ServiceError):
    code = "unknown_nodes"


class SpeakerUnderReview(ServiceError):
    status_code = 409
    code = "speaker_under_review"


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
    for node_id in node_ids:
        send_task(WARM_TASK, args=[speaker_id], queue=node_queue(node_id))


def fan_out_enrollment(speaker: Speaker) -> list[str]:
    """One warm task per candidate node of the tenant's pool; returns the nodes scheduled (none
    when none is online)."""
    return schedule_warm(speaker, pools.tenant_candidate_node_ids(speaker.tenant_id))


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
    candidates = pools.tenant_candidate_node_ids(speaker.tenant_id)
    return WarmView(
        warm_node_ids=warm,
        candidate_node_ids=candidates,
        stale_node_ids=sorted(set(warm) - set(candidates)),
    )


def rewarm(speaker: Speaker, node_ids: list[str], actor: str) -> list[str]:
    """Re-enrolls on every candidate of the tenant's pool (empty list) or the given ones."""
    candidates = pools.tenant_candidate_node_ids(speaker.tenant_id)
    if not node_ids:
        targets = candidates
    else:
        unknown = sorted(set(node_ids) - set(candidates))
        if unknown:
            raise UnknownNodes(
                f"Not live pyannote nodes of this tenant's pool: {', '.join(unknown)}.",
                details={"node_ids": unknown, "candidate_node_ids": candidates},
            )
        targets = sorted(set(node_ids))
    with transaction.atomic():
        # Locked, so that an erasure cannot slip in between the check and the scheduling.
        speaker = Speaker.objects.select_for_update().get(id=speaker.id)
        if speaker.enrollment_status == EnrollmentStatus.EVICTED:
            raise ServiceError("This speaker was erased and cannot be warmed.")
        if speaker.enrollment_status == EnrollmentStatus.NEEDS_REVIEW:
            raise SpeakerUnderReview(
                "This speaker's enrollment is held for review: approve it "
                "(POST speakers/{id}/review) before any node may hold it."
            )
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
    not confirmed by then, and pending or ready speakers that no live candidate of their
    tenant's pool was ever asked to hold (never reached, or their tenant moved to this pool).
    Warm work goes only to nodes of the tenant's pool; evictions go to any node that owes one.
    Returns the (speaker, node) pairs re-sent.
    """
    by_pool = registry.candidates_by_pool()
    candidates = sorted(n for node_ids in by_pool.values() for n in node_ids)
    if not candidates:
        return []
    configured = pools.configured_pools()
    cutoff = timezone.now() - timedelta(seconds=requeue_after_s)
    resend: list[tuple[str, str]] = []
    for pool, node_ids in by_pool.items():
        resend.extend(
            (str(s), n)
            for s, n in NodeAssignment.objects.filter(
                configured.served_by(pool, "speaker__tenant"),
                state=AssignmentState.QUEUED,
                queued_at__lte=cutoff,
                node_id__in=node_ids,
                speaker__enrollment_status__in=LIVE_STATUSES,
            ).values_list("speaker_id", "node_id")
        )
    lost_evictions = list(
        (str(s), n)
        for s, n in NodeAssignment.objects.filter(
            state=AssignmentState.EVICTING, updated_at__lte=cutoff, node_id__in=candidates
        ).values_list("speaker_id", "node_id")
    )
    orphans = [
        (speaker, node_ids)
        for pool, node_ids in by_pool.items()
        for speaker in Speaker.objects.filter(
            configured.served_by(pool),
            enrollment_status__in=WARMABLE_STATUSES,
            created_at__lte=cutoff,
        ).exclude(node_assignments__node_id__in=node_ids)
    ]
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
        for speaker, node_ids in orphans:
            resend.extend((str(speaker.id), n) for n in schedule_warm(speaker, node_ids))
    return resend + lost_evictions


EVICT_TASK = "nodes.tasks.evict_speaker"


def _send_evict_task(speaker_id: str, node_id: str) -> None:
    send_task(EVICT_TASK, args=[speaker_id], queue=node_queue(node_id))


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


class NodeDistribution:
    """``enrollment.distribution.SpeakerDistribution`` on these nodes (installed by nodes.apps).

    Looks the functions up when called, so that they stay the module's own.
    """

    def fan_out(self, speaker: Speaker) -> list[str]:
        return fan_out_enrollment(speaker)

    def wait_until_warm(self, speaker: Speaker, node_ids: list[str], timeout_s: float) -> list[str]:
        return wait_for_nodes(speaker, node_ids, timeout_s)

    def evict_everywhere(self, speaker: Speaker) -> list[str]:
        return evict_everywhere(speaker)
