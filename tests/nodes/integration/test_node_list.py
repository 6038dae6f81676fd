"""The node list shows a tenant its own warm speakers and nothing about other tenants or hosts."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from console.services import create_console_user
from nodes import registry
from nodes.models import AssignmentState, Node, NodeAssignment
from tests.factories import client_for, make_key, make_speaker, make_tenant

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
