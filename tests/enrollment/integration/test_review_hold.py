"""The review hold through the API: an uncertain voice check holds the enrollment, a second
person approves (fan-out) or rejects (erasure) it, and held enrollments expire.

Celery is replaced at the distribution boundary: a candidate node is pretended, and the task
messages are recorded instead of sent. The fan-out on a real node is in
tests/nodes/integration/test_review_on_nodes.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone

from audit.models import AuditEvent, ErasureAudit
from config.celery import app
from consent.models import ConsentRecord
from diarization.selectors import stream_gallery
from enrollment import reviews, tasks
from enrollment.models import Speaker
from nodes import registry
from nodes.models import NodeAssignment
from nodes.services import node_work
from tests import audio
from tests.factories import client_for, enrollment_form, make_key, upload

pytestmark = pytest.mark.django_db

URL = "/v1/modules/scaiecho/speakers"
NODE = "node-1"


@pytest.fixture
def sent(monkeypatch, settings):
    """One candidate node; the task messages that would leave for it."""
    settings.ENROLLMENT_ACK_WAIT_S = 0.0
    monkeypatch.setattr(registry, "candidate_node_ids", lambda pool=None: [NODE])
    messages: list[tuple[str, list, str | None]] = []
    monkeypatch.setattr(
        app, "send_task", lambda name, args, queue=None: messages.append((name, args, queue))
    )
    return messages


@pytest.fixture
def reviewer(tenant):
    """Another key of the tenant than the one that enrolls."""
    return client_for(make_key(tenant)[1])


def uncertain_form(**overrides):
    """Speaker A's reference with speaker B's consent: the sample's two voices score inside
    the consent check's uncertain band (tests/enrollment/unit/test_preflight.py)."""
    consent = upload("consent.wav", audio.encode(audio.clip(audio.SPEAKER_B_CONSENT)), "audio/wav")
    return enrollment_form(consent=consent, **overrides)


def enroll_held(api, django_capture_on_commit_callbacks) -> dict:
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(URL, uncertain_form(), format="multipart")
    assert response.status_code == 201, response.content
    return response.json()["data"]


def events(action: str, speaker_id: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action, speaker_id=speaker_id).order_by("seq"))


def review(client, speaker_id: str, django_capture_on_commit_callbacks, **body):
    with django_capture_on_commit_callbacks(execute=True):
        return client.post(f"{URL}/{speaker_id}/review", body, format="json")


# --- the hold ----------------------------------------------------------------------------------


def test_an_uncertain_consent_match_is_held_on_no_node(
    api, sent, s3_blob_store, django_capture_on_commit_callbacks
):
    data = enroll_held(api, django_capture_on_commit_callbacks)

    assert data["enrollment_status"] == "needs_review"
    assert data["enrolled_on"] == []
    assert "review" in data["note"]
    assert data["preflight"]["needs_review"] is True
    held = data["review"]["findings"]
    assert [f["code"] for f in held] == ["consent_voice_mismatch"]
    assert held[0]["severity"] == "review" and held[0]["measured"] < held[0]["threshold"]
    # Recordings and consent record are kept; nothing was sent to any node.
    speaker = Speaker.objects.get(id=data["id"])
    consent = ConsentRecord.objects.get(speaker=speaker)
    assert s3_blob_store.get(speaker.reference_blob_key)
    assert s3_blob_store.get(consent.recording_blob_key)
    assert sent == []
    assert not NodeAssignment.objects.filter(speaker=speaker).exists()
    enrolled = events("speaker.enrolled", data["id"])[0]
    assert enrolled.details["held_for_review"] == ["consent_voice_mismatch"]
    assert enrolled.details["warm_scheduled_on"] == []


def test_the_same_speakers_consent_passes_without_review(
    api, sent, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(URL, enrollment_form(), format="multipart")

    data = response.json()["data"]
    assert data["enrollment_status"] == "pending"
    assert data["review"] is None and data["preflight"]["needs_review"] is False
    assert sent == [("nodes.tasks.warm_speaker", [data["id"]], f"node.{NODE}")]


def test_the_reject_policy_refuses_the_uncertain_consent(api, settings, s3_blob_store):
    settings.PREFLIGHT_CONSENT_POLICY = "reject"

    response = api.post(URL, uncertain_form(), format="multipart")

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "preflight_failed"
    mismatch = next(f for f in error["findings"] if f["code"] == "consent_voice_mismatch")
    assert mismatch["severity"] == "error"
    assert Speaker.objects.count() == 0 and ConsentRecord.objects.count() == 0
    listing = s3_blob_store.client.list_object_versions(Bucket=s3_blob_store.bucket)
    assert listing.get("Versions", []) == []


def test_the_warn_policy_accepts_the_uncertain_consent_as_before(
    api, settings, sent, django_capture_on_commit_callbacks
):
    settings.PREFLIGHT_CONSENT_POLICY = "warn"
    data = enroll_held(api, django_capture_on_commit_callbacks)
    assert data["enrollment_status"] == "pending"
    assert len(sent) == 1


def test_a_duplicate_voice_is_held_under_the_review_policy(
    api, settings, sent, django_capture_on_commit_callbacks
):
    settings.PREFLIGHT_DUPLICATE_POLICY = "review"
    with django_capture_on_commit_callbacks(execute=True):
        first = api.post(URL, enrollment_form(), format="multipart").json()["data"]
        second = api.post(URL, enrollment_form(), format="multipart").json()["data"]

    assert first["enrollment_status"] == "pending"
    assert second["enrollment_status"] == "needs_review"
    (held,) = second["review"]["findings"]
    assert (held["code"], held["speaker_id"]) == ("duplicate_voice", first["id"])
    assert len(sent) == 1  # the first only


def test_detail_and_list_show_the_hold_and_its_findings(
    api, sent, django_capture_on_commit_callbacks
):
    held = enroll_held(api, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        api.post(URL, enrollment_form(), format="multipart")

    detail = api.get(f"{URL}/{held['id']}").json()["data"]
    listed = api.get(URL, {"enrollment_status": "needs_review"}).json()["data"]

    assert detail["enrollment_status"] == "needs_review"
    assert [f["code"] for f in detail["review"]["findings"]] == ["consent_voice_mismatch"]
    speaker = Speaker.objects.get(id=held["id"])
    expires = reviews.review_expires_at(speaker)
    assert detail["review"]["expires_at"] == expires.isoformat().replace("+00:00", "Z")
    assert [s["id"] for s in listed] == [held["id"]]
    assert listed[0]["review"] == detail["review"]


def test_a_held_speaker_cannot_be_rewarmed(api, sent, django_capture_on_commit_callbacks):
    held = enroll_held(api, django_capture_on_commit_callbacks)

    response = api.post(f"{URL}/{held['id']}/warm", {"node_ids": []}, format="json")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "speaker_under_review"
    assert sent == [] and not events("speaker.rewarm_requested", held["id"])


def test_a_held_speaker_is_in_no_gallery_and_no_node_warms_it(
    api, sent, django_capture_on_commit_callbacks
):
    held = enroll_held(api, django_capture_on_commit_callbacks)
    speaker = Speaker.objects.get(id=held["id"])

    gallery, _ = stream_gallery(
        speaker.tenant, speaker.embedding_model_id, speaker.embedding_model_version
    )
    assert held["id"] not in gallery.speaker_ids

    class Runtime:  # a stray warm message must not even read the recording
        node_id = NODE
        gallery = None

    assert node_work.warm_here(Runtime(), held["id"]) == "held"
    assert Speaker.objects.get(id=held["id"]).enrollment_status == "needs_review"


# --- decisions ---------------------------------------------------------------------------------


def test_approval_by_another_key_fans_the_speaker_out(
    api, reviewer, sent, django_capture_on_commit_callbacks
):
    held = enroll_held(api, django_capture_on_commit_callbacks)

    response = review(
        reviewer,
        held["id"],
        django_capture_on_commit_callbacks,
        decision="approve",
        note="Checked by phone with Alice",
    )

    assert response.status_code == 200, response.content
    data = response.json()["data"]
    assert data["enrollment_status"] == "pending" and data["review"] is None
    assert data["enrolled_on"] == []
    assert sent == [("nodes.tasks.warm_speaker", [held["id"]], f"node.{NODE}")]
    assert NodeAssignment.objects.get(speaker_id=held["id"]).node_id == NODE
    (decision,) = events("speaker.review_approved", held["id"])
    assert decision.actor.startswith("api-key:")
    assert decision.details["findings"] == ["consent_voice_mismatch"]
    assert decision.details["note_length"] == len("Checked by phone with Alice")
    assert "Alice" not in str(decision.details)  # only its ciphertext is kept
    assert reviews.decision_note(decision) == "Checked by phone with Alice"
    (change,) = events("speaker.status_changed", held["id"])
    assert (change.details["from"], change.details["to"]) == ("needs_review", "pending")


def test_erasing_an_approved_speaker_leaves_the_review_note_unreadable(
    api, reviewer, sent, s3_blob_store, django_capture_on_commit_callbacks
):
    held = enroll_held(api, django_capture_on_commit_callbacks)
    note = "Alice's manager confirmed by phone"
    review(reviewer, held["id"], django_capture_on_commit_callbacks, decision="approve", note=note)
    (decision,) = events("speaker.review_approved", held["id"])
    assert reviews.decision_note(decision) == note

    with django_capture_on_commit_callbacks(execute=True):
        erasure = api.delete(f"{URL}/{held['id']}")

    assert erasure.status_code == 200, erasure.content
    decision.refresh_from_db()
    # The event is immutable and keeps the ciphertext; the erasure destroyed its key.
    assert "note_ciphertext" in decision.details
    assert reviews.decision_note(decision) is None
    assert "manager" not in str(decision.details)


def test_rejection_erases_the_speaker_with_a_receipt(
    api, reviewer, sent, s3_blob_store, django_capture_on_commit_callbacks
):
    held = enroll_held(api, django_capture_on_commit_callbacks)
    speaker = Speaker.objects.get(id=held["id"])
    consent = ConsentRecord.objects.get(speaker=speaker)

    response = review(
        reviewer, held["id"], django_capture_on_commit_callbacks, decision="reject", note="Bob"
    )

    assert response.status_code == 200, response.content
    receipt = response.json()["data"]
    assert receipt["reason"] == "review_rejected"
    assert receipt["blobs_state"] == "deleted" and receipt["complete"] is True
    assert receipt["consent_record_ids"] == [str(consent.id)]
    assert api.get(f"/v1/modules/scaiecho/erasures/{receipt['audit_id']}").json()["data"] == (
        receipt
    )
    speaker.refresh_from_db()
    assert speaker.enrollment_status == "evicted" and speaker.display_name == ""
    for key in (speaker.reference_blob_key, consent.recording_blob_key):
        listing = s3_blob_store.client.list_object_versions(Bucket=s3_blob_store.bucket, Prefix=key)
        assert listing.get("Versions", []) == [] and listing.get("DeleteMarkers", []) == []
    (decision,) = events("speaker.review_rejected", held["id"])
    # The note was sealed under the key the erasure destroyed: nobody can read it now.
    assert decision.details["note_length"] == 3 and "note_ciphertext" in decision.details
    assert reviews.decision_note(decision) is None
    assert sent == []


def test_the_enrolling_key_may_not_review_its_own_enrollment(
    api, sent, django_capture_on_commit_callbacks
):
    held = enroll_held(api, django_capture_on_commit_callbacks)
    before = AuditEvent.objects.count()

    response = review(api, held["id"], django_capture_on_commit_callbacks, decision="approve")

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "same_reviewer"
    assert Speaker.objects.get(id=held["id"]).enrollment_status == "needs_review"
    assert AuditEvent.objects.count() == before and sent == []


def test_the_same_key_may_review_when_the_rule_is_off(
    api, settings, sent, django_capture_on_commit_callbacks
):
    settings.REVIEW_REQUIRE_OTHER_REVIEWER = False
    held = enroll_held(api, django_capture_on_commit_callbacks)

    response = review(api, held["id"], django_capture_on_commit_callbacks, decision="approve")

    assert response.status_code == 200
    assert response.json()["data"]["enrollment_status"] == "pending"


def test_a_speaker_not_held_is_not_under_review(
    api, reviewer, sent, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        ready = api.post(URL, enrollment_form(), format="multipart").json()["data"]
    held = enroll_held(api, django_capture_on_commit_callbacks)
    review(reviewer, held["id"], django_capture_on_commit_callbacks, decision="reject")
    before = AuditEvent.objects.count()

    for speaker_id in (ready["id"], held["id"]):  # pending, then erased by its rejection
        response = review(
            reviewer, speaker_id, django_capture_on_commit_callbacks, decision="approve"
        )
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "not_under_review"
    assert AuditEvent.objects.count() == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "decision"),
        ({"decision": "maybe"}, "decision"),
        ({"decision": "approve", "note": "a\x00b"}, "note"),
        ({"decision": "approve", "note": "x" * 2001}, "note"),
    ],
    ids=["no-decision", "unknown-decision", "control-character", "long-note"],
)
def test_an_invalid_review_is_a_400_naming_the_field(
    api, reviewer, sent, django_capture_on_commit_callbacks, body, field
):
    held = enroll_held(api, django_capture_on_commit_callbacks)
    before = AuditEvent.objects.count()

    response = review(reviewer, held["id"], django_capture_on_commit_callbacks, **body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and field in error["fields"]
    assert Speaker.objects.get(id=held["id"]).enrollment_status == "needs_review"
    assert AuditEvent.objects.count() == before


def test_a_review_sent_as_a_form_is_refused(
    api, reviewer, sent, django_capture_on_commit_callbacks
):
    held = enroll_held(api, django_capture_on_commit_callbacks)
    response = reviewer.post(
        f"{URL}/{held['id']}/review", {"decision": "approve"}, format="multipart"
    )
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_another_tenants_held_speaker_is_not_found(api, sent, django_capture_on_commit_callbacks):
    from tests.factories import make_tenant

    held = enroll_held(api, django_capture_on_commit_callbacks)
    stranger = client_for(make_key(make_tenant())[1])

    response = review(stranger, held["id"], django_capture_on_commit_callbacks, decision="reject")

    assert response.status_code == 404
    assert Speaker.objects.get(id=held["id"]).enrollment_status == "needs_review"


def test_a_rejection_that_fails_half_way_changes_nothing(
    api, reviewer, sent, s3_blob_store, monkeypatch, django_capture_on_commit_callbacks
):
    held = enroll_held(api, django_capture_on_commit_callbacks)
    before = AuditEvent.objects.count()

    def lost_connection(*args, **kwargs):
        raise OperationalError("connection lost")

    monkeypatch.setattr(reviews, "record_erasure", lost_connection)
    response = review(reviewer, held["id"], django_capture_on_commit_callbacks, decision="reject")

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "database_unavailable"
    speaker = Speaker.objects.get(id=held["id"])
    assert speaker.enrollment_status == "needs_review"
    assert AuditEvent.objects.count() == before and not ErasureAudit.objects.exists()
    assert s3_blob_store.get(speaker.reference_blob_key)


def test_the_service_refuses_a_decision_it_does_not_know(
    api, sent, django_capture_on_commit_callbacks
):
    from tests.factories import make_principal

    held = enroll_held(api, django_capture_on_commit_callbacks)
    speaker = Speaker.objects.get(id=held["id"])
    with pytest.raises(ValueError):
        reviews.decide(speaker, principal=make_principal(speaker.tenant), decision="defer", note="")
    assert Speaker.objects.get(id=held["id"]).enrollment_status == "needs_review"


# --- expiry ------------------------------------------------------------------------------------


def test_held_enrollments_expire_with_a_frozen_clock(
    api, reviewer, settings, sent, django_capture_on_commit_callbacks
):
    settings.REVIEW_EXPIRY_DAYS = 14
    now = timezone.now()
    old, recent, approved = (enroll_held(api, django_capture_on_commit_callbacks) for _ in "abc")
    review(reviewer, approved["id"], django_capture_on_commit_callbacks, decision="approve")
    Speaker.objects.filter(id__in=[old["id"], approved["id"]]).update(
        created_at=now - timedelta(days=15)
    )
    Speaker.objects.filter(id=recent["id"]).update(created_at=now - timedelta(days=13))

    with django_capture_on_commit_callbacks(execute=True):
        erased = reviews.erase_expired_reviews(now=now)

    assert erased == [old["id"]]
    erasure = ErasureAudit.objects.get(speaker_id=old["id"])
    assert erasure.reason == "review_expired" and erasure.requested_by == "system:review-expiry"
    assert Speaker.objects.get(id=recent["id"]).enrollment_status == "needs_review"
    assert Speaker.objects.get(id=approved["id"]).enrollment_status == "pending"
    assert reviews.erase_expired_reviews(now=now) == []


def test_the_expiry_task_erases_what_expired_by_now(
    api, settings, sent, django_capture_on_commit_callbacks
):
    held = enroll_held(api, django_capture_on_commit_callbacks)
    Speaker.objects.filter(id=held["id"]).update(
        created_at=timezone.now() - timedelta(days=settings.REVIEW_EXPIRY_DAYS + 1)
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.erase_expired_reviews.apply().get() == 1
    assert Speaker.objects.get(id=held["id"]).enrollment_status == "evicted"


def test_one_failing_expiry_does_not_stop_the_sweep(
    api, sent, monkeypatch, django_capture_on_commit_callbacks
):
    first, second = (enroll_held(api, django_capture_on_commit_callbacks) for _ in "ab")
    Speaker.objects.update(created_at=timezone.now() - timedelta(days=365))
    real = reviews.record_erasure

    def flaky(speaker, **kwargs):
        if str(speaker.id) == first["id"]:
            raise OperationalError("lost")
        return real(speaker, **kwargs)

    monkeypatch.setattr(reviews, "record_erasure", flaky)
    with django_capture_on_commit_callbacks(execute=True):
        assert reviews.erase_expired_reviews() == [second["id"]]
    assert Speaker.objects.get(id=first["id"]).enrollment_status == "needs_review"
