"""Every API endpoint against every scope, no key, and a second tenant.

The expected answer comes from each view's declared ``required_scopes``; the matrix checks
that the declaration is what the server enforces, and that no object of one tenant can be
read or changed with another tenant's key, whatever its scopes.
"""

from __future__ import annotations

import uuid

import pytest
from django.urls import resolve

from audit.models import AuditEvent
from diarization.models import DiarizationJob, JobStatus
from enrollment.models import EnrollmentStatus, Speaker
from enrollment.services import erase_speaker
from tenancy.models import ALL_SCOPES, Tenant
from tests.factories import client_for, make_key, make_tenant

BASE = "/v1/modules/scaiecho"

# (method, path template); {speaker}, {erasure} and {job} belong to the owning tenant.
ENDPOINTS = [
    ("GET", "/speakers"),
    ("POST", "/speakers"),
    ("GET", "/speakers/{speaker}"),
    ("DELETE", "/speakers/{speaker}"),
    ("POST", "/speakers/{speaker}/consent/withdraw"),
    ("GET", "/speakers/{speaker}/warm"),
    ("POST", "/speakers/{speaker}/warm"),
    ("GET", "/nodes"),
    ("GET", "/consent-records"),
    ("GET", "/erasures"),
    ("GET", "/erasures/{erasure}"),
    ("GET", "/audit/events"),
    ("GET", "/audit/verify"),
    ("POST", "/diarize"),
    ("GET", "/diarize/{job}"),
    ("GET", "/diarize/{job}/result"),
]
OBJECT_ENDPOINTS = [e for e in ENDPOINTS if "{" in e[1]]


def make_speaker(tenant: Tenant, name: str) -> Speaker:
    return Speaker.objects.create(
        tenant=tenant,
        display_name=name,
        language_primary="en",
        enrollment_status=EnrollmentStatus.READY,
        reference_blob_key=f"speakers/{uuid.uuid4()}",
        reference_sha256="0" * 64,
        reference_size_bytes=1,
        reference_duration_s=5.0,
        reference_speech_s=4.0,
        embedding_model_id="m",
        embedding_model_version="v",
    )


@pytest.fixture
def owned(db, tenant, django_capture_on_commit_callbacks):
    """One speaker, one erasure and one finished diarization job of ``tenant``."""
    speaker = make_speaker(tenant, "Owned Speaker")
    with django_capture_on_commit_callbacks(execute=True):
        erasure = erase_speaker(
            make_speaker(tenant, "Erased"), reason="erasure_requested", actor="t"
        )
    job = DiarizationJob.objects.create(
        tenant=tenant,
        status=JobStatus.SUCCEEDED,
        audio_blob_key="diarize/x",
        audio_sha256="0" * 64,
        audio_size_bytes=1,
        audio_duration_s=1.0,
        estimated_time_s=1,
        result={"segments": [], "speakers": [], "warnings": []},
    )
    return {"speaker": speaker.id, "erasure": erasure.erasure.id, "job": job.id}


def call(client, method: str, path: str):
    body = {"node_ids": []} if path.endswith("/warm") else {}
    return getattr(client, method.lower())(BASE + path, body, format="json")


def allowed(method: str, path: str, scopes: set[str]) -> bool:
    match = resolve(
        BASE + path.format(speaker=uuid.uuid4(), erasure=uuid.uuid4(), job=uuid.uuid4())
    )
    alternatives = match.func.cls.required_scopes[method]
    return any(set(needed) <= scopes for needed in alternatives)


@pytest.mark.parametrize("method, template", ENDPOINTS)
@pytest.mark.parametrize("scope", [None, *ALL_SCOPES])
def test_each_scope_reaches_only_what_it_is_declared_for(tenant, owned, method, template, scope):
    path = template.format(**owned)
    client = client_for(None if scope is None else make_key(tenant, [scope])[1])

    response = call(client, method, path)

    if scope is None:
        assert response.status_code == 401, response.content
        assert response.json()["error"]["code"] == "unauthenticated"
    elif allowed(method, template, {scope}):
        assert response.status_code not in (401, 403, 500), response.content
    else:
        assert response.status_code == 403, (scope, response.content)
        assert response.json()["error"]["code"] == "missing_scope"


@pytest.mark.parametrize("method, template", OBJECT_ENDPOINTS)
def test_another_tenants_key_finds_nothing_and_changes_nothing(tenant, owned, method, template):
    stranger = client_for(make_key(make_tenant())[1])  # every scope, other tenant
    events_before = AuditEvent.objects.filter(tenant=tenant).count()

    response = call(stranger, method, template.format(**owned))

    assert response.status_code == 404, response.content
    assert Speaker.objects.get(id=owned["speaker"]).enrollment_status == EnrollmentStatus.READY
    assert AuditEvent.objects.filter(tenant=tenant).count() == events_before


def test_another_tenants_lists_are_empty_of_our_objects(tenant, owned):
    stranger = client_for(make_key(make_tenant())[1])
    for path in ("/speakers", "/consent-records", "/erasures"):
        assert stranger.get(BASE + path).json()["data"] == [], path
    ours = set(AuditEvent.objects.filter(tenant=tenant).values_list("seq", flat=True))
    theirs = {e["seq"] for e in stranger.get(BASE + "/audit/events").json()["data"]}
    assert ours and not ours & theirs
