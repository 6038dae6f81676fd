"""A held enrollment with real node processes: on no node and never a label until a second
person approves it, then ready on the node like any enrollment."""

from __future__ import annotations

import pytest

from nodes.models import NodeAssignment
from tests import audio
from tests.factories import client_for, enrollment_form, make_key, make_tenant, upload
from tests.live import wait_for

pytestmark = [pytest.mark.live, pytest.mark.slow]

SPEAKERS = "/v1/modules/scaiecho/speakers"
DIARIZE = "/v1/modules/scaiecho/diarize"


def labels_of_the_sample(client) -> set[str]:
    sample = upload("meeting.wav", audio.encode(audio.sample()), "audio/wav")
    job = client.post(DIARIZE, {"audio": sample}, format="multipart").json()["data"]

    def done() -> dict | None:
        body = client.get(f"{DIARIZE}/{job['id']}").json()["data"]
        return body if body["status"] in ("succeeded", "failed") else None

    result = wait_for(done, timeout_s=180, interval_s=0.5, what="the diarization")["result"]
    return {s["speaker_label"] for s in result["speakers"] if s.get("enrolled")}


def test_a_held_enrollment_reaches_the_node_only_once_approved(cluster, loaded_models):
    cluster.start("node-a")
    tenant = make_tenant()
    enroller, reviewer = (client_for(make_key(tenant)[1]) for _ in range(2))
    consent = upload("c.wav", audio.encode(audio.clip(audio.SPEAKER_B_CONSENT)), "audio/wav")

    held = enroller.post(SPEAKERS, enrollment_form(consent=consent), format="multipart")

    assert held.status_code == 201, held.content
    speaker_id = held.json()["data"]["id"]
    assert held.json()["data"]["enrollment_status"] == "needs_review"
    assert held.json()["data"]["enrolled_on"] == []
    assert speaker_id not in labels_of_the_sample(enroller)
    assert enroller.get(f"{SPEAKERS}/{speaker_id}/warm").json()["data"]["warm_node_ids"] == []
    assert not NodeAssignment.objects.filter(speaker_id=speaker_id).exists()

    approved = reviewer.post(
        f"{SPEAKERS}/{speaker_id}/review", {"decision": "approve"}, format="json"
    )

    assert approved.status_code == 200, approved.content
    data = approved.json()["data"]
    assert (data["enrollment_status"], data["enrolled_on"]) == ("ready", ["node-a"])
    wait_for(
        lambda: (
            enroller.get(f"{SPEAKERS}/{speaker_id}/warm").json()["data"]["warm_node_ids"]
            == ["node-a"]
        ),
        what="the node to hold the approved speaker",
    )
    assert speaker_id in labels_of_the_sample(enroller)
