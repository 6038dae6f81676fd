"""The batch diarization API, its failure paths, and a job run in-process on a node runtime."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pytest
from django.db import connection
from django.utils import timezone
from redis.exceptions import ConnectionError as RedisConnectionError

from audit.models import AuditEvent
from common.blobs import BlobStoreError
from diarization import webhooks
from diarization.models import DiarizationJob, JobStatus, WebhookState
from diarization.services import completion, jobs, node_work, webhook_delivery
from enrollment.models import EnrollmentStatus, Speaker
from nodes import registry
from nodes.models import Node
from nodes.runtime import GalleryEntry, NodeRuntime
from tenancy.models import Scope
from tenancy.services import webhook_secret
from tests import audio
from tests.factories import client_for, make_key, make_tenant, store_voiceprint, upload
from tests.webhooks import WebhookReceiver
from voice.engines import get_engine
from voice.vad import get_vad, speech_only

DIARIZE = "/v1/modules/scaiecho/diarize"
TRANSCRIBE_AND_DIARIZE = [Scope.TRANSCRIBE.value, Scope.DIARIZE.value]


def stored_keys(store) -> list[str]:
    listing = store.client.list_object_versions(Bucket=store.bucket)
    return [v["Key"] for v in listing.get("Versions", [])]


def sample_upload(samples: np.ndarray | None = None):
    data = audio.encode(audio.sample() if samples is None else samples)
    return upload("meeting.wav", data, "audio/wav")


def submit(api, **fields):
    return api.post(DIARIZE, {"audio": sample_upload(), **fields}, format="multipart")


@pytest.fixture
def queued(api, django_capture_on_commit_callbacks):
    """A job accepted with no node online (its message is captured, not sent)."""
    with django_capture_on_commit_callbacks(execute=False) as sent:
        response = submit(api, request_id="call-7")
    assert response.status_code == 202, response.content
    assert len(sent) == 1
    return response.json()["data"]


def complete_without_node(job_id: str, django_capture_on_commit_callbacks) -> DiarizationJob:
    with django_capture_on_commit_callbacks(execute=True):
        assert jobs.complete_without_node(job_id, 1, "no_node_online") == "succeeded"
    return DiarizationJob.objects.get(id=job_id)


def test_a_job_is_accepted_with_an_estimate_and_a_location(api, queued, s3_blob_store):
    response_job = queued
    job = DiarizationJob.objects.get(id=response_job["id"])

    assert response_job["status"] == "pending"
    assert response_job["request_id"] == "call-7"
    assert response_job["estimated_time"] == job.estimated_time_s >= 1
    assert response_job["audio_duration"] == pytest.approx(30.0, abs=0.05)
    assert response_job["options"]["identify"] is True
    assert response_job["options"]["threshold"] == 0.75
    assert job.attempt == 1 and job.node_id == ""
    assert stored_keys(s3_blob_store) == [job.audio_blob_key]
    assert "result" not in response_job


def test_with_no_node_the_job_completes_with_a_warning_and_its_audio_is_deleted(
    api, queued, s3_blob_store, django_capture_on_commit_callbacks
):
    job = complete_without_node(queued["id"], django_capture_on_commit_callbacks)

    body = api.get(f"{DIARIZE}/{job.id}").json()["data"]
    assert body["status"] == "succeeded"
    assert [w["code"] for w in body["warnings"]] == ["diarization_unavailable"]
    assert body["result"]["segments"]
    assert all(s["speaker_label"] is None for s in body["result"]["segments"])
    assert {s["reason"] for s in body["result"]["segments"]} == {"diarization_unavailable"}
    assert job.audio_deleted_at is not None
    assert stored_keys(s3_blob_store) == []
    assert AuditEvent.objects.filter(action="diarization.completed").count() == 1


def test_the_result_is_not_there_before_the_job_finishes(api, queued):
    response = api.get(f"{DIARIZE}/{queued['id']}/result")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "job_not_finished"


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"min_speakers": 3, "max_speakers": 2}, "min_speakers"),
        ({"num_speakers": 21}, "num_speakers"),
        ({"num_speakers": 0}, "num_speakers"),
        ({"num_speakers": 5, "max_speakers": 3}, "num_speakers"),
        ({"threshold": 1.5}, "threshold"),
        ({"request_id": "bad\x07id"}, "request_id"),
        ({"request_id": "x" * 129}, "request_id"),
        ({"webhook": "not a url"}, "webhook"),
    ],
)
def test_invalid_fields_are_refused_naming_the_field(api, s3_blob_store, fields, field):
    response = submit(api, **fields)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert field in error["fields"]
    assert not DiarizationJob.objects.exists()
    assert stored_keys(s3_blob_store) == []


def test_missing_audio_is_refused(api):
    response = api.post(DIARIZE, {"num_speakers": 2}, format="multipart")
    assert response.status_code == 400
    assert "audio" in response.json()["error"]["fields"]


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "http://127.0.0.1:9/hook",
        "http://169.254.169.254/latest/meta-data",
        f"http://{'ä' * 63}.com/hook",
    ],
)
def test_webhooks_outside_public_http_are_refused(api, s3_blob_store, url):
    response = submit(api, webhook=url)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "webhook_not_allowed"
    assert not DiarizationJob.objects.exists()


def test_undecodable_audio_is_refused_and_nothing_is_stored(api, s3_blob_store):
    response = api.post(
        DIARIZE, {"audio": upload("x.wav", b"RIFF\x00\x00junk" * 50)}, format="multipart"
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "audio_unusable"
    assert error["reason"] == "audio_undecodable"
    assert not DiarizationJob.objects.exists()
    assert stored_keys(s3_blob_store) == []


def test_audio_over_the_duration_limit_is_refused(api, settings):
    settings.DIARIZE_MAX_DURATION_S = 10.0
    response = submit(api)
    assert response.status_code == 422
    assert response.json()["error"]["reason"] == "audio_too_long"


def test_a_blob_store_outage_stores_nothing(api, s3_blob_store, monkeypatch):
    def broken(key, source):
        raise BlobStoreError("S3 is down")

    monkeypatch.setattr(s3_blob_store, "put_file", broken)
    response = submit(api)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "blob_store_unavailable"
    assert not DiarizationJob.objects.exists()


def test_a_registry_outage_after_the_upload_leaves_no_blob_and_no_row(
    api, s3_blob_store, monkeypatch
):
    def broken(pool: str | None = None) -> list[str]:
        raise RedisConnectionError("Redis is down")

    monkeypatch.setattr(registry, "candidate_node_ids", broken)
    response = submit(api)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "backend_unavailable"
    assert not DiarizationJob.objects.exists()
    assert stored_keys(s3_blob_store) == []


@pytest.mark.parametrize("scopes", [[Scope.TRANSCRIBE.value], [Scope.DIARIZE.value]])
def test_both_scopes_are_needed(tenant, scopes, queued):
    client = client_for(make_key(tenant, scopes)[1])
    for response in (submit(client), client.get(f"{DIARIZE}/{queued['id']}")):
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "missing_scope"


def test_another_tenants_job_is_not_found(queued):
    stranger = client_for(make_key(make_tenant(), TRANSCRIBE_AND_DIARIZE)[1])
    assert stranger.get(f"{DIARIZE}/{queued['id']}").status_code == 404
    assert stranger.get(f"{DIARIZE}/{queued['id']}/result").status_code == 404


# --- a job run on a node runtime in this process (real models) ------------------------------


def speaker_with_gallery_entry(
    runtime: NodeRuntime, tenant, name: str, ranges, status=EnrollmentStatus.READY
) -> Speaker:
    clip = audio.clip(ranges)
    vector = runtime.engine.voiceprint(speech_only(clip, get_vad().speech_regions(clip)))[0]
    speaker = Speaker.objects.create(
        tenant=tenant,
        display_name=name,
        language_primary="en",
        enrollment_status=status,
        reference_blob_key=f"speakers/{name}",
        reference_sha256="0" * 64,
        reference_size_bytes=1,
        reference_duration_s=len(clip) / 16_000,
        reference_speech_s=len(clip) / 16_000,
        embedding_model_id=runtime.engine.model_id,
        embedding_model_version=runtime.engine.model_version,
    )
    store_voiceprint(speaker, vector)
    runtime.gallery.put(
        str(speaker.id),
        GalleryEntry(
            tenant_id=str(tenant.id),
            vector=vector,
            model_id=runtime.engine.model_id,
            model_version=runtime.engine.model_version,
            reference_sha256="0" * 64,
        ),
    )
    return speaker


@pytest.fixture
def runtime() -> NodeRuntime:
    return NodeRuntime("node-here", get_engine())


def test_a_node_labels_live_speakers_only_and_records_their_use(
    api, tenant, queued, runtime, django_capture_on_commit_callbacks
):
    alice = speaker_with_gallery_entry(runtime, tenant, "Alice", [(10.6, 14.45)])
    # Erased a moment ago: its tombstone is in PostgreSQL, the node has not evicted it yet.
    bob = speaker_with_gallery_entry(
        runtime, tenant, "Bob", [(21.9, 26.9)], status=EnrollmentStatus.EVICTED
    )
    stranger = speaker_with_gallery_entry(runtime, make_tenant(), "Other", [(21.9, 26.9)])

    with django_capture_on_commit_callbacks(execute=True):
        assert node_work.run_job_here(runtime, queued["id"], 1) == "succeeded"

    body = api.get(f"{DIARIZE}/{queued['id']}").json()["data"]
    result = body["result"]
    labels = {s["speaker_label"] for s in result["segments"]}
    assert str(alice.id) in labels
    assert str(bob.id) not in json.dumps(body) and str(stranger.id) not in json.dumps(body)
    assert "spk_0" in labels
    assert runtime.gallery.get(str(bob.id)) is None  # evicted on the way
    assert result["model"]["embedding_model_id"] == runtime.engine.model_id
    alice.refresh_from_db()
    assert alice.last_used_at is not None
    event = AuditEvent.objects.get(action="diarization.completed")
    assert event.details["matched_speaker_ids"] == [str(alice.id)]
    # A second delivery of the same attempt does nothing.
    assert node_work.run_job_here(runtime, queued["id"], 1) == "skipped"


def test_the_stored_result_holds_the_speakers_id_and_no_name(
    api, tenant, queued, runtime, django_capture_on_commit_callbacks
):
    alice = speaker_with_gallery_entry(runtime, tenant, "Alice Marker-91b2", [(10.6, 14.45)])
    with django_capture_on_commit_callbacks(execute=True):
        assert node_work.run_job_here(runtime, queued["id"], 1) == "succeeded"

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT result::text FROM diarization_diarizationjob WHERE id = %s", [queued["id"]]
        )
        stored = cursor.fetchone()[0]
    assert str(alice.id) in stored
    assert "Alice Marker" not in stored and "display_name" not in stored
    # The name is looked up when the result is read.
    segments = api.get(f"{DIARIZE}/{queued['id']}").json()["data"]["result"]["segments"]
    named = [s for s in segments if s["speaker_label"] == str(alice.id)]
    assert named and all(s["display_name"] == "Alice Marker-91b2" for s in named)


def test_results_download_in_every_format(
    api, tenant, queued, runtime, django_capture_on_commit_callbacks
):
    alice = speaker_with_gallery_entry(runtime, tenant, "Alice", [(10.6, 14.45)])
    with django_capture_on_commit_callbacks(execute=True):
        node_work.run_job_here(runtime, queued["id"], 1)
    url = f"{DIARIZE}/{queued['id']}/result"
    segments = api.get(url).json()["segments"]
    labelled = [s for s in segments if s["speaker_label"]]

    rttm = api.get(url, {"format": "rttm"})
    assert rttm["Content-Type"].startswith("text/plain")
    lines = rttm.content.decode().splitlines()
    assert len(lines) == len(labelled)
    assert all(line.startswith(f"SPEAKER {queued['id']} 1 ") for line in lines)
    assert any(str(alice.id) in line for line in lines)

    srt = api.get(url, {"format": "srt"}).content.decode()
    assert srt.startswith("1\n00:00:")
    assert " --> " in srt and "Alice" in srt
    vtt = api.get(url, {"format": "vtt"}).content.decode()
    assert vtt.startswith("WEBVTT\n\n") and "Alice" in vtt
    txt = api.get(url, {"format": "txt"}).content.decode()
    assert len(txt.splitlines()) == len(segments)
    assert api.get(url, {"format": "docx"}).status_code == 400


# --- webhooks -------------------------------------------------------------------------------


@pytest.fixture
def receiver(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = True
    settings.WEBHOOK_BACKOFF_S = 3.0
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    made: list[WebhookReceiver] = []

    def make(statuses: list[int]) -> WebhookReceiver:
        made.append(WebhookReceiver(statuses))
        return made[-1]

    yield make
    for r in made:
        r.close()


def finished_job_with_webhook(api, url, django_capture_on_commit_callbacks) -> DiarizationJob:
    with django_capture_on_commit_callbacks(execute=False):
        job_id = submit(api, webhook=url).json()["data"]["id"]
    with django_capture_on_commit_callbacks(execute=False):
        jobs.complete_without_node(job_id, 1, "no_node_online")
    return DiarizationJob.objects.select_related("tenant").get(id=job_id)


def test_the_webhook_backs_off_then_is_delivered_once_signed(
    api, receiver, django_capture_on_commit_callbacks
):
    hook = receiver([503, 200])
    job = finished_job_with_webhook(api, hook.url, django_capture_on_commit_callbacks)

    with pytest.raises(webhook_delivery.WebhookRetry) as retry:
        webhook_delivery.deliver_webhook(str(job.id))
    assert retry.value.countdown_s == 3.0
    assert webhook_delivery.deliver_webhook(str(job.id)) == "delivered"
    assert webhook_delivery.deliver_webhook(str(job.id)) == "skipped"

    assert len(hook.received) == 2
    headers, body = hook.received[-1]
    secret = webhook_secret(job.tenant)
    assert webhooks.verify(secret, body, headers[webhooks.SIGNATURE_HEADER])
    assert not webhooks.verify(secret, body + b" ", headers[webhooks.SIGNATURE_HEADER])
    assert not webhooks.verify("whsec_other", body, headers[webhooks.SIGNATURE_HEADER])
    assert json.loads(body)["id"] == str(job.id)
    job.refresh_from_db()
    assert job.webhook_state == WebhookState.DELIVERED and job.webhook_attempts == 2


def test_the_webhook_gives_up_after_its_attempts(api, receiver, django_capture_on_commit_callbacks):
    hook = receiver([500])
    job = finished_job_with_webhook(api, hook.url, django_capture_on_commit_callbacks)
    for _ in range(2):
        with pytest.raises(webhook_delivery.WebhookRetry):
            webhook_delivery.deliver_webhook(str(job.id))
    assert webhook_delivery.deliver_webhook(str(job.id)) == "failed"
    job.refresh_from_db()
    assert job.webhook_state == WebhookState.FAILED
    assert job.webhook_last_error == "HTTP 500"
    assert len(hook.received) == 3


def test_an_old_signature_is_refused():
    body = b"{}"
    header = webhooks.sign("whsec_x", body, 1_000_000_000)
    assert not webhooks.verify("whsec_x", body, header)


def test_a_job_on_a_vanished_node_is_sent_again(api, queued, django_capture_on_commit_callbacks):
    long_ago = timezone.now() - timedelta(minutes=5)
    Node.objects.create(
        node_id="ghost",
        engine="pyannote",
        model_id="m",
        model_version="v",
        boot_id="b",
        host="h",
        pid=1,
        booted_at=long_ago,
        last_seen_at=long_ago,
    )
    DiarizationJob.objects.filter(id=queued["id"]).update(node_id="ghost", status=JobStatus.RUNNING)
    with django_capture_on_commit_callbacks(execute=False) as sent:
        assert jobs.recover_stalled_jobs().redispatched == [queued["id"]]
    job = DiarizationJob.objects.get(id=queued["id"])
    assert job.attempt == 2 and job.node_id == "" and job.status == JobStatus.PENDING
    assert [w["code"] for w in job.warnings] == ["node_lost"]
    assert len(sent) == 1


def test_a_job_whose_message_was_lost_is_sent_again(queued, settings, monkeypatch):
    settings.DIARIZE_REQUEUE_AFTER_S = 0.0
    sent = []
    monkeypatch.setattr(jobs, "_send", lambda *args: sent.append(args))

    assert jobs.recover_stalled_jobs().resent == [queued["id"]]
    assert sent == [(queued["id"], 1, "", "no_node_online")]
    assert DiarizationJob.objects.get(id=queued["id"]).attempt == 1


def test_a_job_running_far_past_its_estimate_is_sent_again(
    queued, settings, django_capture_on_commit_callbacks
):
    settings.DIARIZE_REQUEUE_AFTER_S = 0.0
    DiarizationJob.objects.filter(id=queued["id"]).update(
        status=JobStatus.RUNNING,
        started_at=timezone.now() - timedelta(hours=1),
        estimated_time_s=2,
    )
    with django_capture_on_commit_callbacks(execute=False):
        assert jobs.recover_stalled_jobs().redispatched == [queued["id"]]
    job = DiarizationJob.objects.get(id=queued["id"])
    assert job.attempt == 2 and [w["code"] for w in job.warnings] == ["node_timeout"]


def test_after_its_last_attempt_a_job_completes_without_a_node(
    queued, settings, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(registry, "candidate_node_ids", lambda pool=None: ["node-1"])
    job = DiarizationJob.objects.get(id=queued["id"])
    job.attempt = settings.DIARIZE_MAX_ATTEMPTS
    with django_capture_on_commit_callbacks(execute=False):
        jobs.dispatch(job)
    assert job.node_id == "" and job.attempt == settings.DIARIZE_MAX_ATTEMPTS + 1


def test_a_broker_failure_after_the_commit_keeps_the_job_and_its_audio(
    api, s3_blob_store, monkeypatch, django_capture_on_commit_callbacks
):
    from config.celery import app

    def broken(*args, **kwargs):
        raise RedisConnectionError("broker gone")

    monkeypatch.setattr(app, "send_task", broken)
    with django_capture_on_commit_callbacks(execute=True):
        response = submit(api)
    assert response.status_code == 202
    job = DiarizationJob.objects.get(id=response.json()["data"]["id"])
    assert stored_keys(s3_blob_store) == [job.audio_blob_key]


def test_a_webhook_never_tried_is_sent_by_the_recovery(
    api, receiver, settings, monkeypatch, django_capture_on_commit_callbacks
):
    hook = receiver([200])
    job = finished_job_with_webhook(api, hook.url, django_capture_on_commit_callbacks)
    settings.DIARIZE_REQUEUE_AFTER_S = 0.0
    sent = []
    monkeypatch.setattr(webhook_delivery, "queue_webhook", sent.append)
    assert jobs.recover_stalled_jobs().webhooks == [str(job.id)]
    assert sent == [str(job.id)]


def test_a_speaker_erased_while_the_job_ran_is_not_written(
    tenant, queued, runtime, django_capture_on_commit_callbacks
):
    alice = speaker_with_gallery_entry(runtime, tenant, "Alice", [(10.6, 14.45)])
    Speaker.objects.filter(id=alice.id).update(enrollment_status=EnrollmentStatus.EVICTED)
    job = DiarizationJob.objects.get(id=queued["id"])
    with pytest.raises(completion.SpeakerErasedMeanwhile):
        completion.complete(job, 1, {"segments": []}, matched=[str(alice.id)], actor="n")
    assert DiarizationJob.objects.get(id=job.id).status == JobStatus.PENDING


def test_a_failed_job_answers_its_result_with_job_failed(api, queued):
    DiarizationJob.objects.filter(id=queued["id"]).update(
        status=JobStatus.FAILED, error={"code": "audio_hash_mismatch", "message": "changed"}
    )
    response = api.get(f"{DIARIZE}/{queued['id']}/result")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "job_failed"


def test_a_redirecting_webhook_is_not_followed(api, receiver, django_capture_on_commit_callbacks):
    hook = receiver([302])
    job = finished_job_with_webhook(api, hook.url, django_capture_on_commit_callbacks)
    with pytest.raises(webhook_delivery.WebhookRetry, match="HTTP 302"):
        webhook_delivery.deliver_webhook(str(job.id))
    assert len(hook.received) == 1


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"RIFF\xff\xff\xff\xffWAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x80>\x00\x00"
        b"\x00}\x00\x00\x02\x00\x00\x00data\xff\xff\xff\xff" + b"\x00" * 64,  # zero-bit samples
        b"\x00" * 5000,
    ],
)
def test_hostile_uploads_are_refused_cleanly_on_both_intakes(api, s3_blob_store, payload):
    from tests.factories import enrollment_form

    diarize = api.post(DIARIZE, {"audio": upload("x.wav", payload)}, format="multipart")
    assert diarize.status_code in (400, 422), diarize.content
    enroll = api.post(
        "/v1/modules/scaiecho/speakers",
        enrollment_form(reference=upload("x.wav", payload)),
        format="multipart",
    )
    assert enroll.status_code in (400, 422), enroll.content
    assert stored_keys(s3_blob_store) == []
