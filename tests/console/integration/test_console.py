"""The web console through Django's test client: sign-in, roles, pages, exports, admin."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from audit.models import AuditEvent
from consent.models import ConsentRecord
from console.models import ConsoleMembership
from console.services import create_console_user
from enrollment.models import Speaker
from tests import audio
from tests.factories import make_tenant, upload

PASSWORD = "correct horse battery staple"


def signed_in(tenant, role: str, username: str | None = None) -> Client:
    username = username or f"{role}-{tenant.slug}"
    create_console_user(tenant, username, role, PASSWORD)
    client = Client()
    assert client.login(username=username, password=PASSWORD)
    return client


def enrollment_fields(reference=None, **overrides) -> dict:
    fields = {
        "display_name": "Alice Example",
        "language_primary": "en",
        "description": "Support lead",
        "consent_user_full_name": "Alice Example",
        "consent_stated_purpose": "Meeting diarization",
        "consent_text": "I, Alice Example, consent to enrolling my voice.",
        "reference": reference
        or upload("a.wav", audio.encode(audio.clip(audio.SPEAKER_A)), "audio/wav"),
        "consent": upload("c.wav", audio.encode(audio.clip(audio.SPEAKER_A_CONSENT)), "audio/wav"),
    }
    fields.update(overrides)
    return fields


@pytest.fixture
def admin(tenant) -> Client:
    return signed_in(tenant, "admin")


@pytest.fixture
def auditor(tenant) -> Client:
    return signed_in(tenant, "auditor")


@pytest.fixture
def speaker(admin, tenant, django_capture_on_commit_callbacks, settings) -> Speaker:
    settings.ENROLLMENT_ACK_WAIT_S = 0.0
    with django_capture_on_commit_callbacks(execute=False):
        response = admin.post("/console/speakers/new/", enrollment_fields())
    assert response.status_code == 302, response.content.decode()[-2000:]
    return Speaker.objects.get(tenant=tenant)


def test_pages_need_a_signed_in_member(db, tenant):
    anonymous = Client()
    response = anonymous.get("/console/speakers/")
    assert response.status_code == 302 and response["Location"].startswith("/console/login/")
    assert anonymous.get("/console/login/").status_code == 200

    from django.contrib.auth import get_user_model

    get_user_model().objects.create_user("loner", password=PASSWORD)
    loner = Client()
    loner.login(username="loner", password=PASSWORD)
    assert loner.get("/console/speakers/").status_code == 403


def test_sign_in_and_out_with_the_login_form(db, tenant):
    create_console_user(tenant, "ann", "admin", PASSWORD)
    client = Client(enforce_csrf_checks=True)
    page = client.get("/console/login/")
    token = page.cookies["csrftoken"].value
    response = client.post(
        "/console/login/", {"username": "ann", "password": PASSWORD, "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302 and response["Location"] == "/console/speakers/"
    assert client.get("/console/speakers/").status_code == 200
    # Without the CSRF token a change is refused.
    assert client.post("/console/logout/").status_code == 403
    token = client.cookies["csrftoken"].value
    assert client.post("/console/logout/", {"csrfmiddlewaretoken": token}).status_code == 302
    assert client.get("/console/speakers/").status_code == 302


def test_an_admin_enrolls_and_sees_the_speaker(admin, speaker, tenant):
    page = admin.get(f"/console/speakers/{speaker.id}/").content.decode()
    assert "Alice Example" in page and "Meeting diarization" in page
    assert 'id="rewarm"' in page and 'id="erase"' in page
    consent = ConsentRecord.objects.get(speaker=speaker)
    membership = ConsoleMembership.objects.get(user__username=f"admin-{tenant.slug}")
    assert consent.api_key_id == membership.api_key_id
    created = AuditEvent.objects.get(action="speaker.enrolled", speaker_id=speaker.id)
    assert created.actor == f"console:admin-{tenant.slug}"

    listing = admin.get("/console/speakers/", {"status": "pending"}).content.decode()
    assert "Alice Example" in listing
    assert "Alice Example" not in admin.get("/console/speakers/", {"q": "bob"}).content.decode()
    status = admin.get(f"/console/speakers/{speaker.id}/status.json").json()
    assert status["status"] == "pending" and status["warm_node_ids"] == []


def test_a_rejected_recording_is_explained_in_words(admin, tenant):
    silent = upload("quiet.wav", audio.encode(audio.silence(6.0)), "audio/wav")
    response = admin.post("/console/speakers/new/", enrollment_fields(reference=silent))
    assert response.status_code == 422
    page = response.content.decode()
    assert "not enough speech in the recording to recognise the voice" in page
    assert "why it was rejected" in page
    assert not Speaker.objects.filter(tenant=tenant).exists()


def test_an_invalid_form_is_shown_again_with_its_errors(admin):
    response = admin.post("/console/speakers/new/", enrollment_fields(language_primary="english!"))
    assert response.status_code == 400
    assert "BCP-47" in response.content.decode()


def test_an_admin_rewarms_and_erases_with_a_confirmation(
    admin, speaker, django_capture_on_commit_callbacks
):
    assert admin.post(f"/console/speakers/{speaker.id}/rewarm/").status_code == 302
    confirm = admin.get(f"/console/speakers/{speaker.id}/erase/").content.decode()
    assert "Erase Alice Example?" in confirm

    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(f"/console/speakers/{speaker.id}/erase/")
    assert response.status_code == 302
    receipt_url = response["Location"]
    assert receipt_url.startswith("/console/erasures/")
    page = admin.get(receipt_url).content.decode()
    assert "Erasure receipt" in page and str(speaker.id) in page
    assert "Alice Example" not in page  # erased with the speaker
    receipt = admin.get(receipt_url + "status.json").json()
    assert receipt["blobs_state"] == "deleted"
    speaker.refresh_from_db()
    assert speaker.enrollment_status == "evicted"
    # An erased speaker offers no more buttons.
    assert 'id="rewarm"' not in admin.get(f"/console/speakers/{speaker.id}/").content.decode()


def test_an_auditor_reads_everything_and_changes_nothing(auditor, speaker):
    for url in (
        "/console/speakers/",
        f"/console/speakers/{speaker.id}/",
        "/console/nodes/",
        "/console/consent-records/",
        "/console/erasures/",
        "/console/audit/",
    ):
        response = auditor.get(url)
        assert response.status_code == 200, url
        page = response.content.decode()
        for button in ('id="enroll-link"', 'id="rewarm"', 'id="erase"'):
            assert button not in page, (url, button)
    # The server refuses, not only the page.
    assert auditor.get("/console/speakers/new/").status_code == 403
    assert auditor.post("/console/speakers/new/", enrollment_fields()).status_code == 403
    assert auditor.post(f"/console/speakers/{speaker.id}/rewarm/").status_code == 403
    assert auditor.get(f"/console/speakers/{speaker.id}/erase/").status_code == 403
    assert auditor.post(f"/console/speakers/{speaker.id}/erase/").status_code == 403
    speaker.refresh_from_db()
    assert speaker.enrollment_status != "evicted"


def test_another_tenants_speaker_is_not_found(speaker):
    stranger = signed_in(make_tenant(), "admin", "stranger")
    assert stranger.get(f"/console/speakers/{speaker.id}/").status_code == 404
    assert stranger.post(f"/console/speakers/{speaker.id}/erase/").status_code == 404
    assert "Alice Example" not in stranger.get("/console/speakers/").content.decode()
    assert "Alice" not in stranger.get("/console/export/consent-records.jsonl").getvalue().decode()


def test_the_audit_trail_shows_its_verification_and_exports(auditor, speaker):
    page = auditor.get("/console/audit/").content.decode()
    assert "The hash chain verifies" in page
    jsonl = auditor.get("/console/export/consent-records.jsonl", {"speaker_id": str(speaker.id)})
    rows = [json.loads(line) for line in jsonl.getvalue().decode().splitlines()]
    assert [r["speaker_id"] for r in rows] == [str(speaker.id)]
    csv = auditor.get("/console/export/audit-events.csv").getvalue().decode()
    assert csv.splitlines()[0].startswith("seq,") and "speaker.enrolled" in csv
    assert auditor.get("/console/export/erasures.csv").status_code == 200
    assert auditor.get("/console/export/secrets.csv").status_code == 404
    assert AuditEvent.objects.filter(action="audit.exported").count() == 3


def test_create_console_user_command(db, tenant):
    out = io.StringIO()
    call_command("create_console_user", tenant.slug, "eve", "--role", "auditor", stdout=out)
    assert "Password (shown only now):" in out.getvalue()
    membership = ConsoleMembership.objects.get(user__username="eve")
    assert membership.role == "auditor" and membership.api_key.scopes == ["scaiecho:audit"]
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_console_user", tenant.slug, "eve", "--role", "admin")
    with pytest.raises(CommandError, match="No tenant"):
        call_command("create_console_user", "nope", "zed", "--role", "admin")


def test_the_django_admin_shows_immutable_tables_read_only(admin, speaker, tenant):
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_superuser("root", password=PASSWORD)
    operator = Client()
    operator.login(username="root", password=PASSWORD)
    record = ConsentRecord.objects.get(speaker=speaker)
    assert operator.get("/admin/tenancy/tenant/").status_code == 200
    assert operator.get("/admin/tenancy/apikey/").status_code == 200
    assert operator.get("/admin/console/consolemembership/").status_code == 200
    detail = operator.get(f"/admin/consent/consentrecord/{record.id}/change/")
    assert detail.status_code == 200 and 'name="_save"' not in detail.content.decode()
    assert operator.post(f"/admin/consent/consentrecord/{record.id}/delete/").status_code == 403
    assert operator.get("/admin/audit/auditevent/add/").status_code == 403
