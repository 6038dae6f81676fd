"""GDPR Art. 17 erasure through the API, with S3 served by moto (versioned bucket)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent, ErasureAudit, ErasureConfirmation
from common.blobs import BlobStoreError
from consent.models import ConsentRecord
from enrollment import services
from enrollment.models import Speaker, Voiceprint
from tests.factories import client_for, enrollment_form, make_key

pytestmark = pytest.mark.django_db

SPEAKERS = "/v1/modules/scaiecho/speakers"


def enroll(api) -> Speaker:
    response = api.post(SPEAKERS, enrollment_form(), format="multipart")
    assert response.status_code == 201, response.content
    return Speaker.objects.get(id=response.json()["data"]["id"])


def versions_of(store, key: str) -> list:
    listing = store.client.list_object_versions(Bucket=store.bucket, Prefix=key)
    return listing.get("Versions", []) + listing.get("DeleteMarkers", [])


def test_delete_erases_every_blob_version_and_tombstones_the_speaker(api, s3_blob_store):
    speaker = enroll(api)
    consent = ConsentRecord.objects.get(speaker=speaker)
    s3 = s3_blob_store.client
    # A second version and a delete marker: a plain DELETE would leave both behind.
    s3.put_object(Bucket=s3_blob_store.bucket, Key=speaker.reference_blob_key, Body=b"v2")
    s3.delete_object(Bucket=s3_blob_store.bucket, Key=consent.recording_blob_key)
    sizes = speaker.reference_size_bytes + 2 + consent.recording_size_bytes

    response = api.delete(f"{SPEAKERS}/{speaker.id}")

    assert response.status_code == 200
    receipt = response.json()["data"]
    assert receipt["blob_bytes_deleted"] == sizes
    assert receipt["blob_versions_deleted"] == 4
    assert receipt["error_summary"] == {}
    assert receipt["complete"] is True
    assert receipt["reason"] == "erasure_requested"
    assert receipt["consent_record_ids"] == [str(consent.id)]
    for key in (speaker.reference_blob_key, consent.recording_blob_key):
        assert versions_of(s3_blob_store, key) == []

    speaker.refresh_from_db()
    assert speaker.enrollment_status == "evicted"
    assert (speaker.display_name, speaker.description) == ("", "")
    assert not Voiceprint.objects.filter(speaker=speaker).exists()
    assert speaker.reference_sha256 == "" and speaker.preflight == {}
    # The consent record stays: it proves the processing was lawful.
    assert ConsentRecord.objects.filter(id=consent.id).exists()
    erasure = ErasureAudit.objects.get(id=receipt["audit_id"])
    assert erasure.requested_by.startswith("api-key:")


def test_a_second_delete_returns_the_same_receipt_and_does_nothing(api):
    speaker = enroll(api)
    first = api.delete(f"{SPEAKERS}/{speaker.id}").json()["data"]
    events = AuditEvent.objects.count()

    second = api.delete(f"{SPEAKERS}/{speaker.id}")

    assert second.status_code == 200
    assert second.json()["data"] == first
    assert ErasureAudit.objects.count() == 1
    assert AuditEvent.objects.count() == events


def test_erasure_receipt_is_readable_by_id(api):
    speaker = enroll(api)
    receipt = api.delete(f"{SPEAKERS}/{speaker.id}").json()["data"]
    fetched = api.get(f"/v1/modules/scaiecho/erasures/{receipt['audit_id']}")
    assert fetched.status_code == 200
    assert fetched.json()["data"] == receipt


def test_withdrawing_consent_erases_with_its_reason(api):
    speaker = enroll(api)
    response = api.post(f"{SPEAKERS}/{speaker.id}/consent/withdraw")
    assert response.status_code == 200
    assert response.json()["data"]["reason"] == "consent_withdrawn"
    speaker.refresh_from_db()
    assert speaker.enrollment_status == "evicted"


def test_retention_sweep_with_a_frozen_clock_erases_only_expired_speakers(api, tenant):
    now = timezone.now()
    old_unused, old_but_used, recent = enroll(api), enroll(api), enroll(api)
    Speaker.objects.filter(id__in=[old_unused.id, old_but_used.id]).update(
        created_at=now - timedelta(days=4 * 365)
    )
    Speaker.objects.filter(id=old_but_used.id).update(last_used_at=now - timedelta(days=30))

    erased = services.erase_expired_speakers(now=now)

    assert erased == [str(old_unused.id)]
    assert ErasureAudit.objects.get(speaker=old_unused).reason == "retention_expired"
    assert Speaker.objects.get(id=recent.id).enrollment_status != "evicted"
    assert services.erase_expired_speakers(now=now) == []


def test_each_tenant_keeps_its_own_retention_policy(api, tenant):
    from tests.factories import make_tenant

    strict = make_tenant()
    strict.retention_days = 1
    strict.save()
    strict_speaker = enroll(client_for(make_key(strict)[1]))
    relaxed_speaker = enroll(api)

    erased = services.erase_expired_speakers(now=timezone.now() + timedelta(days=2))

    assert erased == [str(strict_speaker.id)]
    assert Speaker.objects.get(id=relaxed_speaker.id).enrollment_status != "evicted"


def test_one_failing_erasure_does_not_stop_the_retention_sweep(api, monkeypatch):
    first, second = enroll(api), enroll(api)
    Speaker.objects.update(created_at=timezone.now() - timedelta(days=4 * 365))
    real_erase = services.erase_speaker

    def erase(speaker, **kwargs):
        if speaker.id == first.id:
            raise RuntimeError("injected")
        return real_erase(speaker, **kwargs)

    monkeypatch.setattr(services, "erase_speaker", erase)
    assert services.erase_expired_speakers() == [str(second.id)]


def test_a_blob_store_failure_is_in_the_receipt_and_retried_until_done(
    api, s3_blob_store, monkeypatch
):
    speaker = enroll(api)
    real_delete = s3_blob_store.delete_all_versions

    def outage(key):
        raise BlobStoreError("S3 unavailable")

    monkeypatch.setattr(s3_blob_store, "delete_all_versions", outage)
    receipt = api.delete(f"{SPEAKERS}/{speaker.id}").json()["data"]
    assert receipt["complete"] is False
    assert receipt["blobs_state"] == "failing"
    assert "S3 unavailable" in receipt["error_summary"]["blob_store"]
    assert Speaker.objects.get(id=speaker.id).enrollment_status == "evicted"
    assert services.retry_blob_erasures(older_than_s=0) == 0  # still failing

    monkeypatch.setattr(s3_blob_store, "delete_all_versions", real_delete)
    assert services.retry_blob_erasures(older_than_s=3600) == 0  # too recent to retry yet
    assert services.retry_blob_erasures(older_than_s=0) == 1
    assert services.retry_blob_erasures(older_than_s=0) == 0
    after = api.get(f"/v1/modules/scaiecho/erasures/{receipt['audit_id']}").json()["data"]
    assert after["complete"] is True
    assert after["blobs_state"] == "deleted"
    assert after["blob_bytes_deleted"] > 0
    assert ErasureConfirmation.objects.filter(outcome="blobs_deleted").count() == 1
    assert ErasureConfirmation.objects.filter(outcome="blob_error").count() == 1
    assert versions_of(s3_blob_store, speaker.reference_blob_key) == []


def test_another_tenants_speaker_cannot_be_erased(api):
    from tests.factories import make_tenant

    speaker = enroll(api)
    stranger = client_for(make_key(make_tenant())[1])
    assert stranger.delete(f"{SPEAKERS}/{speaker.id}").status_code == 404
    assert Speaker.objects.get(id=speaker.id).enrollment_status != "evicted"


def test_an_evicted_speaker_cannot_be_rewarmed(api):
    speaker = enroll(api)
    api.delete(f"{SPEAKERS}/{speaker.id}")
    response = api.post(f"{SPEAKERS}/{speaker.id}/warm", {"node_ids": []}, format="json")
    assert response.status_code == 400
