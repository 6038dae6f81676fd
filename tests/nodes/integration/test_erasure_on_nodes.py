"""Erasure across real node processes: every node evicts, also one that was down."""

from __future__ import annotations

import pytest

from audit.models import ErasureConfirmation
from config.celery import app
from nodes import registry
from nodes.models import NodeAssignment
from nodes.runtime import node_queue
from nodes.services.orchestrator import EVICT_TASK
from tests.factories import enrollment_form
from tests.live import wait_for

pytestmark = [pytest.mark.live, pytest.mark.slow]

SPEAKERS = "/v1/modules/scaiecho/speakers"


def enroll(api) -> str:
    response = api.post(SPEAKERS, enrollment_form(), format="multipart")
    assert response.status_code == 201, response.content
    return response.json()["data"]["id"]


def receipt(api, audit_id: str) -> dict:
    return api.get(f"/v1/modules/scaiecho/erasures/{audit_id}").json()["data"]


def gallery_sizes() -> dict[str, int]:
    return {n: beat.gallery_size for n, beat in registry.live_heartbeats().items()}


def test_erasure_evicts_from_every_online_node(cluster, api):
    cluster.start("node-a", "node-b")
    speaker_id = enroll(api)
    assert wait_for(lambda: gallery_sizes() == {"node-a": 1, "node-b": 1}, what="galleries")

    erased = api.delete(f"{SPEAKERS}/{speaker_id}").json()["data"]
    assert sorted(n["node_id"] for n in erased["nodes"]) == ["node-a", "node-b"]
    assert api.get(f"{SPEAKERS}/{speaker_id}/warm").json()["data"]["warm_node_ids"] == []

    done = wait_for(
        lambda: (r := receipt(api, erased["audit_id"]))["complete"] and r,
        what="both nodes to confirm",
    )
    assert [n["state"] for n in done["nodes"]] == ["evicted", "evicted"]
    assert done["error_summary"] == {}
    wait_for(lambda: gallery_sizes() == {"node-a": 0, "node-b": 0}, what="galleries to empty")


def test_a_node_down_during_erasure_evicts_when_it_returns_and_never_rewarms(cluster, api):
    node_a, node_b = cluster.start("node-a", "node-b")
    speaker_id = enroll(api)
    node_b.stop()

    erased = api.delete(f"{SPEAKERS}/{speaker_id}").json()["data"]
    wait_for(
        lambda: (
            {n["node_id"]: n["state"] for n in receipt(api, erased["audit_id"])["nodes"]}
            == {"node-a": "evicted", "node-b": "pending"}
        ),
        what="node-a to confirm",
    )
    pending = receipt(api, erased["audit_id"])
    assert pending["complete"] is False
    assert pending["error_summary"] == {"node-b": "pending"}

    node_b.start()
    done = wait_for(
        lambda: (r := receipt(api, erased["audit_id"]))["complete"] and r,
        what="the returning node to confirm",
    )
    assert [n["state"] for n in done["nodes"]] == ["evicted", "evicted"]
    assert NodeAssignment.objects.get(speaker_id=speaker_id, node_id="node-b").state == "evicted"
    # The returning node warms live speakers only: the erased one never comes back.
    second = enroll(api)
    wait_for(
        lambda: NodeAssignment.objects.filter(speaker_id=second, state="warm").count() == 2,
        what="a live speaker to be warmed on both",
    )
    wait_for(lambda: gallery_sizes() == {"node-a": 1, "node-b": 1}, what="one speaker each")
    assert registry.warm_node_ids(speaker_id) == []


def test_duplicate_eviction_deliveries_are_harmless(cluster, api):
    cluster.start("node-a")
    speaker_id = enroll(api)
    erased = api.delete(f"{SPEAKERS}/{speaker_id}").json()["data"]
    wait_for(lambda: receipt(api, erased["audit_id"])["complete"], what="eviction")
    for _ in range(3):
        app.send_task(EVICT_TASK, args=[speaker_id], queue=node_queue("node-a"))
    app.send_task("nodes.tasks.warm_speaker", args=[speaker_id], queue=node_queue("node-a"))
    wait_for(
        lambda: cluster.node("node-a").log().count("succeeded") >= 6,
        what="redeliveries to be processed",
    )
    evictions = ErasureConfirmation.objects.filter(erasure_id=erased["audit_id"], outcome="evicted")
    assert evictions.count() == 1
    wait_for(lambda: gallery_sizes() == {"node-a": 0}, what="an empty gallery")
    assert [n["state"] for n in receipt(api, erased["audit_id"])["nodes"]] == ["evicted"]
