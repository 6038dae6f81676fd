"""Batch diarization through real node processes and the orchestrator worker (no eager mode)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from diarization.models import DiarizationJob
from diarization.services import jobs, node_work
from diarization.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, verify
from enrollment.models import Speaker
from nodes.runtime import NodeRuntime
from tenancy.models import Tenant
from tenancy.services import webhook_secret
from tests import audio
from tests.factories import client_for, enrollment_form, make_key, make_tenant, upload
from tests.live import wait_for
from tests.webhooks import WebhookReceiver
from voice.engines import get_engine

pytestmark = [pytest.mark.live, pytest.mark.slow]

SPEAKERS = "/v1/modules/scaiecho/speakers"
DIARIZE = "/v1/modules/scaiecho/diarize"
# Enrollment clips of at most 5 s from the sample (speaker90 = A, speaker91 = B).
CLIP_A = [(10.6, 14.45)]
CLIP_B = [(21.9, 26.9)]


@pytest.fixture
def diarize_env(cluster):
    cluster.env.update(
        {
            "WEBHOOK_ALLOW_PRIVATE_HOSTS": "true",
            "WEBHOOK_BACKOFF_S": "0.2",
            "DIARIZE_TASK_MAX_RETRIES": "0",
        }
    )
    return cluster


@pytest.fixture
def admin(diarize_env, loaded_models, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = True
    key = make_key(make_tenant())[1]
    return client_for(key)


def enroll(api, name: str, reference, consent) -> str:
    form = enrollment_form(
        display_name=name,
        consent_user_full_name=name,
        reference=upload(f"{name}.wav", audio.encode(audio.clip(reference)), "audio/wav"),
        consent=upload(f"{name}-consent.wav", audio.encode(audio.clip(consent)), "audio/wav"),
    )
    response = api.post(SPEAKERS, form, format="multipart")
    assert response.status_code == 201, response.content
    return response.json()["data"]["id"]


def submit(api, samples: np.ndarray | None = None, **fields) -> dict:
    data = audio.encode(audio.sample() if samples is None else samples)
    response = api.post(
        DIARIZE, {"audio": upload("meeting.wav", data, "audio/wav"), **fields}, format="multipart"
    )
    assert response.status_code == 202, response.content
    return response.json()["data"]


def finished(api, job_id: str, timeout_s: float = 120.0) -> dict:
    def done() -> dict | None:
        body = api.get(f"{DIARIZE}/{job_id}").json()["data"]
        return body if body["status"] in ("succeeded", "failed") else None

    return wait_for(done, timeout_s=timeout_s, interval_s=0.2, what=f"job {job_id}")


def test_enrolled_speakers_are_named_and_the_webhook_is_signed(diarize_env, admin):
    diarize_env.start("node-a")
    diarize_env.orchestrator()
    alice = enroll(admin, "Alice", CLIP_A, audio.SPEAKER_A_CONSENT)
    bob = enroll(admin, "Bob", CLIP_B, audio.SPEAKER_B_CONSENT)
    hook = WebhookReceiver([500, 204])
    try:
        job = submit(admin, webhook=hook.url, request_id="meeting-42")
        assert job["status"] == "pending"
        assert job["estimated_time"] >= 1
        body = finished(admin, job["id"])

        assert body["status"] == "succeeded", body
        assert body["node_id"] == "node-a"
        assert body["request_id"] == "meeting-42"
        segments = body["result"]["segments"]
        named = {s["speaker_label"]: s.get("display_name") for s in segments}
        assert named.get(alice) == "Alice" and named.get(bob) == "Bob"
        speakers = {s["speaker_label"]: s for s in body["result"]["speakers"]}
        assert speakers[alice]["enrolled"] and speakers[alice]["score"] >= 0.75
        assert Speaker.objects.get(id=alice).last_used_at is not None

        # Delivered after one failed attempt, signed with the tenant's secret, once.
        wait_for(lambda: len(hook.received) >= 2, timeout_s=30, what="the webhook retry")
        headers, raw = hook.received[-1]
        tenant = Tenant.objects.get(diarization_jobs__id=job["id"])
        assert verify(webhook_secret(tenant), raw, headers[SIGNATURE_HEADER])
        assert headers[DELIVERY_HEADER] == job["id"]
        assert json.loads(raw)["result"]["segments"] == segments
        stored = wait_for(
            lambda: DiarizationJob.objects.filter(id=job["id"], webhook_state="delivered").first(),
            timeout_s=10,
            what="the delivery to be recorded",
        )
        assert stored.webhook_attempts == 2
        assert stored.audio_deleted_at is not None
    finally:
        hook.close()
    assert len(hook.received) == 2


def test_an_erased_speaker_is_never_returned(diarize_env, admin):
    diarize_env.start("node-a")
    alice = enroll(admin, "Alice", CLIP_A, audio.SPEAKER_A_CONSENT)
    bob = enroll(admin, "Bob", CLIP_B, audio.SPEAKER_B_CONSENT)
    assert admin.delete(f"{SPEAKERS}/{bob}").status_code == 200

    body = finished(admin, submit(admin)["id"])

    labels = {s["speaker_label"] for s in body["result"]["segments"]}
    assert alice in labels
    assert bob not in labels
    assert bob not in json.dumps(body)
    assert "spk_0" in labels  # Bob's voice is still diarized, as an unknown voice


def test_with_no_node_online_the_job_completes_without_labels(diarize_env, admin):
    diarize_env.orchestrator()
    body = finished(admin, submit(admin)["id"])

    assert body["status"] == "succeeded"
    assert [w["code"] for w in body["warnings"]] == ["diarization_unavailable"]
    segments = body["result"]["segments"]
    assert segments and all(s["speaker_label"] is None for s in segments)


def test_a_node_killed_mid_job_loses_it_to_another_node(diarize_env, admin, settings):
    settings.DIARIZE_NODE_GRACE_S = 0.0
    diarize_env.start("node-a", "node-b")
    long_meeting = np.tile(audio.sample(), 12)  # 6 minutes
    job = submit(admin, long_meeting, num_speakers=2)
    owner = job["node_id"]
    victim = diarize_env.node(owner)
    wait_for(
        lambda: DiarizationJob.objects.get(id=job["id"]).status == "running",
        timeout_s=30,
        what="the job to start",
    )
    victim.kill()
    from nodes import registry

    wait_for(lambda: owner not in registry.candidate_node_ids(), timeout_s=15, what="the heartbeat")
    assert jobs.recover_stalled_jobs().redispatched == [job["id"]]

    body = finished(admin, job["id"], timeout_s=180)
    assert body["status"] == "succeeded"
    assert body["node_id"] != owner
    assert "node_lost" in [w["code"] for w in body["warnings"]], {
        k: v for k, v in body.items() if k != "result"
    }
    assert len({s["speaker_label"] for s in body["result"]["segments"]} - {None}) == 2, body[
        "result"
    ]["segments"][:5]
    stored = DiarizationJob.objects.get(id=job["id"])
    assert stored.attempt == 2

    # The first attempt, delivered again (acks_late), is left alone wherever it lands.
    assert node_work.run_job_here(NodeRuntime(owner, get_engine()), job["id"], 1) == "skipped"
    assert DiarizationJob.objects.get(id=job["id"]).completed_at == stored.completed_at
