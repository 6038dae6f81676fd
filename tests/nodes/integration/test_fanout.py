"""Fan-out to real node processes through Redis and Celery (no eager mode)."""

from __future__ import annotations

import signal

import pytest

from enrollment.models import Speaker, Voiceprint
from nodes import registry
from nodes.models import NodeAssignment
from nodes.services import orchestrator
from tests.factories import enroll, warm_view
from tests.live import wait_for

pytestmark = [pytest.mark.live, pytest.mark.slow]

SPEAKERS = "/v1/modules/scaiecho/speakers"


def status(speaker_id: str) -> str:
    return Speaker.objects.get(id=speaker_id).enrollment_status


def assignment(speaker_id: str, node_id: str) -> NodeAssignment:
    return NodeAssignment.objects.get(speaker_id=speaker_id, node_id=node_id)


def test_enrollment_fans_out_to_every_node_and_turns_ready(cluster, api):
    cluster.start("node-a", "node-b")
    data = enroll(api)

    assert data["enrollment_status"] == "ready"
    assert data["enrolled_on"] == ["node-a", "node-b"]
    assert "note" not in data
    view = warm_view(api, data["id"])
    assert view["warm_node_ids"] == ["node-a", "node-b"]
    assert view["candidate_node_ids"] == ["node-a", "node-b"]
    assert view["stale_node_ids"] == []
    for node_id in ("node-a", "node-b"):
        held = assignment(data["id"], node_id)
        assert held.state == "warm"
        assert held.embedding_model_id == "resemblyzer/ge2e-voice-encoder"
        assert held.boot_id == registry.live_heartbeats()[node_id].boot_id


def test_with_no_node_online_the_speaker_waits_then_a_new_node_takes_it(cluster, api):
    data = enroll(api)
    assert data["enrollment_status"] == "pending"
    assert data["enrolled_on"] == []
    assert "no pyannote node is online" in data["note"].lower()

    cluster.start("node-a")
    wait_for(lambda: status(data["id"]) == "ready", what="pending speaker to turn ready")
    assert warm_view(api, data["id"])["warm_node_ids"] == ["node-a"]


def test_a_node_that_joins_late_is_warmed(cluster, api):
    cluster.start("node-a")
    data = enroll(api)
    assert data["enrolled_on"] == ["node-a"]

    cluster.start("node-b")
    wait_for(
        lambda: warm_view(api, data["id"])["warm_node_ids"] == ["node-a", "node-b"],
        what="late node to be warmed",
    )

    wait_for(
        lambda: [b.gallery_size for _, b in sorted(registry.live_heartbeats().items())] == [1, 1],
        what="heartbeats to report the galleries",
    )
    nodes = api.get("/v1/modules/scaiecho/nodes").json()["data"]
    assert {n["node_id"]: n["warm_count"] for n in nodes} == {"node-a": 1, "node-b": 1}
    assert all(n["alive"] and n["candidate"] for n in nodes)


def test_a_node_killed_during_fan_out_is_retried_when_it_returns(cluster, api, settings):
    settings.ENROLLMENT_ACK_WAIT_S = 3.0
    node_a, node_b = cluster.start("node-a", "node-b")
    node_b.process.send_signal(signal.SIGSTOP)  # still a candidate, but takes no work
    data = enroll(api)
    node_b.kill()

    # The surviving node alone makes the speaker ready.
    assert data["enrollment_status"] == "ready"
    assert data["enrolled_on"] == ["node-a"]
    assert assignment(data["id"], "node-b").state == "queued"

    node_b.start()
    wait_for(
        lambda: assignment(data["id"], "node-b").state == "warm",
        what="restarted node to finish its work",
    )
    assert warm_view(api, data["id"])["warm_node_ids"] == ["node-a", "node-b"]


def test_a_restarted_node_drops_its_old_entries_and_is_warmed_again(cluster, api):
    (node_a,) = cluster.start("node-a")
    data = enroll(api)
    first_boot = assignment(data["id"], "node-a").boot_id

    node_a.stop()
    node_a.start()
    new_boot = registry.live_heartbeats()["node-a"].boot_id
    assert new_boot != first_boot
    wait_for(
        lambda: assignment(data["id"], "node-a").boot_id == new_boot,
        what="re-warm under the new boot",
    )
    assert assignment(data["id"], "node-a").state == "warm"
    assert warm_view(api, data["id"])["warm_node_ids"] == ["node-a"]


def test_a_dead_node_is_stale_and_rewarm_validates_node_ids(cluster, api):
    node_a, node_b = cluster.start("node-a", "node-b")
    data = enroll(api)
    node_b.kill()
    wait_for(lambda: registry.candidate_node_ids() == ["node-a"], what="heartbeat to expire")

    view = warm_view(api, data["id"])
    assert view["warm_node_ids"] == ["node-a", "node-b"]
    assert view["candidate_node_ids"] == ["node-a"]
    assert view["stale_node_ids"] == ["node-b"]

    url = f"{SPEAKERS}/{data['id']}/warm"
    refused = api.post(url, {"node_ids": ["node-b", "node-zz"]}, format="json")
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "unknown_nodes"
    assert refused.json()["error"]["node_ids"] == ["node-b", "node-zz"]

    subset = api.post(url, {"node_ids": ["node-a"]}, format="json")
    assert subset.status_code == 202
    assert subset.json()["data"]["scheduled_node_ids"] == ["node-a"]

    everyone = api.post(url, {"node_ids": []}, format="json")
    assert everyone.status_code == 202
    assert everyone.json()["data"]["scheduled_node_ids"] == ["node-a"]
    wait_for(lambda: assignment(data["id"], "node-a").state == "warm", what="re-warm")
    # Duplicate deliveries changed nothing: one embedding, one warm entry.
    assert registry.live_heartbeats()["node-a"].gallery_size == 1


def test_a_changed_reference_blob_fails_with_a_clear_error(cluster, api, s3_blob_store):
    data = enroll(api)  # no node yet: pending
    speaker = Speaker.objects.get(id=data["id"])
    # No stored voiceprint, so the node embeds the reference (and checks it first).
    Voiceprint.objects.filter(speaker=speaker).delete()
    s3_blob_store.client.put_object(
        Bucket=s3_blob_store.bucket, Key=speaker.reference_blob_key, Body=b"tampered"
    )

    cluster.start("node-a")
    wait_for(lambda: status(data["id"]) == "failed", what="speaker to fail")
    failed = assignment(data["id"], "node-a")
    assert failed.state == "failed"
    assert "reference_hash_mismatch" in failed.last_error
    view = warm_view(api, data["id"])
    assert view["warm_node_ids"] == []
    assert view["assignments"][0]["last_error"].startswith("reference_hash_mismatch")


def test_the_registry_is_rebuilt_after_a_redis_flush(cluster, api):
    cluster.start("node-a")
    data = enroll(api)
    client = registry.redis_client()
    for key in client.scan_iter(match="scaiecho:*"):
        client.delete(key)
    assert warm_view(api, data["id"])["warm_node_ids"] == []

    wait_for(
        lambda: warm_view(api, data["id"])["warm_node_ids"] == ["node-a"],
        what="node to republish its warm entries",
    )
    assert registry.candidate_node_ids() == ["node-a"]


def test_lost_messages_are_sent_again_by_the_reconciler(cluster, api, settings):
    settings.ENROLLMENT_ACK_WAIT_S = 1.0
    (node_a,) = cluster.start("node-a")
    node_a.process.send_signal(signal.SIGSTOP)
    data = enroll(api)
    registry.redis_client().delete("node.node-a")  # the queued message is lost
    node_a.process.send_signal(signal.SIGCONT)
    assert status(data["id"]) == "pending"

    resent = orchestrator.reconcile_assignments(requeue_after_s=0)
    assert resent == [(data["id"], "node-a")]
    wait_for(lambda: status(data["id"]) == "ready", what="re-sent work to be done")
