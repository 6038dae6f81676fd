"""Node pools with real node processes: two pools, two tenants, each served only by its pool."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from django.db import transaction

from enrollment.models import Speaker
from nodes import registry
from nodes.models import NodeAssignment
from nodes.services.orchestrator import schedule_warm
from tests import audio
from tests.factories import (
    client_for,
    enroll,
    make_key,
    make_tenant,
    upload,
    warm_view,
)
from tests.live import Cluster, NodeProcess, wait_for

pytestmark = [pytest.mark.live, pytest.mark.slow]

SPEAKERS = "/v1/modules/scaiecho/speakers"
DIARIZE = "/v1/modules/scaiecho/diarize"


@pytest.fixture
def pooled(cluster, loaded_models, settings):
    """Tenant alpha in pool-a, tenant beta in pool-b, in this process and every node's."""
    alpha, beta, gamma = make_tenant(), make_tenant(), make_tenant()
    placement = f"pool-a={alpha.slug},{gamma.slug};pool-b={beta.slug}"
    settings.NODE_POOLS = placement
    cluster.env["NODE_POOLS"] = placement
    return SimpleNamespace(
        alpha=alpha,
        beta=beta,
        gamma=gamma,
        alpha_api=client_for(make_key(alpha)[1]),
        beta_api=client_for(make_key(beta)[1]),
    )


def start(cluster: Cluster, **pool_of_node: str) -> list[NodeProcess]:
    started = [
        cluster.node(node_id, NODE_POOL=pool).start(wait=False)
        for node_id, pool in pool_of_node.items()
    ]
    for node in started:
        node.wait_until_candidate()
    return started


def restart(node: NodeProcess) -> None:
    node.stop()
    node.start()


def assigned(speaker_id: str) -> dict[str, str]:
    return dict(
        NodeAssignment.objects.filter(speaker_id=speaker_id).values_list("node_id", "state")
    )


def last_load(node: NodeProcess) -> int:
    """How many stored voiceprints the node's latest boot loaded, as its log says."""
    return int(re.findall(r"loaded (\d+) stored voiceprints", node.log())[-1])


def gallery_sizes() -> dict[str, int]:
    return {n: beat.gallery_size for n, beat in registry.live_heartbeats().items()}


def test_enrollment_and_start_up_stay_inside_the_tenants_pool(cluster, pooled):
    node_a, node_b = start(cluster, **{"node-a": "pool-a", "node-b": "pool-b"})

    alice = enroll(pooled.alpha_api)
    bob = enroll(pooled.beta_api)

    assert (alice["enrollment_status"], alice["enrolled_on"]) == ("ready", ["node-a"])
    assert (bob["enrollment_status"], bob["enrolled_on"]) == ("ready", ["node-b"])
    assert assigned(alice["id"]) == {"node-a": "warm"}
    assert assigned(bob["id"]) == {"node-b": "warm"}
    view = warm_view(pooled.alpha_api, alice["id"])
    assert (view["warm_node_ids"], view["candidate_node_ids"]) == (["node-a"], ["node-a"])
    wait_for(lambda: gallery_sizes() == {"node-a": 1, "node-b": 1}, what="one speaker per node")

    # The tenant sees the nodes of its pool, not another pool's.
    nodes = pooled.alpha_api.get("/v1/modules/scaiecho/nodes").json()["data"]
    assert [(n["node_id"], n["pool"], n["candidate"]) for n in nodes] == [
        ("node-a", "pool-a", True)
    ]
    # Nor can it ask another pool's node to hold its speaker.
    refused = pooled.alpha_api.post(
        f"{SPEAKERS}/{alice['id']}/warm", {"node_ids": ["node-b"]}, format="json"
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "unknown_nodes"
    assert refused.json()["error"]["candidate_node_ids"] == ["node-a"]

    # A restarted node of pool B loads its pool's stored voiceprints and no other.
    restart(node_b)
    assert last_load(node_b) == 1
    assert gallery_sizes()["node-b"] == 1
    assert registry.warm_node_ids(bob["id"]) == ["node-b"]
    assert registry.warm_node_ids(alice["id"]) == ["node-a"]
    assert assigned(alice["id"]) == {"node-a": "warm"}

    # Work for a tenant outside the node's pool (a stale message, NODE_POOLS differing
    # between processes) is refused by the node, not warmed.
    with transaction.atomic():
        schedule_warm(Speaker.objects.get(id=alice["id"]), ["node-b"])
    stray = wait_for(
        lambda: (
            (a := NodeAssignment.objects.get(speaker_id=alice["id"], node_id="node-b")).state
            == "failed"
            and a
        ),
        what="the stray warm task to be refused",
    )
    assert stray.last_error.startswith("outside_pool: node node-b serves pool pool-b")
    assert Speaker.objects.get(id=alice["id"]).enrollment_status == "ready"
    assert gallery_sizes()["node-b"] == 1


def submit(api) -> dict:
    data = audio.encode(audio.clip([(0.0, 12.0)]))
    response = api.post(
        DIARIZE, {"audio": upload("meeting.wav", data, "audio/wav")}, format="multipart"
    )
    assert response.status_code == 202, response.content
    return response.json()["data"]


def finished(api, job_id: str) -> dict:
    def done() -> dict | None:
        body = api.get(f"{DIARIZE}/{job_id}").json()["data"]
        return body if body["status"] in ("succeeded", "failed") else None

    return wait_for(done, timeout_s=180, interval_s=0.2, what=f"job {job_id}")


def test_diarization_jobs_run_only_on_a_node_of_the_tenants_pool(cluster, pooled):
    start(cluster, **{"node-a": "pool-a", "node-b": "pool-b"})
    alice = enroll(pooled.alpha_api)

    # Least-busy routing alone would send the second job to the idle node-b.
    first, second = submit(pooled.alpha_api), submit(pooled.alpha_api)
    beta_job = submit(pooled.beta_api)

    assert (first["node_id"], second["node_id"], beta_job["node_id"]) == (
        "node-a",
        "node-a",
        "node-b",
    )
    assert alice["enrolled_on"] == ["node-a"]
    for api, job, node_id, gallery in (
        (pooled.alpha_api, first, "node-a", 1),
        (pooled.alpha_api, second, "node-a", 1),
        (pooled.beta_api, beta_job, "node-b", 0),
    ):
        body = finished(api, job["id"])
        assert body["status"] == "succeeded", body
        assert (body["node_id"], body["result"]["node_id"]) == (node_id, node_id)
        # Labelled from the gallery its pool's node holds for the tenant.
        assert body["result"]["model"]["gallery_size"] == gallery


def test_a_tenant_moved_to_another_pool_is_erased_where_it_is_held_and_released(
    cluster, pooled, settings
):
    node_a, node_b = start(cluster, **{"node-a": "pool-a", "node-b": "pool-b"})
    alice = enroll(pooled.alpha_api)
    carol = enroll(pooled.alpha_api)
    assert alice["enrolled_on"] == carol["enrolled_on"] == ["node-a"]

    # The operator moves tenant alpha to pool-b: the new setting everywhere, then a restart
    # of pool B's node, which loads alpha's stored voiceprints.
    moved = f"pool-a={pooled.gamma.slug};pool-b={pooled.alpha.slug},{pooled.beta.slug}"
    settings.NODE_POOLS = moved
    for node in (node_a, node_b):
        node.env["NODE_POOLS"] = moved
    restart(node_b)
    assert last_load(node_b) == 2
    view = warm_view(pooled.alpha_api, alice["id"])
    assert view["warm_node_ids"] == ["node-a", "node-b"]
    assert (view["candidate_node_ids"], view["stale_node_ids"]) == (["node-b"], ["node-a"])

    # node-a, not restarted yet, still holds alice: the erasure reaches it all the same.
    erased = pooled.alpha_api.delete(f"{SPEAKERS}/{alice['id']}").json()["data"]
    assert sorted(n["node_id"] for n in erased["nodes"]) == ["node-a", "node-b"]
    done = wait_for(
        lambda: (
            (
                r := pooled.alpha_api.get(
                    f"/v1/modules/scaiecho/erasures/{erased['audit_id']}"
                ).json()["data"]
            )["complete"]
            and r
        ),
        what="both nodes to confirm the eviction",
    )
    assert [n["state"] for n in done["nodes"]] == ["evicted", "evicted"]
    wait_for(lambda: gallery_sizes() == {"node-a": 1, "node-b": 1}, what="alice evicted")

    # node-a restarts in pool-a, which alpha left: it drops carol's assignment, loads nothing.
    restart(node_a)
    assert "released 1 assignments of tenants outside pool pool-a" in node_a.log()
    assert last_load(node_a) == 0
    assert gallery_sizes() == {"node-a": 0, "node-b": 1}
    assert assigned(carol["id"]) == {"node-b": "warm"}
    assert registry.warm_node_ids(carol["id"]) == ["node-b"]
    assert assigned(alice["id"]) == {"node-a": "evicted", "node-b": "evicted"}
