"""Blob write intents: committed before the write, cleared with the owning row or the blob."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import OperationalError, transaction
from django.utils import timezone

from consent.models import ConsentRecord
from diarization.models import DiarizationJob
from enrollment import services
from enrollment.models import Speaker
from operations.blob_sweeper import sweep_orphan_blobs
from storage.models import BlobIntent, BlobPurpose
from storage.services import IntentExpired, claim, register, settle
from tests import audio
from tests.factories import enrollment_form, upload

SPEAKERS = "/v1/modules/scaiecho/speakers"
DIARIZE = "/v1/modules/scaiecho/diarize"


def stored_keys(store) -> list[str]:
    listing = store.client.list_object_versions(Bucket=store.bucket)
    entries = listing.get("Versions", []) + listing.get("DeleteMarkers", [])
    return sorted(entry["Key"] for entry in entries)


def age_every_intent(settings) -> None:
    stale = timezone.now() - timedelta(seconds=settings.BLOB_INTENT_GRACE_S + 60)
    BlobIntent.objects.update(created_at=stale)


def test_register_records_the_key_and_its_purpose(db):
    register("tenants/t/speakers/s/reference", BlobPurpose.ENROLLMENT_REFERENCE)
    intent = BlobIntent.objects.get()
    assert (intent.key, intent.purpose) == (
        "tenants/t/speakers/s/reference",
        "enrollment.reference",
    )
    assert timezone.now() - intent.created_at < timedelta(seconds=60)


def test_register_inside_an_atomic_block_is_refused(db):
    # A rollback of the enclosing block would take the intent with it and leave the blob.
    with transaction.atomic(), pytest.raises(RuntimeError, match="durable atomic block"):
        register("diarize/t/j/audio", BlobPurpose.DIARIZATION_UPLOAD)
    assert not BlobIntent.objects.exists()


def test_a_key_registered_again_starts_its_grace_period_afresh(db, settings):
    register("diarize/t/j/audio", BlobPurpose.DIARIZATION_UPLOAD)
    age_every_intent(settings)
    register("diarize/t/j/audio", BlobPurpose.DIARIZATION_UPLOAD)
    intent = BlobIntent.objects.get()
    assert timezone.now() - intent.created_at < timedelta(seconds=60)


def test_claim_runs_only_inside_the_owners_transaction(live_db):
    register("diarize/t/j/audio", BlobPurpose.DIARIZATION_UPLOAD)
    with pytest.raises(RuntimeError, match="inside the transaction"):
        claim(["diarize/t/j/audio"])
    with transaction.atomic():
        claim(["diarize/t/j/audio"])
    assert not BlobIntent.objects.exists()


def test_a_claim_that_finds_an_intent_gone_fails_and_clears_nothing(live_db):
    register("diarize/t/a/audio", BlobPurpose.DIARIZATION_UPLOAD)
    with pytest.raises(IntentExpired), transaction.atomic():
        claim(["diarize/t/a/audio", "diarize/t/swept/audio"])
    assert list(BlobIntent.objects.values_list("key", flat=True)) == ["diarize/t/a/audio"]


def test_settle_clears_only_the_keys_named(db):
    register("diarize/t/a/audio", BlobPurpose.DIARIZATION_UPLOAD)
    register("diarize/t/b/audio", BlobPurpose.DIARIZATION_UPLOAD)
    assert settle(["diarize/t/a/audio", "diarize/t/absent/audio"]) == 1
    assert list(BlobIntent.objects.values_list("key", flat=True)) == ["diarize/t/b/audio"]


def test_a_committed_enrollment_leaves_no_intent(api, s3_blob_store, settings):
    settings.ENROLLMENT_ACK_WAIT_S = 0.0
    response = api.post(SPEAKERS, enrollment_form(), format="multipart")
    assert response.status_code == 201, response.content
    assert len(stored_keys(s3_blob_store)) == 2
    assert not BlobIntent.objects.exists()


def test_a_rolled_back_enrollment_removes_its_recordings_and_their_intents(
    api, s3_blob_store, monkeypatch
):
    def broken_consent(**kwargs):
        raise OperationalError("injected")

    monkeypatch.setattr(services, "record_consent", broken_consent)
    response = api.post(SPEAKERS, enrollment_form(), format="multipart")
    assert response.status_code == 503
    assert stored_keys(s3_blob_store) == []
    assert not BlobIntent.objects.exists()


def test_an_enrollment_that_outlasts_the_grace_period_stores_nothing(
    api, s3_blob_store, settings, monkeypatch
):
    """The sweeper takes the recordings of an enrollment that took longer than
    BLOB_INTENT_GRACE_S before its rows: the rows must not commit pointing at nothing."""
    original = s3_blob_store.put

    def put_then_sweep(key, data):
        stored = original(key, data)
        if key.endswith("/consent"):
            age_every_intent(settings)
            assert len(sweep_orphan_blobs().removed) == 2
        return stored

    monkeypatch.setattr(s3_blob_store, "put", put_then_sweep)
    response = api.post(SPEAKERS, enrollment_form(), format="multipart")

    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "upload_expired"
    assert Speaker.objects.count() == 0 and ConsentRecord.objects.count() == 0
    assert stored_keys(s3_blob_store) == []
    assert not BlobIntent.objects.exists()


def test_a_diarization_job_clears_its_uploads_intent(
    api, s3_blob_store, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        response = api.post(
            DIARIZE, {"audio": upload("m.wav", audio.encode(audio.sample()))}, format="multipart"
        )
    assert response.status_code == 202, response.content
    assert len(stored_keys(s3_blob_store)) == 1
    assert not BlobIntent.objects.exists()


def test_a_diarization_upload_that_outlasts_the_grace_period_makes_no_job(
    api, s3_blob_store, settings, monkeypatch
):
    original = s3_blob_store.put_file

    def put_file_then_sweep(key, source):
        stored = original(key, source)
        age_every_intent(settings)
        assert [blob["key"] for blob in sweep_orphan_blobs().removed] == [key]
        return stored

    monkeypatch.setattr(s3_blob_store, "put_file", put_file_then_sweep)
    response = api.post(
        DIARIZE, {"audio": upload("m.wav", audio.encode(audio.sample()))}, format="multipart"
    )

    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "upload_expired"
    assert DiarizationJob.objects.count() == 0
    assert stored_keys(s3_blob_store) == []
    assert not BlobIntent.objects.exists()
