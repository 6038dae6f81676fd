"""Work lost between the commit and the broker, or inside Redis, is found again."""

from __future__ import annotations

import signal

import pytest

from enrollment.models import Speaker
from nodes import registry
from nodes.services import orchestrator
from tests.factories import enrollment_form
from tests.live import wait_for

pytestmark = [pytest.mark.live, pytest.mark.slow]

SPEAKERS = "/v1/modules/scaiecho/speakers"


def test_a_broker_failure_after_commit_keeps_the_enrollment_and_its_blobs(
    cluster, api, s3_blob_store, monkeypatch, settings
):
    settings.ENROLLMENT_ACK_WAIT_S = 0.2
    registry.publish_heartbeat(
        registry.Heartbeat(
            node_id="ghost",
            engine="pyannote",
            model_id="m",
            model_version="v",
            boot_id="b",
            host="h",
            pid=1,
            gallery_size=0,
            sent_at=0.0,
        )
    )

    def broker_down(speaker_id, node_ids):
        raise ConnectionError("injected broker outage")

    monkeypatch.setattr(orchestrator, "_send_warm_tasks", broker_down)
    response = api.post(SPEAKERS, enrollment_form(), format="multipart")

    assert response.status_code == 201
    speaker = Speaker.objects.get(id=response.json()["data"]["id"])
    body = s3_blob_store.client.get_object(
        Bucket=s3_blob_store.bucket, Key=speaker.reference_blob_key
    )["Body"].read()
    assert len(body) == speaker.reference_size_bytes
    assert speaker.node_assignments.get().state == "queued"  # the reconciler will re-send it


def test_a_lost_eviction_is_sent_again_by_the_reconciler(cluster, api):
    (node_a,) = cluster.start("node-a")
    speaker_id = api.post(SPEAKERS, enrollment_form(), format="multipart").json()["data"]["id"]
    node_a.process.send_signal(signal.SIGSTOP)
    audit_id = api.delete(f"{SPEAKERS}/{speaker_id}").json()["data"]["audit_id"]
    registry.redis_client().delete("node.node-a")  # the eviction message is lost
    node_a.process.send_signal(signal.SIGCONT)
    wait_for(lambda: "node-a" in registry.candidate_node_ids(), what="node-a to beat again")

    resent = orchestrator.reconcile_assignments(requeue_after_s=0)

    assert (speaker_id, "node-a") in resent
    wait_for(
        lambda: api.get(f"/v1/modules/scaiecho/erasures/{audit_id}").json()["data"]["complete"],
        what="the re-sent eviction",
    )
    wait_for(lambda: registry.live_heartbeats()["node-a"].gallery_size == 0, what="empty gallery")
