from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count

from nodes import registry
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


def node_statuses(tenant: Tenant) -> list[NodeStatus]:
    """Every node known to the registry or the database, with the tenant's warm count.

    Nothing in it describes other tenants or the machine: no gallery size (every tenant's
    speakers), host or pid. Operators find those in the Django admin and /metrics.
    """
    beats = registry.live_heartbeats()
    rows = {node.node_id: node for node in Node.objects.all()}
    warm_counts = dict(
        NodeAssignment.objects.filter(speaker__tenant=tenant, state=AssignmentState.WARM)
        .values("node_id")
        .annotate(n=Count("id"))
        .values_list("node_id", "n")
    )
    statuses = []
    for node_id in sorted(set(beats) | set(rows)):
        beat, row = beats.get(node_id), rows.get(node_id)
        statuses.append(
            NodeStatus(
                node_id=node_id,
                alive=beat is not None,
                candidate=bool(beat and beat.is_candidate),
                heartbeat_age_s=round(beat.age_s, 2) if beat else None,
                engine=beat.engine if beat else row.engine if row else "",
                model_id=beat.model_id if beat else row.model_id if row else "",
                model_version=beat.model_version if beat else row.model_version if row else "",
                warm_count=int(warm_counts.get(node_id, 0)),
                last_seen_at=row.last_seen_at if row else None,
            )
        )
    return statuses


def assignments_for_speaker(speaker_id: str) -> list[NodeAssignment]:
    return list(NodeAssignment.objects.filter(speaker_id=speaker_id).order_by("node_id"))
