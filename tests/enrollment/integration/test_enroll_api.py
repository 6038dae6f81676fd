import hashlib

import pytest
from django.db import OperationalError

from common.blobs import BlobStoreError
from consent.models import ConsentRecord
from consent.selectors import consent_record_bodies
from enrollment import services
from enrollment.models import Speaker, Voiceprint
from tenancy.permissions import ConsentFieldAccess
from tests import audio
from tests.factories import (
    client_for,
    enrollment_form,
    make_key,
    make_tenant,
    stored_voiceprint,
    upload,
)

URL = "/v1/modules/scaiecho/speakers"
EVERY_FIELD = ConsentFieldAccess(identity=True, client_address=True)

pytestmark = pytest.mark.django_db


def stored_keys(store) -> list[str]:
    listing = store.client.list_object_versions(Bucket=store.bucket)
    return [v["Key"] for v in listing.get("Versions", []) + listing.get("DeleteMarkers", [])]


def test_enrollment_stores_profile_consent_and_both_blobs(api, tenant, s3_blob_store):
    form = enrollment_form()
    reference_bytes = audio.encode(audio.clip(audio.SPEAKER_A))
    response = api.post(URL, form, format="multipart")

    assert response.status_code == 201, response.json()
    data = response.json()["data"]
    assert data["display_name"] == "Alice Example"
    assert data["language_primary"] == "en"
    assert data["enrollment_status"] == "pending"
    assert data["enrolled_on"] == []
    assert "no pyannote node is online" in data["note"].lower()
    assert data["preflight"]["passed"] is True
    assert data["preflight"]["reference"]["speech_s"] > 5
    assert {f["code"] for f in data["preflight"]["findings"]} >= {"more_speech_recommended"}
    assert data["reference"]["sha256"] == hashlib.sha256(reference_bytes).hexdigest()

    speaker = Speaker.objects.get(id=data["id"])
    assert speaker.tenant == tenant
    assert stored_voiceprint(speaker.id).shape == (256,)
    (row,) = Voiceprint.objects.filter(speaker=speaker)
    assert row.computed_by == "preflight"
    assert speaker.reference_blob_key == f"tenants/{tenant.id}/speakers/{speaker.id}/reference"
    assert "alice" not in speaker.reference_blob_key

    consent = ConsentRecord.objects.get(speaker=speaker)
    assert b"Alice" not in bytes(consent.full_name_ciphertext)
    opened = consent_record_bodies([consent], EVERY_FIELD)[0]
    assert opened["consent_user_full_name"] == "Alice Example"
    assert opened["consent_text"] == form["consent_text"]
    assert consent.consent_text_sha256 == hashlib.sha256(form["consent_text"].encode()).hexdigest()
    assert opened["client_ip"] == "127.0.0.1"
    assert consent.api_key.tenant == tenant
    assert consent.recording_duration_s > 3

    s3 = s3_blob_store.client
    for key, sha in [
        (speaker.reference_blob_key, speaker.reference_sha256),
        (consent.recording_blob_key, consent.recording_sha256),
    ]:
        head = s3.head_object(Bucket=s3_blob_store.bucket, Key=key)
        assert head["ServerSideEncryption"] == "AES256"
        assert head["Metadata"]["sha256"] == sha
        body = s3.get_object(Bucket=s3_blob_store.bucket, Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == sha
    versioning = s3.get_bucket_versioning(Bucket=s3_blob_store.bucket)
    assert versioning["Status"] == "Enabled"


def test_failed_preflight_answers_422_with_every_finding_and_stores_nothing(api, s3_blob_store):
    form = enrollment_form(
        reference=upload("ref.wav", audio.encode(audio.silence(4.0))),
        consent=upload("consent.wav", audio.encode(audio.silence(2.0))),
    )
    response = api.post(URL, form, format="multipart")

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "preflight_failed"
    assert {f["code"] for f in error["findings"]} >= {"too_little_speech", "consent_no_speech"}
    assert error["preflight"]["passed"] is False
    assert Speaker.objects.count() == 0
    assert ConsentRecord.objects.count() == 0
    assert stored_keys(s3_blob_store) == []


def test_wrong_format_renamed_to_wav_is_rejected_by_content(api):
    form = enrollment_form(reference=upload("ref.wav", b"\x89PNG\r\n\x1a\n" + bytes(1000)))
    response = api.post(URL, form, format="multipart")
    assert response.status_code == 422
    assert response.json()["error"]["findings"][0]["code"] == "audio_unsupported_format"


@pytest.mark.parametrize(
    "missing",
    [
        "display_name",
        "language_primary",
        "consent_user_full_name",
        "consent_stated_purpose",
        "consent_text",
        "reference",
        "consent",
    ],
)
def test_required_fields_are_named(api, missing):
    form = enrollment_form()
    del form[missing]
    response = api.post(URL, form, format="multipart")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert missing in error["fields"]
    assert Speaker.objects.count() == 0


@pytest.mark.parametrize(
    "field,value",
    [
        ("language_primary", "english"),
        ("language_primary", "en_US"),
        ("display_name", "x" * 201),
        ("display_name", "Alice\x00Example"),
        ("consent_stated_purpose", "y" * 1001),
    ],
)
def test_invalid_fields_are_explained(api, field, value):
    response = api.post(URL, enrollment_form(**{field: value}), format="multipart")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


@pytest.mark.parametrize("tag", ["en", "en-GB", "pt-BR", "zh-Hant-TW", "es-419", "sr-Latn"])
def test_bcp47_tags_are_accepted(tag):
    from enrollment.api.serializers import validate_language_tag

    validate_language_tag(tag)


def test_empty_file_is_a_validation_error(api):
    response = api.post(URL, enrollment_form(consent=upload("c.wav", b"")), format="multipart")
    assert response.status_code == 400
    assert "consent" in response.json()["error"]["fields"]


def test_oversized_recording_is_refused_with_413(api, settings, s3_blob_store):
    settings.ENROLLMENT_MAX_UPLOAD_BYTES = 50_000
    response = api.post(URL, enrollment_form(), format="multipart")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "upload_too_large"
    assert Speaker.objects.count() == 0
    assert stored_keys(s3_blob_store) == []


def _fail_on_put(number):
    calls = {"n": 0}
    original = services.get_blob_store().put

    def put(key, data):
        calls["n"] += 1
        if calls["n"] == number:
            raise BlobStoreError("injected")
        return original(key, data)

    return put


@pytest.mark.parametrize("step", ["reference_put", "consent_put", "speaker_row", "consent_row"])
def test_a_failure_at_any_step_leaves_no_blob_and_no_row(api, s3_blob_store, monkeypatch, step):
    if step == "reference_put":
        monkeypatch.setattr(s3_blob_store, "put", _fail_on_put(1))
    elif step == "consent_put":
        monkeypatch.setattr(s3_blob_store, "put", _fail_on_put(2))
    elif step == "speaker_row":

        def broken_create(*args, **kwargs):
            raise OperationalError("injected")

        monkeypatch.setattr(Speaker.objects, "create", broken_create)
    else:

        def broken_consent(**kwargs):
            raise OperationalError("injected")

        monkeypatch.setattr(services, "record_consent", broken_consent)

    response = api.post(URL, enrollment_form(), format="multipart")

    assert response.status_code == 503
    expected = "database_unavailable" if step.endswith("row") else "blob_store_unavailable"
    assert response.json()["error"]["code"] == expected
    assert Speaker.objects.count() == 0
    assert ConsentRecord.objects.count() == 0
    assert stored_keys(s3_blob_store) == []


def test_blob_store_outage_answers_503_with_a_code(api, s3_blob_store, monkeypatch):
    monkeypatch.setattr(s3_blob_store, "put", _fail_on_put(1))
    response = api.post(URL, enrollment_form(), format="multipart")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "blob_store_unavailable"


def test_same_voice_enrolled_twice_is_reported_with_the_first_speaker(api):
    first = api.post(URL, enrollment_form(), format="multipart").json()["data"]
    second = api.post(URL, enrollment_form(), format="multipart")
    assert second.status_code == 201
    duplicate = next(
        f for f in second.json()["data"]["preflight"]["findings"] if f["code"] == "duplicate_voice"
    )
    assert duplicate["speaker_id"] == first["id"]


def test_same_voice_in_another_tenant_is_not_a_duplicate(api):
    api.post(URL, enrollment_form(), format="multipart")
    other = client_for(make_key(make_tenant())[1])
    response = other.post(URL, enrollment_form(), format="multipart")
    assert "duplicate_voice" not in {
        f["code"] for f in response.json()["data"]["preflight"]["findings"]
    }


def test_list_is_paginated_and_filtered_by_status(api, tenant):
    created = [
        api.post(URL, enrollment_form(display_name=f"S{i}"), format="multipart").json()["data"]
        for i in range(3)
    ]
    Speaker.objects.filter(id=created[0]["id"]).update(enrollment_status="ready")

    page = api.get(URL, {"page_size": 2}).json()
    assert page["pagination"]["count"] == 3
    assert len(page["data"]) == 2
    assert page["pagination"]["next"]

    ready = api.get(URL, {"enrollment_status": "ready"}).json()
    assert [s["id"] for s in ready["data"]] == [created[0]["id"]]

    bad = api.get(URL, {"enrollment_status": "sleeping"})
    assert bad.status_code == 400


def test_detail_shows_profile_preflight_and_consent(api):
    created = api.post(URL, enrollment_form(), format="multipart").json()["data"]
    detail = api.get(f"{URL}/{created['id']}").json()["data"]
    assert detail["id"] == created["id"]
    assert detail["preflight"]["passed"] is True
    assert detail["consent_records"][0]["consent_user_full_name"] == "Alice Example"
    assert "voiceprint" not in detail


def test_registry_outage_answers_503_and_stores_nothing(api, s3_blob_store, monkeypatch):
    from redis.exceptions import ConnectionError as RedisConnectionError

    from nodes import registry

    def down(pool: str | None = None):
        raise RedisConnectionError("injected")

    monkeypatch.setattr(registry, "candidate_node_ids", down)
    response = api.post(URL, enrollment_form(), format="multipart")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "backend_unavailable"
    assert Speaker.objects.count() == 0
    assert stored_keys(s3_blob_store) == []
