"""Faults injected for real into running processes: S3 stalling under a node and under the
erasure retry, Redis restarted empty with a fan-out message in flight."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from enrollment.models import Speaker, Voiceprint
from nodes import registry
from nodes.models import NodeAssignment
from tests.factories import client_for, enroll, enrollment_form, make_key, make_tenant
from tests.faults import PrivateRedis, SwitchableProxy
from tests.live import wait_for

pytestmark = [pytest.mark.live]

SPEAKERS = "/v1/modules/scaiecho/speakers"
# Every S3 call of the faulty process gives up after one attempt of these bounds.
S3_BOUNDS = {"S3_CONNECT_TIMEOUT_S": "1", "S3_READ_TIMEOUT_S": "1", "S3_MAX_ATTEMPTS": "1"}


@pytest.mark.slow
def test_s3_stalling_under_a_node_keeps_the_speaker_pending_until_it_answers(
    cluster, moto_server, settings, loaded_models, consent_then
):
    """Fault: the node's S3 accepts connections and never answers while the node fetches a
    reference during fan-out, for longer than the warm task's retries last (the node has no
    stored voiceprint of its model to load, so it must embed the recording). Expected: each
    attempt gives up within the S3 bounds, the node's heartbeat lives on, the speaker stays
    honestly pending (its assignment queued, the error kept, never ready or failed); once S3
    answers again the reconciler re-sends the warm and the speaker turns ready on the node."""
    settings.ENROLLMENT_ACK_WAIT_S = 0.0
    proxy = SwitchableProxy(moto_server)
    cluster.env.update(
        S3_BOUNDS,
        S3_ENDPOINT_URL=proxy.url,
        NODE_TASK_MAX_RETRIES="1",
        NODE_RECONCILE_INTERVAL_S="1",
        NODE_REQUEUE_AFTER_S="3",
    )
    try:
        node = cluster.node("node-s").start(wait=False)
        cluster.orchestrator(beat=True)  # the reconciler, on its beat, as in production
        node.wait_until_candidate()

        def node_alive() -> bool:
            beat = registry.live_heartbeats().get("node-s")
            return node.process.poll() is None and beat is not None and beat.pid == node.process.pid

        # No voiceprint of the node's model is stored (another model's preflight, say): the
        # node must read the recording. Removed inside the enrollment's transaction, before
        # the fan-out leaves.
        consent_then(lambda: Voiceprint.objects.all().delete())
        proxy.stall()
        enrolled_at = time.monotonic()
        speaker_id = enroll(client_for(make_key(make_tenant())[1]))["id"]

        def assignment() -> NodeAssignment:
            return NodeAssignment.objects.get(speaker_id=speaker_id, node_id="node-s")

        def gave_up() -> int:
            # The node's own account of each warm task that ended without S3.
            return node.log_path.read_text(errors="replace").count(": 'deferred'")

        # Two attempts (the task and its one retry) of one bounded S3 call each, then it
        # gives up; unbounded, the first fetch alone would hang for minutes.
        wait_for(lambda: gave_up() >= 1, timeout_s=20, what="the warm to give up")
        assert time.monotonic() - enrolled_at < 15
        held = assignment()
        assert held.state == "queued" and "blob_unavailable" in held.last_error, held
        assert Speaker.objects.get(id=speaker_id).enrollment_status == "pending"
        assert node_alive()

        # The reconciler re-sends through the outage; that warm gives up too, failing nothing.
        wait_for(lambda: gave_up() >= 2, timeout_s=30, what="the re-sent warm to give up")
        assert assignment().state == "queued"
        assert Speaker.objects.get(id=speaker_id).enrollment_status == "pending"
        assert node_alive()

        proxy.forward()
        wait_for(
            lambda: Speaker.objects.get(id=speaker_id).enrollment_status == "ready",
            timeout_s=30,
            what="the speaker to turn ready once S3 answers",
        )
        held = assignment()
        assert held.state == "warm" and held.last_error == ""
        assert registry.warm_node_ids(speaker_id) == ["node-s"]
        assert not Speaker.objects.filter(enrollment_status="pending").exists()
    finally:
        proxy.close()


@pytest.mark.slow
def test_s3_stalling_under_the_erasure_retry_keeps_the_receipt_honest_until_it_answers(
    cluster, moto_server, s3_blob_store, settings, loaded_models
):
    """Fault: S3 accepts connections and never answers while an erasure's blob deletion is
    retried, in-process and by the orchestrator's beat (the real Celery task). Expected: each
    retry gives up within the S3 bounds and changes nothing (receipt failing, not complete, the
    error kept, every version still stored, no new audit event); once S3 answers, the beat's next
    retry deletes every version, the receipt turns complete and the audit chain verifies."""
    from audit.models import AuditEvent, ErasureConfirmation
    from audit.services import verify_chain
    from common.blobs import get_blob_store
    from enrollment.services import retry_blob_erasures

    settings.ENROLLMENT_ACK_WAIT_S = 0.0
    proxy = SwitchableProxy(moto_server)
    # This process and the orchestrator both reach S3 through the proxy, with the same bounds.
    settings.S3_ENDPOINT_URL = proxy.url
    for name, value in S3_BOUNDS.items():
        setattr(settings, name, float(value))
    get_blob_store.cache_clear()
    cluster.env.update(
        S3_BOUNDS,
        S3_ENDPOINT_URL=proxy.url,
        NODE_RECONCILE_INTERVAL_S="1",
        NODE_REQUEUE_AFTER_S="1",
    )
    try:
        orchestrator = cluster.orchestrator(beat=True)
        api = client_for(make_key(make_tenant())[1])
        speaker_id = enroll(api)["id"]  # no node online: pending, both blobs stored

        def versions(keys: list[str]) -> list[str]:
            # Straight from moto, past the proxy: what is really still stored.
            found = []
            for key in keys:
                listing = s3_blob_store.client.list_object_versions(
                    Bucket=s3_blob_store.bucket, Prefix=key
                )
                found += [v["VersionId"] for v in listing.get("Versions", [])]
                found += [m["VersionId"] for m in listing.get("DeleteMarkers", [])]
            return found

        proxy.stall()
        erased = api.delete(f"{SPEAKERS}/{speaker_id}").json()["data"]
        assert erased["blobs_state"] == "failing" and erased["complete"] is False

        def receipt() -> dict:
            answer = api.get(f"/v1/modules/scaiecho/erasures/{erased['audit_id']}")
            return answer.json()["data"]

        failing = receipt()
        assert "blob_store" in failing["error_summary"]
        stored = versions(failing["blob_keys"])
        assert len(stored) == 2
        confirmations = list(ErasureConfirmation.objects.values_list("id", flat=True))
        events = AuditEvent.objects.count()

        # Only the first key is tried: one bounded call, then the retry gives up.
        started = time.monotonic()
        assert retry_blob_erasures(older_than_s=0) == 0
        assert time.monotonic() - started < 5

        def beat_log() -> str:
            return orchestrator.log_path.read_text(errors="replace")

        # The beat's own retries meet the stall too (one warning each), each within the bounds.
        wait_for(
            lambda: sum("Read timeout" in line for line in beat_log().splitlines()) >= 2,
            timeout_s=20,
            what="the beat's retries to meet the stall",
        )
        durations = re.findall(r"retry_blob_erasures\[[^\]]+\] succeeded in ([0-9.]+)s", beat_log())
        assert durations and max(float(d) for d in durations) < 5, durations
        assert receipt() == failing
        assert versions(failing["blob_keys"]) == stored
        assert list(ErasureConfirmation.objects.values_list("id", flat=True)) == confirmations
        assert AuditEvent.objects.count() == events
        assert Speaker.objects.get(id=speaker_id).enrollment_status == "evicted"

        proxy.forward()
        wait_for(
            lambda: receipt()["complete"],
            timeout_s=20,
            what="the beat's retry to finish the erasure once S3 answers",
        )
        done = receipt()
        assert done["blobs_state"] == "deleted" and done["error_summary"] == {}
        assert done["blob_versions_deleted"] == 2
        assert versions(done["blob_keys"]) == []
        assert verify_chain().intact
    finally:
        proxy.close()


@pytest.mark.slow
def test_redis_restarted_empty_with_a_warm_in_flight_loses_nothing(
    cluster, settings, tmp_path, loaded_models
):
    """Fault: Redis (registry and broker) is SIGKILLed and restarted empty while an enrollment's
    warm message waits in a stopped node's queue, so the message is lost. Expected: once the node
    resumes it re-registers, the orchestrator's reconciler re-sends the lost warm, the speaker
    turns ready on the node and no speaker is left pending."""
    import httpx
    import redis as redis_lib

    from tests.live import ROOT, answers, free_port

    redis = PrivateRedis(tmp_path)
    redis.start()
    # A stopped node stays a candidate while the enrollment is made (its heartbeat lives on).
    cluster.env.update(
        REDIS_URL=redis.url,
        NODE_HEARTBEAT_TTL_S="120",
        NODE_RECONCILE_INTERVAL_S="1",
        NODE_REQUEUE_AFTER_S="3",
        ENROLLMENT_ACK_WAIT_S="0",
    )
    cluster.env.pop("CELERY_BROKER_URL", None)
    # This process reads the registry of the private Redis too.
    shared_redis_url = settings.REDIS_URL
    settings.REDIS_URL = redis.url
    registry.redis_client.cache_clear()
    port = free_port()
    api_process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "config.asgi:application", "--port", str(port)],
        cwd=ROOT,
        env=cluster.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    node = cluster.node("node-r")
    try:
        node.start(wait=False)
        cluster.orchestrator(beat=True)  # the reconciler, on its beat, as in production
        node.wait_until_candidate()
        base = f"http://127.0.0.1:{port}{SPEAKERS}"
        headers = {"Authorization": f"Bearer {make_key(make_tenant())[1]}"}
        wait_for(lambda: answers(base, headers), timeout_s=120, what="the API")

        os.kill(node.process.pid, signal.SIGSTOP)
        time.sleep(2)  # its last BRPOP (1 s) expires: the warm stays in Redis, not in its socket
        form = enrollment_form()
        files = {k: (f.name, f.read()) for k, f in form.items() if hasattr(f, "read")}
        data = {k: v for k, v in form.items() if not hasattr(v, "read")}
        enrolled = httpx.post(base, data=data, files=files, headers=headers, timeout=120)
        assert enrolled.status_code == 201, enrolled.text
        speaker_id = enrolled.json()["data"]["id"]
        assert enrolled.json()["data"]["enrollment_status"] == "pending"
        broker = redis_lib.Redis.from_url(redis.url)
        assert broker.llen("node.node-r") >= 1  # the warm waits in the node's queue

        redis.kill()
        redis.start()  # empty: no heartbeat, no registry, no queued warm
        assert redis_lib.Redis.from_url(redis.url).llen("node.node-r") == 0
        os.kill(node.process.pid, signal.SIGCONT)

        wait_for(
            lambda: "node-r" in registry.candidate_node_ids(),
            timeout_s=30,
            what="the node to register again",
        )
        wait_for(
            lambda: Speaker.objects.get(id=speaker_id).enrollment_status == "ready",
            timeout_s=60,
            what="the lost warm to be re-sent and done",
        )
        assert registry.warm_node_ids(speaker_id) == ["node-r"]
        assert NodeAssignment.objects.get(speaker_id=speaker_id, node_id="node-r").state == "warm"
        assert not Speaker.objects.filter(enrollment_status="pending").exists()
    finally:
        if node.process is not None and node.process.poll() is None:
            os.kill(node.process.pid, signal.SIGCONT)  # a stopped process ignores SIGTERM
        api_process.terminate()
        api_process.wait(timeout=30)
        cluster.stop_all()  # while their Redis still runs, so that they shut down cleanly
        redis.kill()
        # The fixtures' own clean-up talks to the shared Redis again.
        settings.REDIS_URL = shared_redis_url
        registry.redis_client.cache_clear()
