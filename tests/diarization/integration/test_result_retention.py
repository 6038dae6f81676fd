"""Result retention: DIARIZATION_RESULT_RETENTION_DAYS after a job completed, the beat's sweep
deletes its result (and its audio where it was kept); the row stays and answers 410."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from common.blobs import BlobStoreError
from config.celery import app
from diarization import tasks
from diarization.models import DiarizationJob, JobStatus, WebhookState
from diarization.services import retention, webhook_delivery
from tests.diarization.jobs import engine_result, make_finished_job
from tests.factories import client_for, make_speaker
from tests.webhooks import WebhookReceiver

DIARIZE = "/v1/modules/scaiecho/diarize"
FORMATS = ["json", "rttm", "srt", "vtt", "txt"]


@pytest.fixture(autouse=True)
def thirty_days(settings):
    settings.DIARIZATION_RESULT_RETENTION_DAYS = 30


def days_ago(days: float):
    return timezone.now() - timedelta(days=days)


@pytest.fixture
def result(tenant) -> dict:
    return engine_result(str(make_speaker(tenant, "Alice").id))


def stored_versions(store, key: str) -> list:
    listing = store.client.list_object_versions(Bucket=store.bucket, Prefix=key)
    return listing.get("Versions", []) + listing.get("DeleteMarkers", [])


def test_a_job_past_the_bound_loses_its_result_and_answers_410(api, tenant, result):
    old = make_finished_job(tenant, result, completed_at=days_ago(31))
    young = make_finished_job(tenant, result, completed_at=days_ago(29))

    expiry = retention.expire_results()

    assert expiry.expired == [str(old.id)]
    old.refresh_from_db()
    assert old.result is None and old.result_expired_at is not None
    assert old.status == JobStatus.SUCCEEDED and old.completed_at is not None
    response = api.get(f"{DIARIZE}/{old.id}")
    assert response.status_code == 410
    error = response.json()["error"]
    assert error["code"] == "result_expired"
    assert error["status"] == "succeeded"
    assert error["result_expired_at"] == old.result_expired_at.isoformat()
    for fmt in FORMATS:
        download = api.get(f"{DIARIZE}/{old.id}/result", {"format": fmt})
        assert download.status_code == 410, fmt
        assert download.json()["error"]["code"] == "result_expired"

    kept = api.get(f"{DIARIZE}/{young.id}")
    assert kept.status_code == 200 and kept.json()["data"]["result"]["segments"]
    assert api.get(f"{DIARIZE}/{young.id}/result").status_code == 200
    event = AuditEvent.objects.get(action="diarization.results_expired")
    assert event.details == {"job_ids": [str(old.id)], "retention_days": 30}
    # A second sweep finds nothing more to do.
    assert retention.expire_results() == retention.Expiry([], [])


def test_a_failed_job_past_the_bound_answers_410_too(api, tenant):
    failed = make_finished_job(tenant, None, completed_at=days_ago(40), status=JobStatus.FAILED)

    assert retention.expire_results().expired == [str(failed.id)]

    assert api.get(f"{DIARIZE}/{failed.id}").status_code == 410
    download = api.get(f"{DIARIZE}/{failed.id}/result")
    assert download.status_code == 410 and download.json()["error"]["code"] == "result_expired"


def test_unfinished_jobs_are_not_expired(tenant, result):
    running = make_finished_job(tenant, None, completed_at=days_ago(60), status=JobStatus.RUNNING)
    DiarizationJob.objects.filter(id=running.id).update(completed_at=None)

    assert retention.expire_results().expired == []
    assert DiarizationJob.objects.get(id=running.id).result_expired_at is None


def test_the_audio_an_expired_job_kept_is_deleted_in_every_version(
    tenant, result, settings, s3_blob_store
):
    settings.DIARIZE_KEEP_AUDIO = True
    old = make_finished_job(tenant, result, completed_at=days_ago(31), audio_kept=True)
    young = make_finished_job(tenant, result, completed_at=days_ago(1), audio_kept=True)
    for job in (old, young):
        s3_blob_store.put_file(job.audio_blob_key, io.BytesIO(b"v1"))
        s3_blob_store.put_file(job.audio_blob_key, io.BytesIO(b"v2"))

    expiry = retention.expire_results()

    assert expiry.audio_deleted == [str(old.id)]
    assert stored_versions(s3_blob_store, old.audio_blob_key) == []
    assert DiarizationJob.objects.get(id=old.id).audio_deleted_at is not None
    assert len(stored_versions(s3_blob_store, young.audio_blob_key)) == 2
    assert DiarizationJob.objects.get(id=young.id).audio_deleted_at is None


def test_audio_the_store_cannot_delete_is_deleted_by_the_next_sweep(
    tenant, result, settings, s3_blob_store, monkeypatch
):
    settings.DIARIZE_KEEP_AUDIO = True
    old = make_finished_job(tenant, result, completed_at=days_ago(31), audio_kept=True)
    s3_blob_store.put_file(old.audio_blob_key, io.BytesIO(b"audio"))

    def failing(key: str) -> None:
        raise BlobStoreError("S3 is down")

    with monkeypatch.context() as patch:
        patch.setattr(s3_blob_store, "delete_all_versions", failing)
        expiry = retention.expire_results()
    # The result goes regardless; the audio waits for the store.
    assert expiry == retention.Expiry([str(old.id)], [])
    old.refresh_from_db()
    assert old.result is None and old.audio_deleted_at is None

    assert retention.expire_results() == retention.Expiry([], [str(old.id)])
    assert stored_versions(s3_blob_store, old.audio_blob_key) == []


def test_a_pending_webhook_of_an_expired_job_is_dropped(tenant, result, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = True
    hook = WebhookReceiver([200])
    try:
        old = make_finished_job(tenant, result, completed_at=days_ago(31), webhook_url=hook.url)
        delivered = make_finished_job(tenant, result, completed_at=days_ago(31))
        DiarizationJob.objects.filter(id=delivered.id).update(
            webhook_url=hook.url, webhook_state=WebhookState.DELIVERED
        )

        retention.expire_results()

        assert DiarizationJob.objects.get(id=old.id).webhook_state == WebhookState.EXPIRED
        assert DiarizationJob.objects.get(id=delivered.id).webhook_state == WebhookState.DELIVERED
        assert webhook_delivery.deliver_webhook(str(old.id)) == "skipped"
        assert hook.received == []
    finally:
        hook.close()


def test_the_beat_runs_the_sweep(tenant, result, settings):
    schedule = settings.CELERY_BEAT_SCHEDULE["expire-diarization-results"]
    assert schedule["task"] == tasks.expire_results.name == "diarization.tasks.expire_results"
    assert schedule["task"] in app.tasks
    make_finished_job(tenant, result, completed_at=days_ago(31))

    assert tasks.expire_results() == {"expired": 1, "audio_deleted": 0}


def test_the_schema_documents_result_expired(db):
    paths = client_for(None).get("/v1/openapi.json").json()["paths"]
    for path in (f"{DIARIZE}/{{job_id}}", f"{DIARIZE}/{{job_id}}/result"):
        answer = paths[path]["get"]["responses"]["410"]
        assert "result_expired" in answer["description"]
