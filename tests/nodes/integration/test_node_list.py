"""The node list shows a tenant its own warm speakers and nothing about other tenants or hosts."""

from __future__ import annotations

import time

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from console.services import create_console_user
from enrollment.models import EnrollmentStatus, Speaker
from nodes import registry
from nodes.models import AssignmentState, Node, NodeAssignment
from tests.factories import client_for, make_key, make_speaker, make_tenant, store_voiceprint

HOST = "gpu-host-7.internal"
PID = 48213
# What the API may show a tenant about a node, and nothing more.
FIELDS = {
    "node_id",
    "alive",
    "candidate",
    "heartbeat_age_s",
    "engine",
    "model_id",
    "model_version",
    "warm_count",
    "last_seen_at",
    "pool",
    "voiceprints_missing",
}


@pytest.fixture
def busy_node(db, tenant):
    """node-a holds two speakers of ``tenant`` and five of another tenant."""
    now = timezone.now()
    Node.objects.create(
        node_id="node-a",
        engine="pyannote",
        model_id="m",
        model_version="v",
        boot_id="boot-a",
        host=HOST,
        pid=PID,
        booted_at=now,
        last_seen_at=now,
    )
    registry.publish_heartbeat(
        registry.Heartbeat(
            node_id="node-a",
            engine="pyannote",
            model_id="m",
            model_version="v",
            boot_id="boot-a",
            host=HOST,
            pid=PID,
            gallery_size=7,
            sent_at=time.time(),
        )
    )
    other = make_tenant()
    for owner, count in ((tenant, 2), (other, 5)):
        for i in range(count):
            NodeAssignment.objects.create(
                speaker=make_speaker(owner, f"S{i}"),
                node_id="node-a",
                state=AssignmentState.WARM,
                queued_at=now,
            )


def test_the_api_shows_only_the_tenants_warm_count_and_no_host(tenant, busy_node):
    auditor = client_for(make_key(tenant, ["scaiecho:audit"])[1])

    [node] = auditor.get("/v1/modules/scaiecho/nodes").json()["data"]

    assert set(node) == FIELDS
    assert node["warm_count"] == 2 and node["alive"] and node["candidate"]
    stranger = client_for(make_key(make_tenant(), ["scaiecho:audit"])[1])
    assert stranger.get("/v1/modules/scaiecho/nodes").json()["data"][0]["warm_count"] == 0


def test_the_console_page_shows_only_the_tenants_warm_count_and_no_host(
    tenant, busy_node, settings
):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    client = Client()
    client.force_login(create_console_user(tenant, "auditor-nodes", "auditor", "x")[0])

    page = client.get("/console/nodes/").content.decode()

    row = page[page.index("<td>node-a</td>") :].split("</tr>")[0]
    assert "<td>2</td>" in row
    for hidden in (HOST, str(PID), "boot-a", "<td>7</td>", "Gallery size"):
        assert hidden not in page, hidden


def test_operators_see_host_pid_and_gallery_in_the_admin_and_metrics(busy_node, client, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    operator = Client()
    operator.force_login(get_user_model().objects.create_superuser("root", password="x"))

    page = operator.get("/admin/nodes/node/").content.decode()
    metrics = client.get("/metrics").content.decode()

    assert HOST in page and str(PID) in page and '<td class="field-gallery_size">7</td>' in page
    assert 'scaiecho_node_gallery_size{node="node-a"} 7.0' in metrics


def test_voiceprints_missing_counts_the_tenants_speakers_without_the_nodes_model(
    tenant, busy_node, client
):
    auditor = client_for(make_key(tenant, ["scaiecho:audit"])[1])

    def missing() -> int:
        [node] = auditor.get("/v1/modules/scaiecho/nodes").json()["data"]
        return node["voiceprints_missing"]

    assert missing() == 2  # node-a runs model m version v; nothing is stored yet
    first, second = Speaker.objects.filter(tenant=tenant)
    store_voiceprint(first, np.eye(256, dtype=np.float32)[0])  # m, v: node-a loads it
    Speaker.objects.filter(id=second.id).update(embedding_model_version="v0")
    second.refresh_from_db()
    store_voiceprint(second, np.eye(256, dtype=np.float32)[1])  # another version: still missing
    held = make_speaker(tenant, "Held")
    Speaker.objects.filter(id=held.id).update(enrollment_status=EnrollmentStatus.NEEDS_REVIEW)

    assert missing() == 1
    stranger = client_for(make_key(make_tenant(), ["scaiecho:audit"])[1])
    assert stranger.get("/v1/modules/scaiecho/nodes").json()["data"][0]["voiceprints_missing"] == 0
    # Operators see every tenant's: 7 warmable speakers, one with a voiceprint of m, v.
    metrics = client.get("/metrics").content.decode()
    assert 'scaiecho_node_voiceprints_missing{node="node-a"} 6.0' in metrics
