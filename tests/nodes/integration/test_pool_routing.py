"""What the orchestrator routes by pool, read from the registry and PostgreSQL: the reconciler,
the node list."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from enrollment.models import EnrollmentStatus, Speaker
from nodes import pools, registry
from nodes.models import AssignmentState, NodeAssignment
from nodes.services import orchestrator
from tests import audio
from tests.factories import client_for, make_key, make_speaker, make_tenant, upload


def beat(node_id: str, pool: str) -> None:
    registry.publish_heartbeat(
        registry.Heartbeat(
            node_id=node_id,
            engine="pyannote",
            model_id="m",
            model_version="v",
            boot_id=f"boot-{node_id}",
            host="h",
            pid=1,
            gallery_size=0,
            sent_at=time.time(),
            pool=pool,
        )
    )


@pytest.fixture
def two_pools(db, settings):
    alpha, beta = make_tenant(), make_tenant()
    settings.NODE_POOLS = f"pool-a={alpha.slug};pool-b={beta.slug}"
    beat("node-a", "pool-a")
    beat("node-b", "pool-b")
    return alpha, beta


def pending(tenant) -> Speaker:
    speaker = make_speaker(tenant)
    Speaker.objects.filter(id=speaker.id).update(
        enrollment_status=EnrollmentStatus.PENDING, created_at=timezone.now() - timedelta(hours=1)
    )
    return speaker


def assign(speaker: Speaker, node_id: str, state: str) -> None:
    NodeAssignment.objects.create(
        speaker=speaker,
        node_id=node_id,
        state=state,
        queued_at=timezone.now() - timedelta(hours=1),
    )


def test_the_reconciler_sends_warm_work_only_within_the_pool_and_evictions_anywhere(two_pools):
    alpha, beta = two_pools
    moved_away = pending(alpha)  # queued on pool B's node before alpha moved to pool A
    assign(moved_away, "node-b", AssignmentState.QUEUED)
    orphan_beta = pending(beta)
    # Ready on pool B's node only: alpha moved to pool A, whose node is sent a copy.
    moved_ready = make_speaker(alpha)
    assign(moved_ready, "node-b", AssignmentState.WARM)
    held_beta = make_speaker(beta)
    assign(held_beta, "node-b", AssignmentState.WARM)
    erased_alpha = make_speaker(alpha)
    Speaker.objects.filter(id=erased_alpha.id).update(enrollment_status=EnrollmentStatus.EVICTED)
    assign(erased_alpha, "node-b", AssignmentState.EVICTING)

    resent = orchestrator.reconcile_assignments(requeue_after_s=0)

    assert sorted(resent) == sorted(
        [
            (str(moved_away.id), "node-a"),
            (str(moved_ready.id), "node-a"),
            (str(orphan_beta.id), "node-b"),
            (str(erased_alpha.id), "node-b"),
        ]
    )
    assert NodeAssignment.objects.get(speaker=moved_away, node_id="node-a").state == "queued"
    assert not NodeAssignment.objects.filter(speaker=orphan_beta, node_id="node-a").exists()


def test_a_pending_speaker_whose_pool_has_no_live_node_waits(db, settings):
    alpha = make_tenant()
    settings.NODE_POOLS = f"pool-a={alpha.slug}"
    beat("node-default", "default")
    waiting = pending(alpha)

    assert orchestrator.reconcile_assignments(requeue_after_s=0) == []
    assert not NodeAssignment.objects.filter(speaker=waiting).exists()


def test_the_node_list_shows_the_tenants_pool_and_nodes_holding_its_speakers(two_pools):
    alpha, _ = two_pools
    auditor = client_for(make_key(alpha, ["scaiecho:audit"])[1])

    listed = auditor.get("/v1/modules/scaiecho/nodes").json()["data"]
    assert [(n["node_id"], n["pool"], n["candidate"]) for n in listed] == [
        ("node-a", "pool-a", True)
    ]

    # node-b still holds one of alpha's speakers (alpha moved pools, node-b not restarted).
    assign(make_speaker(alpha), "node-b", AssignmentState.WARM)
    listed = auditor.get("/v1/modules/scaiecho/nodes").json()["data"]
    assert [(n["node_id"], n["pool"], n["candidate"], n["warm_count"]) for n in listed] == [
        ("node-a", "pool-a", True, 0),
        ("node-b", "pool-b", False, 1),
    ]


def test_a_diarization_job_goes_to_its_pools_node_or_completes_without_one(
    two_pools, django_capture_on_commit_callbacks
):
    alpha, beta = two_pools
    registry.redis_client().delete(registry.heartbeat_key("node-a"))  # pool A has no node now

    def submit(tenant) -> dict:
        api = client_for(make_key(tenant)[1])
        data = audio.encode(audio.clip([(0.0, 3.0)]))
        with django_capture_on_commit_callbacks(execute=False):
            response = api.post(
                "/v1/modules/scaiecho/diarize",
                {"audio": upload("call.wav", data, "audio/wav")},
                format="multipart",
            )
        assert response.status_code == 202, response.content
        return response.json()["data"]

    assert submit(beta)["node_id"] == "node-b"
    # node-b is live, idle and pyannote, but not alpha's: the job is completed without labels.
    assert submit(alpha)["node_id"] is None


def test_slugs_that_name_no_tenant_are_reported(db, settings):
    acme = make_tenant()
    settings.NODE_POOLS = f"eu={acme.slug},not-yet-created;us=typo-corp"

    assert pools.unknown_tenant_slugs() == ["not-yet-created", "typo-corp"]
