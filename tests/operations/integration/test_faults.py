"""Faults injected for real: the database connection severed in the middle of a request."""

from __future__ import annotations

import pytest
from django.db import OperationalError, connection

from audit.models import AuditEvent, ErasureAudit
from consent.models import ConsentRecord
from enrollment import preflight as preflight_module
from enrollment.models import Speaker
from tests.factories import client_for, enrollment_form, make_key, make_tenant
from tests.faults import HangingEndpoint, PrivateRedis, sever
from tests.live import answers, free_port

pytestmark = [pytest.mark.live]


def test_a_connection_lost_mid_enrollment_answers_503_and_leaves_nothing(
    live_db, s3_blob_store, monkeypatch
):
    api = client_for(make_key(make_tenant())[1])
    original = preflight_module.Preflight.run

    def run_then_lose_the_database(self, *args, **kwargs):
        report = original(self, *args, **kwargs)
        # The preflight passed; the database goes away before anything is written.
        sever(connection.connection.info.backend_pid)
        return report

    monkeypatch.setattr(preflight_module.Preflight, "run", run_then_lose_the_database)

    response = api.post("/v1/modules/scaiecho/speakers", enrollment_form(), format="multipart")

    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "database_unavailable"
    assert response["Retry-After"]
    connection.close()  # the test's own connection was the one severed
    assert Speaker.objects.count() == 0
    assert ConsentRecord.objects.count() == 0
    listing = s3_blob_store.client.list_object_versions(Bucket=s3_blob_store.bucket)
    assert listing.get("Versions", []) == []
    # The next request gets a fresh connection and is served.
    assert api.get("/v1/modules/scaiecho/speakers").status_code == 200


def stored_keys(store) -> list[str]:
    listing = store.client.list_object_versions(Bucket=store.bucket)
    return sorted(version["Key"] for version in listing.get("Versions", []))


def test_a_connection_lost_mid_transaction_rolls_everything_back(
    live_db, s3_blob_store, consent_then
):
    api = client_for(make_key(make_tenant())[1])
    consent_then(lambda: sever(connection.connection.info.backend_pid))

    response = api.post("/v1/modules/scaiecho/speakers", enrollment_form(), format="multipart")

    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "database_unavailable"
    connection.close()
    assert Speaker.objects.count() == 0 and ConsentRecord.objects.count() == 0
    assert stored_keys(s3_blob_store) == []  # both recordings were written, then removed


def test_a_connection_lost_as_commit_is_sent_stores_nothing(
    live_db, s3_blob_store, at_enrollment_commit
):
    """The connection dies with the transaction complete and COMMIT about to go out: the
    server rolls it back, and the service knows it did."""
    api = client_for(make_key(make_tenant())[1])
    at_enrollment_commit(before=lambda database: sever(database.connection.info.backend_pid))

    response = api.post("/v1/modules/scaiecho/speakers", enrollment_form(), format="multipart")

    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "database_unavailable"
    connection.close()
    assert Speaker.objects.count() == 0 and ConsentRecord.objects.count() == 0
    assert stored_keys(s3_blob_store) == []


def test_a_commit_whose_answer_is_lost_keeps_what_was_committed(
    live_db, s3_blob_store, at_enrollment_commit
):
    """COMMIT reaches the server, the connection dies before its answer arrives: the
    enrollment is stored, so its recordings stay and the client gets the speaker."""
    api = client_for(make_key(make_tenant())[1])

    def lose_the_answer(database):
        sever(database.connection.info.backend_pid)
        raise OperationalError("server closed the connection unexpectedly")

    at_enrollment_commit(after=lose_the_answer)

    response = api.post("/v1/modules/scaiecho/speakers", enrollment_form(), format="multipart")

    assert response.status_code == 201, response.content
    body = response.json()["data"]
    assert body["enrollment_status"] == "pending" and "connection was lost" in body["note"]
    speaker = Speaker.objects.get(id=body["id"])
    assert ConsentRecord.objects.filter(speaker=speaker).count() == 1
    assert len(stored_keys(s3_blob_store)) == 2
    assert AuditEvent.objects.filter(action="speaker.enrolled").count() == 1


def test_an_outcome_the_database_cannot_tell_keeps_the_recordings(
    live_db, s3_blob_store, at_enrollment_commit, monkeypatch, caplog
):
    """The connection dies as COMMIT goes out and the database then stays unreachable: the
    service cannot learn whether the enrollment committed, so it answers 503 and keeps the
    recordings (never a consent record pointing at nothing), naming them in an error line."""
    from enrollment import services

    monkeypatch.setattr(services, "COMMIT_OUTCOME_WAIT_S", 0.5)
    api = client_for(make_key(make_tenant())[1])

    def sever_and_lose_the_database(database):
        sever(database.connection.info.backend_pid)
        # From here on no new connection reaches PostgreSQL.
        monkeypatch.setitem(database.settings_dict, "PORT", str(free_port()))

    at_enrollment_commit(before=sever_and_lose_the_database)

    response = api.post("/v1/modules/scaiecho/speakers", enrollment_form(), format="multipart")

    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "database_unavailable"
    monkeypatch.undo()
    connection.close()
    assert len(stored_keys(s3_blob_store)) == 2
    assert any("commit outcome unknown" in r.getMessage() for r in caplog.records)


def test_a_connection_lost_mid_erasure_changes_nothing(live_db, s3_blob_store, monkeypatch):
    from nodes.services import orchestrator

    api = client_for(make_key(make_tenant())[1])
    created = api.post("/v1/modules/scaiecho/speakers", enrollment_form(), format="multipart")
    assert created.status_code == 201
    speaker_id = created.json()["data"]["id"]
    original = orchestrator.evict_everywhere

    def sever_then_evict(speaker):
        sever(connection.connection.info.backend_pid)
        return original(speaker)

    monkeypatch.setattr(orchestrator, "evict_everywhere", sever_then_evict)
    refused = api.delete(f"/v1/modules/scaiecho/speakers/{speaker_id}")

    assert refused.status_code == 503, refused.content
    assert refused.json()["error"]["code"] == "database_unavailable"
    connection.close()
    speaker = Speaker.objects.get(id=speaker_id)
    assert speaker.enrollment_status == "pending" and speaker.display_name == "Alice Example"
    assert not ErasureAudit.objects.exists()
    assert len(stored_keys(s3_blob_store)) == 2  # blobs go only after the erasure commits
    monkeypatch.setattr(orchestrator, "evict_everywhere", original)
    erased = api.delete(f"/v1/modules/scaiecho/speakers/{speaker_id}")
    assert erased.status_code == 200 and erased.json()["data"]["blobs_state"] == "deleted"
    assert stored_keys(s3_blob_store) == []


@pytest.mark.slow
def test_work_queued_when_the_api_dies_is_done_after_it(cluster, loaded_models):
    """The API process is SIGKILLed right after accepting an enrollment and a diarization
    whose messages wait in a stopped node's queue; nothing is lost once the node resumes."""
    import os
    import signal
    import subprocess
    import sys

    import httpx

    from diarization.models import DiarizationJob
    from tests import audio
    from tests.live import ROOT, free_port, wait_for

    # A stopped node must stay a candidate while the requests are made (its heartbeat lives on).
    cluster.env["NODE_HEARTBEAT_TTL_S"] = "120"
    node = cluster.start("node-q")[0]
    key = make_key(make_tenant())[1]
    port = free_port()
    env = {**cluster.env, "ENROLLMENT_ACK_WAIT_S": "0"}
    api_process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "config.asgi:application", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/v1/modules/scaiecho"
    headers = {"Authorization": f"Bearer {key}"}
    try:
        wait_for(lambda: answers(f"{base}/speakers", headers), timeout_s=120, what="the API")
        os.kill(node.process.pid, signal.SIGSTOP)  # the node takes nothing from its queue
        form = enrollment_form()
        files = {name: (f.name, f.read()) for name, f in form.items() if hasattr(f, "read")}
        data = {name: v for name, v in form.items() if not hasattr(v, "read")}
        enrolled = httpx.post(
            f"{base}/speakers", data=data, files=files, headers=headers, timeout=120
        )
        assert (
            enrolled.status_code == 201
            and enrolled.json()["data"]["enrollment_status"] == "pending"
        )
        job = httpx.post(
            f"{base}/diarize",
            files={"audio": ("m.wav", audio.encode(audio.sample()))},
            headers=headers,
            timeout=120,
        )
        assert job.status_code == 202
    finally:
        api_process.send_signal(signal.SIGKILL)
        api_process.wait(timeout=30)
    os.kill(node.process.pid, signal.SIGCONT)

    speaker_id = enrolled.json()["data"]["id"]
    wait_for(
        lambda: Speaker.objects.get(id=speaker_id).enrollment_status == "ready",
        timeout_s=60,
        what="the queued warm",
    )
    wait_for(
        lambda: DiarizationJob.objects.get(id=job.json()["data"]["id"]).status == "succeeded",
        timeout_s=60,
        what="the queued job",
    )


@pytest.fixture
def stalled_s3(s3_blob_store, settings, monkeypatch):
    """The blob store's S3 starts hanging: every call times out after the configured bounds."""
    from common import blobs

    settings.S3_CONNECT_TIMEOUT_S = 1.0
    settings.S3_READ_TIMEOUT_S = 1.0
    settings.S3_MAX_ATTEMPTS = 1
    endpoint = HangingEndpoint()
    settings.S3_ENDPOINT_URL = endpoint.url
    stalled = blobs.S3BlobStore(blobs.s3_client(), s3_blob_store.bucket)
    monkeypatch.setattr(blobs, "get_blob_store", lambda: stalled)
    for module in (
        "enrollment.services",
        "diarization.services.jobs",
        "diarization.services.completion",
        "nodes.services.node_work",
    ):
        monkeypatch.setattr(f"{module}.get_blob_store", lambda: stalled)
    yield stalled
    endpoint.close()


def test_an_s3_timeout_during_enrollment_is_a_prompt_503_with_nothing_stored(
    db, stalled_s3, loaded_models
):
    # The models are loaded first: the bound below is on the blob store, not a cold start.
    import time

    api = client_for(make_key(make_tenant())[1])
    started = time.monotonic()
    response = api.post("/v1/modules/scaiecho/speakers", enrollment_form(), format="multipart")
    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "blob_store_unavailable"
    assert time.monotonic() - started < 20
    assert Speaker.objects.count() == 0 and ConsentRecord.objects.count() == 0


def test_an_s3_timeout_during_erasure_leaves_an_honest_receipt(
    db, s3_blob_store, settings, monkeypatch, django_capture_on_commit_callbacks
):
    api = client_for(make_key(make_tenant())[1])
    settings.ENROLLMENT_ACK_WAIT_S = 0.0
    with django_capture_on_commit_callbacks(execute=False):
        created = api.post("/v1/modules/scaiecho/speakers", enrollment_form(), format="multipart")
    assert created.status_code == 201
    speaker_id = created.json()["data"]["id"]

    from common import blobs

    settings.S3_CONNECT_TIMEOUT_S = 1.0
    settings.S3_READ_TIMEOUT_S = 1.0
    settings.S3_MAX_ATTEMPTS = 1
    endpoint = HangingEndpoint()
    try:
        settings.S3_ENDPOINT_URL = endpoint.url
        hanging = blobs.S3BlobStore(blobs.s3_client(), s3_blob_store.bucket)
        monkeypatch.setattr("enrollment.services.get_blob_store", lambda: hanging)
        with django_capture_on_commit_callbacks(execute=True):
            receipt = api.delete(f"/v1/modules/scaiecho/speakers/{speaker_id}").json()["data"]
    finally:
        endpoint.close()
    assert receipt["blobs_state"] == "failing" and receipt["complete"] is False
    assert "blob_store" in receipt["error_summary"]
    assert Speaker.objects.get(id=speaker_id).enrollment_status == "evicted"


@pytest.mark.slow
def test_redis_restarted_under_the_service_loses_nothing(
    live_db, moto_server, settings, tmp_path, loaded_models
):
    """Redis (registry and broker) is killed and restarted empty while the service runs: an
    enrollment meanwhile gets a clean 503; afterwards the node rebuilds the registry from its
    gallery, new enrollments fan out again and no speaker is left pending."""
    import subprocess
    import sys

    import httpx

    from nodes import registry
    from tests.live import ROOT, NodeProcess, free_port, node_environment, wait_for

    redis = PrivateRedis(tmp_path)
    redis.start()
    env = node_environment(moto_server, settings.S3_BUCKET)
    env.update({"REDIS_URL": redis.url, "ENROLLMENT_ACK_WAIT_S": "20"})
    env.pop("CELERY_BROKER_URL", None)
    shared_redis_url = settings.REDIS_URL
    settings.REDIS_URL = redis.url
    registry.redis_client.cache_clear()
    node = NodeProcess("node-r", env, tmp_path)
    port = free_port()
    api_process = None
    try:
        node.start()
        api_process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "config.asgi:application", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}/v1/modules/scaiecho"
        headers = {"Authorization": f"Bearer {make_key(make_tenant())[1]}"}
        wait_for(lambda: answers(f"{base}/speakers", headers), timeout_s=120, what="the API")

        def enroll() -> httpx.Response:
            form = enrollment_form()
            files = {k: (f.name, f.read()) for k, f in form.items() if hasattr(f, "read")}
            data = {k: v for k, v in form.items() if not hasattr(v, "read")}
            return httpx.post(
                f"{base}/speakers", data=data, files=files, headers=headers, timeout=120
            )

        first = enroll()
        assert first.status_code == 201 and first.json()["data"]["enrollment_status"] == "ready"

        redis.kill()
        refused = enroll()
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "backend_unavailable"
        assert Speaker.objects.count() == 1

        redis.start()  # empty: no heartbeat, no warm entries, no queues
        first_id = first.json()["data"]["id"]
        wait_for(
            lambda: "node-r" in registry.warm_node_ids(first_id),
            timeout_s=60,
            what="the node to republish what it holds",
        )
        second = wait_for(
            lambda: (r := enroll()).status_code == 201 and r,
            timeout_s=60,
            what="enrollment to work again",
        )
        wait_for(
            lambda: (
                Speaker.objects.get(id=second.json()["data"]["id"]).enrollment_status == "ready"
            ),
            timeout_s=60,
            what="the new enrollment to fan out",
        )
        assert not Speaker.objects.filter(enrollment_status="pending").exists()
    finally:
        if api_process is not None:
            api_process.terminate()
            api_process.wait(timeout=30)
        node.stop()
        redis.kill()
        # The fixtures' own clean-up talks to the shared Redis again.
        settings.REDIS_URL = shared_redis_url
        registry.redis_client.cache_clear()
