from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, QuerySet

from enrollment.models import WARMABLE_STATUSES, EnrollmentStatus, Speaker, Voiceprint
from nodes import pools, registry
from nodes.models import AssignmentState, Node, NodeAssignment
from tenancy.models import Tenant


@dataclass(frozen=True)
class NodeStatus:
    node_id: str
    alive: bool
    candidate: bool
    heartbeat_age_s: float | None
    engine: str
    model_id: str
    model_version: str
    warm_count: int
    last_seen_at: datetime | None
    voiceprints_missing: int
    pool: str | None = None


def node_statuses(tenant: Tenant) -> list[NodeStatus]:
    """Every node that serves the tenant or holds its speakers, with the tenant's warm count.

    A live node of another pool (``NODE_POOLS``) that holds none of the tenant's speakers is
    left out; a node that is not heartbeating has no known pool and is listed. Nothing in it
    describes other tenants or the machine: no gallery size (every tenant's speakers), host or
    pid. Operators find those in the Django admin and /metrics.
    """
    beats = registry.live_heartbeats()
    rows = {node.node_id: node for node in Node.objects.all()}
    tenant_pool = pools.pool_of_tenant(tenant.id)
    warm_counts = dict(
        NodeAssignment.objects.filter(speaker__tenant=tenant, state=AssignmentState.WARM)
        .values("node_id")
        .annotate(n=Count("id"))
        .values_list("node_id", "n")
    )
    missing = voiceprints_missing(
        (_model_of(beats.get(n), rows.get(n)) for n in set(beats) | set(rows)), tenant
    )
    statuses = []
    for node_id in sorted(set(beats) | set(rows)):
        beat, row = beats.get(node_id), rows.get(node_id)
        if beat is not None and beat.pool != tenant_pool and node_id not in warm_counts:
            continue
        statuses.append(
            NodeStatus(
                node_id=node_id,
                alive=beat is not None,
                candidate=bool(beat and beat.is_candidate and beat.pool == tenant_pool),
                heartbeat_age_s=round(beat.age_s, 2) if beat else None,
                engine=beat.engine if beat else row.engine if row else "",
                model_id=beat.model_id if beat else row.model_id if row else "",
                model_version=beat.model_version if beat else row.model_version if row else "",
                warm_count=int(warm_counts.get(node_id, 0)),
                last_seen_at=row.last_seen_at if row else None,
                pool=beat.pool if beat else None,
                voiceprints_missing=missing[_model_of(beat, row)],
            )
        )
    return statuses


def _model_of(beat: registry.Heartbeat | None, row: Node | None) -> tuple[str, str]:
    """The model a node runs: its heartbeat's when alive, else its row's."""
    if beat is not None:
        return beat.model_id, beat.model_version
    return (row.model_id, row.model_version) if row is not None else ("", "")


def voiceprints_missing(
    models: Iterable[tuple[str, str]], tenant: Tenant | None = None
) -> dict[tuple[str, str], int]:
    """Per embedding model (id, version): the warmable speakers (of the tenant, or of every
    tenant) with no stored voiceprint of that model, which a node of that model computes from
    the recordings. Counts grouped by model, nothing read per speaker: the stored rows of every
    speaker (an index-only scan), less those of the few speakers held or failed (an erased
    speaker has none)."""
    wanted = set(models)
    if not wanted:
        return {}
    speakers = Speaker.objects.filter(enrollment_status__in=WARMABLE_STATUSES)
    stored = Voiceprint.objects.filter(model_id__in={model_id for model_id, _ in wanted})
    if tenant is not None:
        speakers, stored = speakers.filter(tenant=tenant), stored.filter(tenant=tenant)
    unwarmable = [s for s in EnrollmentStatus.values if s not in WARMABLE_STATUSES]
    warmable = speakers.count()
    counts = _per_model(stored)
    for model, n in _per_model(stored.filter(speaker__enrollment_status__in=unwarmable)).items():
        counts[model] -= n
    return {model: warmable - counts.get(model, 0) for model in wanted}


def _per_model(voiceprints: QuerySet[Voiceprint]) -> dict[tuple[str, str], int]:
    return {
        (model_id, model_version): n
        for model_id, model_version, n in voiceprints.values("model_id", "model_version")
        .annotate(n=Count("id"))
        .values_list("model_id", "model_version", "n")
    }


def assignments_for_speaker(speaker_id: str) -> list[NodeAssignment]:
    return list(NodeAssignment.objects.filter(speaker_id=speaker_id).order_by("node_id"))
