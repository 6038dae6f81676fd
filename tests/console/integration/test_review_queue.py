"""The console's review queue through Django's test client: admins listen and decide, auditors
read the queue and the decisions, nobody else gets in."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from audit.models import AuditEvent, ErasureAudit
from console.services import create_console_user
from enrollment.models import Speaker
from tests import audio
from tests.factories import enrollment_form, make_tenant, upload

PASSWORD = "correct horse battery staple"
SPEAKERS = "/v1/modules/scaiecho/speakers"
QUEUE = "/console/reviews/"


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.ENROLLMENT_ACK_WAIT_S = 0.0


def signed_in(tenant, role: str, username: str) -> Client:
    create_console_user(tenant, username, role, PASSWORD)
    client = Client()
    assert client.login(username=username, password=PASSWORD)
    return client


@pytest.fixture
def admin(tenant) -> Client:
    return signed_in(tenant, "admin", "ada")


@pytest.fixture
def auditor(tenant) -> Client:
    return signed_in(tenant, "auditor", "aud")


def uncertain_consent():
    return upload("c.wav", audio.encode(audio.clip(audio.SPEAKER_B_CONSENT)), "audio/wav")


@pytest.fixture
def held(api, django_capture_on_commit_callbacks) -> Speaker:
    """Held by the API key of the ``api`` fixture, so a console admin is another reviewer."""
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            SPEAKERS, enrollment_form(consent=uncertain_consent()), format="multipart"
        )
    assert response.json()["data"]["enrollment_status"] == "needs_review"
    return Speaker.objects.get(id=response.json()["data"]["id"])


def decide(client: Client, speaker: Speaker, captured, **form):
    with captured(execute=True):
        return client.post(f"/console/speakers/{speaker.id}/review/", form)


def test_an_admin_sees_the_held_speaker_with_both_recordings_and_the_buttons(admin, held):
    page = admin.get(QUEUE).content.decode()

    assert "Alice Example" in page
    assert "The consent recording does not sound like the same person." in page
    assert f"/console/speakers/{held.id}/recordings/reference/" in page
    assert f"/console/speakers/{held.id}/recordings/consent/" in page
    assert 'value="approve"' in page and 'value="reject"' in page
    assert "csrfmiddlewaretoken" in page


def test_an_admin_can_play_both_recordings_of_a_held_speaker(admin, held, s3_blob_store):
    from consent.models import ConsentRecord

    consent_key = ConsentRecord.objects.get(speaker=held).recording_blob_key
    for role, key in (("reference", held.reference_blob_key), ("consent", consent_key)):
        response = admin.get(f"/console/speakers/{held.id}/recordings/{role}/")
        assert response.status_code == 200, role
        assert response["Content-Type"] == "audio/wav"
        assert response["Cache-Control"] == "no-store"
        assert response.content == s3_blob_store.get(key)


def test_recordings_are_served_only_while_held_and_only_the_two(
    admin, held, api, django_capture_on_commit_callbacks
):
    assert admin.get(f"/console/speakers/{held.id}/recordings/voice/").status_code == 404
    with django_capture_on_commit_callbacks(execute=True):
        ready = api.post(SPEAKERS, enrollment_form(), format="multipart").json()["data"]
    response = admin.get(f"/console/speakers/{ready['id']}/recordings/reference/")
    assert response.status_code == 409


def test_a_recording_missing_from_the_store_is_a_404(admin, held, s3_blob_store):
    s3_blob_store.delete_all_versions(held.reference_blob_key)
    response = admin.get(f"/console/speakers/{held.id}/recordings/reference/")
    assert response.status_code == 404


def test_an_unreadable_store_is_a_503(admin, held, monkeypatch):
    from common.blobs import BlobStoreError
    from enrollment import reviews

    class Broken:
        def get(self, key):
            raise BlobStoreError("S3 is down")

    monkeypatch.setattr(reviews, "get_blob_store", lambda: Broken())
    response = admin.get(f"/console/speakers/{held.id}/recordings/consent/")
    assert response.status_code == 503


def test_an_admin_approves_from_the_queue(
    admin, held, django_capture_on_commit_callbacks, monkeypatch
):
    response = decide(
        admin, held, django_capture_on_commit_callbacks, decision="approve", note="called her"
    )

    assert response.status_code == 302 and response["Location"] == QUEUE
    held.refresh_from_db()
    assert held.enrollment_status == "pending"
    event = AuditEvent.objects.get(action="speaker.review_approved", speaker_id=held.id)
    assert event.actor == "console:ada"
    page = admin.get(QUEUE).content.decode()
    assert "No enrollment is waiting for review." in page
    assert "approved" in page and "called her" in page


def test_an_admin_rejects_from_the_queue_and_lands_on_the_receipt(
    admin, held, django_capture_on_commit_callbacks
):
    response = decide(admin, held, django_capture_on_commit_callbacks, decision="reject")

    erasure = ErasureAudit.objects.get(speaker=held)
    assert response.status_code == 302
    assert response["Location"] == f"/console/erasures/{erasure.id}/"
    assert erasure.reason == "review_rejected"
    held.refresh_from_db()
    assert held.enrollment_status == "evicted"


def test_an_invalid_decision_is_a_400_and_changes_nothing(
    admin, held, django_capture_on_commit_callbacks
):
    response = decide(admin, held, django_capture_on_commit_callbacks, decision="perhaps")
    assert response.status_code == 400
    assert "decision" in response.content.decode()
    held.refresh_from_db()
    assert held.enrollment_status == "needs_review"


def test_a_decision_on_a_speaker_not_held_is_a_409(admin, held, django_capture_on_commit_callbacks):
    decide(admin, held, django_capture_on_commit_callbacks, decision="approve")
    response = decide(admin, held, django_capture_on_commit_callbacks, decision="reject")
    assert response.status_code == 409
    assert Speaker.objects.get(id=held.id).enrollment_status == "pending"


def test_the_admin_who_enrolled_may_not_review_it(
    admin, tenant, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(
            "/console/speakers/new/",
            {
                "display_name": "Alice Example",
                "language_primary": "en",
                "consent_user_full_name": "Alice Example",
                "consent_stated_purpose": "Meeting diarization",
                "consent_text": "I consent.",
                "reference": upload(
                    "a.wav", audio.encode(audio.clip(audio.SPEAKER_A)), "audio/wav"
                ),
                "consent": uncertain_consent(),
            },
        )
    assert response.status_code == 302
    speaker = Speaker.objects.get(tenant=tenant)
    assert speaker.enrollment_status == "needs_review"
    assert "held" in admin.get(f"/console/speakers/{speaker.id}/").content.decode()

    refused = decide(admin, speaker, django_capture_on_commit_callbacks, decision="approve")

    assert refused.status_code == 403
    assert "someone other than who enrolled it" in refused.content.decode()
    other = signed_in(tenant, "admin", "bea")
    accepted = decide(other, speaker, django_capture_on_commit_callbacks, decision="approve")
    assert accepted.status_code == 302


def test_an_auditor_reads_the_queue_and_decisions_but_cannot_listen_or_decide(
    admin, auditor, held, api, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        second = api.post(
            SPEAKERS, enrollment_form(consent=uncertain_consent()), format="multipart"
        ).json()["data"]
    decide(admin, held, django_capture_on_commit_callbacks, decision="reject", note="not her")

    page = auditor.get(QUEUE).content.decode()

    assert second["id"] in page and "consent" in page
    assert "<audio" not in page and 'value="approve"' not in page
    decisions = re.search(r'<table id="decisions">.*</table>', page, re.S).group(0)
    assert "rejected" in decisions and "console:ada" in decisions
    # The rejection erased the speaker's key, and with it the note.
    assert "not her" not in decisions and "erased with the speaker" in decisions
    speaker = Speaker.objects.get(id=second["id"])
    for url in (
        f"/console/speakers/{speaker.id}/recordings/reference/",
        f"/console/speakers/{speaker.id}/recordings/consent/",
    ):
        assert auditor.get(url).status_code == 403
    refused = decide(auditor, speaker, django_capture_on_commit_callbacks, decision="approve")
    assert refused.status_code == 403
    assert Speaker.objects.get(id=speaker.id).enrollment_status == "needs_review"


def test_others_are_refused(db, held, django_capture_on_commit_callbacks):
    signed_out = Client()
    response = signed_out.get(QUEUE)
    assert response.status_code == 302 and response["Location"].startswith("/console/login/")

    get_user_model().objects.create_user("loner", password=PASSWORD)
    loner = Client()
    loner.login(username="loner", password=PASSWORD)
    assert loner.get(QUEUE).status_code == 403

    stranger = signed_in(make_tenant(), "admin", "stranger")
    assert str(held.id) not in stranger.get(QUEUE).content.decode()
    assert stranger.get(f"/console/speakers/{held.id}/recordings/consent/").status_code == 404
    refused = decide(stranger, held, django_capture_on_commit_callbacks, decision="reject")
    assert refused.status_code == 404
    assert Speaker.objects.get(id=held.id).enrollment_status == "needs_review"


def test_a_held_speaker_cannot_be_rewarmed_from_the_console(admin, held):
    page = admin.get(f"/console/speakers/{held.id}/").content.decode()
    assert 'id="rewarm"' not in page and "/console/reviews/" in page

    response = admin.post(f"/console/speakers/{held.id}/rewarm/")

    assert response.status_code == 409
    assert "held for review" in response.content.decode()
    assert not AuditEvent.objects.filter(action="speaker.rewarm_requested").exists()
