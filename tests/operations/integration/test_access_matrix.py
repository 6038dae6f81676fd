"""Every method of every route, API and console, against every scope or role, no key or no
sign-in, and another tenant.

The policy is written out here, not read from the views: ``test_the_policy_covers_every_route``
checks that each route the URL configuration serves is in it and that each API view declares
exactly these scopes, and the matrix checks that the server enforces them. A method a route
does not declare is a 405 for everyone (HEAD where GET is not declared, OPTIONS always on the
API, HEAD and OPTIONS on the console); HEAD needs what GET needs. A refused request, and any
HEAD, leaves the audit trail and the speaker as they were.

Size: API 17 routes (14 + 3 exports) x 7 methods x 7 callers (no key; each of the 4 scopes, and
all of them, of the owning tenant; all scopes of another tenant) = 833 requests; console 23
routes (17 + 6 exports) x 7 methods x 5 callers (signed out; signed in without a tenant;
auditor; admin; admin of another tenant) = 805 requests; operations 3 routes x 7 methods.
The Django admin and the OpenAPI schema are Django's and drf-spectacular's own.
"""

from __future__ import annotations

import itertools
import json
import uuid
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve

from audit.models import AuditEvent
from console.services import create_console_user
from diarization.models import DiarizationJob, JobStatus
from enrollment.models import EnrollmentStatus, Speaker
from enrollment.services import erase_speaker
from tenancy.api_views import ScopedView
from tenancy.models import ALL_SCOPES, Scope, Tenant
from tests.factories import client_for, make_key, make_speaker, make_tenant

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}

ENROLL = (Scope.ENROLL.value,)
AUDIT = (Scope.AUDIT.value,)
DIARIZE = (Scope.TRANSCRIBE.value, Scope.DIARIZE.value)

BASE = "/v1/modules/scaiecho"
# path (relative to BASE) -> method -> alternatives; {speaker}, {erasure} and {job} belong
# to the owning tenant. The exports are the list routes with ?export=.
API_POLICY: dict[str, dict[str, list[tuple[str, ...]]]] = {
    "/speakers": {"GET": [ENROLL, AUDIT], "POST": [ENROLL]},
    "/speakers/{speaker}": {"GET": [ENROLL, AUDIT], "DELETE": [ENROLL]},
    "/speakers/{speaker}/review": {"POST": [ENROLL]},
    "/speakers/{speaker}/consent/withdraw": {"POST": [ENROLL]},
    "/speakers/{speaker}/warm": {"GET": [ENROLL], "POST": [ENROLL]},
    "/nodes": {"GET": [ENROLL, AUDIT]},
    "/consent-records": {"GET": [AUDIT]},
    "/consent-records?export=csv": {"GET": [AUDIT]},
    "/erasures": {"GET": [AUDIT]},
    "/erasures?export=jsonl": {"GET": [AUDIT]},
    "/erasures/{erasure}": {"GET": [ENROLL, AUDIT]},
    "/audit/events": {"GET": [AUDIT]},
    "/audit/events?export=csv": {"GET": [AUDIT]},
    "/audit/verify": {"GET": [AUDIT]},
    "/diarize": {"POST": [DIARIZE]},
    "/diarize/{job}": {"GET": [DIARIZE]},
    "/diarize/{job}/result": {"GET": [DIARIZE]},
}

PUBLIC, MEMBER, ADMIN = "public", "member", "admin"
# path -> method -> who may: anyone, any member of a tenant, or an admin.
CONSOLE_POLICY: dict[str, dict[str, str]] = {
    "/console/": {"GET": PUBLIC},  # a redirect to the speakers
    "/console/speakers/": {"GET": MEMBER},
    "/console/speakers/new/": {"GET": ADMIN, "POST": ADMIN},
    "/console/speakers/{speaker}/": {"GET": MEMBER},
    "/console/speakers/{speaker}/status.json": {"GET": MEMBER},
    "/console/speakers/{speaker}/rewarm/": {"POST": ADMIN},
    "/console/speakers/{speaker}/erase/": {"GET": ADMIN, "POST": ADMIN},
    "/console/speakers/{speaker}/review/": {"POST": ADMIN},
    "/console/speakers/{speaker}/recordings/reference/": {"GET": ADMIN},
    "/console/speakers/{speaker}/recordings/consent/": {"GET": ADMIN},
    "/console/reviews/": {"GET": MEMBER},
    "/console/nodes/": {"GET": MEMBER},
    "/console/consent-records/": {"GET": MEMBER},
    "/console/erasures/": {"GET": MEMBER},
    "/console/erasures/{erasure}/": {"GET": MEMBER},
    "/console/erasures/{erasure}/status.json": {"GET": MEMBER},
    "/console/audit/": {"GET": MEMBER},
    **{
        f"/console/export/{name}.{fmt}": {"GET": MEMBER}
        for name in ("consent-records", "erasures", "audit-events")
        for fmt in ("csv", "jsonl")
    },
}
# Sign-in and sign-out are Django's own views, tested with the console.
CONSOLE_UNLISTED = {"console:login", "console:logout"}


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


def is_object_route(template: str) -> bool:
    return "{" in template


def served(policy: dict[str, Any], method: str) -> bool:
    return method in policy or (method == "HEAD" and "GET" in policy)


def send(client: Client, method: str, path: str) -> Any:
    body = {"node_ids": []} if path.endswith("/warm") else {}
    if method in BODY_METHODS:
        return client.generic(method, path, json.dumps(body), content_type="application/json")
    return client.generic(method, path)


def send_without_trace(client: Client, method: str, path: str) -> Any:
    """Sends the request and rolls back what it wrote, so every caller meets the same state."""
    savepoint = transaction.savepoint()
    try:
        return send(client, method, path)
    finally:
        transaction.savepoint_rollback(savepoint)


def untouched(owned: dict[str, Any], events_before: int) -> list[str]:
    problems = []
    if AuditEvent.objects.count() != events_before:
        problems.append("wrote an audit event")
    if Speaker.objects.get(id=owned["speaker"]).enrollment_status != EnrollmentStatus.READY:
        problems.append("changed the speaker")
    return problems


# --- the API ---------------------------------------------------------------------------------


API_CALLERS = ["no key", *ALL_SCOPES, "every scope", "another tenant"]


def api_client(tenant: Tenant, caller: str) -> Client:
    if caller == "no key":
        return client_for(None)
    if caller == "another tenant":
        return client_for(make_key(make_tenant())[1])
    return client_for(make_key(tenant, None if caller == "every scope" else [caller])[1])


def api_expectation(template: str, method: str, caller: str) -> tuple[str, Any]:
    """What the caller must get: ("error", (status, code)) or ("allowed", None)."""
    policy = API_POLICY[template]
    if method == "OPTIONS" or not served(policy, method):
        return "error", (405, "method_not_allowed")
    if caller == "no key":
        return "error", (401, "unauthenticated")
    if caller == "another tenant":
        return ("error", (404, "not_found")) if is_object_route(template) else ("allowed", None)
    scopes = set(ALL_SCOPES) if caller == "every scope" else {caller}
    alternatives = policy["GET" if method == "HEAD" else method]
    if any(set(needed) <= scopes for needed in alternatives):
        return "allowed", None
    return "error", (403, "missing_scope")


@pytest.mark.parametrize("template", API_POLICY)
def test_api_route_answers_each_method_and_caller_as_declared(tenant, owned, template):
    path = BASE + template.format(**owned)
    clients = {caller: api_client(tenant, caller) for caller in API_CALLERS}
    problems = []
    for method, (caller, client) in itertools.product(METHODS, clients.items()):
        who = f"{method} by {caller}"
        events_before = AuditEvent.objects.count()
        response = send_without_trace(client, method, path)
        kind, expected = api_expectation(template, method, caller)
        if kind == "allowed":
            if response.status_code in (401, 403, 405) or response.status_code >= 500:
                problems.append(f"{who}: refused with {response.status_code}")
            if method == "HEAD":
                problems.extend(f"{who}: {p}" for p in untouched(owned, events_before))
            continue
        status, code = expected
        if response.status_code != status:
            problems.append(f"{who}: got {response.status_code}, expected {expected}")
        elif method != "HEAD" and response.json()["error"]["code"] != code:
            problems.append(f"{who}: got {response.content!r}, expected {expected}")
        problems.extend(f"{who}: refused but {p}" for p in untouched(owned, events_before))
    assert not problems, f"{template}:\n" + "\n".join(problems)


@pytest.mark.parametrize("export", [t for t in API_POLICY if "export=" in t])
def test_head_on_an_export_answers_its_headers_and_records_nothing(tenant, owned, export):
    auditor = client_for(make_key(tenant, [Scope.AUDIT.value])[1])
    events_before = AuditEvent.objects.count()

    response = auditor.head(BASE + export)

    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment;")
    assert AuditEvent.objects.count() == events_before
    auditor.get(BASE + export)
    assert AuditEvent.objects.count() == events_before + 1  # the GET is recorded


def test_options_reveals_nothing_about_the_view(tenant, owned):
    response = client_for(make_key(tenant)[1]).options(BASE + "/speakers")

    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert "OPTIONS" not in response["Allow"] and "HEAD" in response["Allow"]
    assert "parses" not in response.content.decode()


def test_another_tenants_lists_are_empty_of_our_objects(tenant, owned):
    stranger = client_for(make_key(make_tenant())[1])
    for path in ("/speakers", "/consent-records", "/erasures"):
        assert stranger.get(BASE + path).json()["data"] == [], path
    ours = set(AuditEvent.objects.filter(tenant=tenant).values_list("seq", flat=True))
    theirs = {e["seq"] for e in stranger.get(BASE + "/audit/events").json()["data"]}
    assert ours and not ours & theirs


# --- the console -----------------------------------------------------------------------------


CONSOLE_CALLERS = ["signed out", "no tenant", "auditor", "admin", "another tenant's admin"]


@pytest.fixture
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def console_client(tenant: Tenant, caller: str) -> Client:
    client = Client()
    name = f"user-{uuid.uuid4().hex[:10]}"
    if caller == "no tenant":
        client.force_login(get_user_model().objects.create_user(name, password="x"))
    elif caller != "signed out":
        role = "auditor" if caller == "auditor" else "admin"
        owner = make_tenant() if caller.startswith("another") else tenant
        client.force_login(create_console_user(owner, name, role, "x")[0])
    return client


def console_expectation(template: str, method: str, caller: str) -> tuple[str, Any]:
    policy = CONSOLE_POLICY[template]
    if method not in policy:
        return "status", 405
    if policy[method] == PUBLIC:
        return "allowed", None
    if caller == "signed out":
        return "login", None
    if caller == "no tenant" or (caller == "auditor" and policy[method] == ADMIN):
        return "status", 403
    if caller.startswith("another") and is_object_route(template):
        return "status", 404
    return "allowed", None


@pytest.mark.parametrize("template", CONSOLE_POLICY)
def test_console_route_answers_each_method_and_caller_as_declared(
    tenant, owned, fast_passwords, template
):
    path = template.format(**owned)
    clients = {caller: console_client(tenant, caller) for caller in CONSOLE_CALLERS}
    problems = []
    for method, (caller, client) in itertools.product(METHODS, clients.items()):
        who = f"{method} by {caller}"
        events_before = AuditEvent.objects.count()
        response = send_without_trace(client, method, path)
        kind, expected = console_expectation(template, method, caller)
        to_login = response.status_code == 302 and response["Location"].startswith(
            "/console/login/"
        )
        if kind == "allowed":
            if to_login or response.status_code in (403, 405) or response.status_code >= 500:
                problems.append(f"{who}: refused with {response.status_code}")
            continue
        if kind == "login" and not to_login:
            problems.append(f"{who}: {response.status_code}, expected the sign-in redirect")
        if kind == "status" and response.status_code != expected:
            problems.append(f"{who}: {response.status_code}, expected {expected}")
        problems.extend(f"{who}: refused but {p}" for p in untouched(owned, events_before))
    assert not problems, f"{template}:\n" + "\n".join(problems)


# --- operations ------------------------------------------------------------------------------


# Public by design (probes and the scrape); they serve GET and nothing else.
OPERATIONS_ROUTES = ["/healthz", "/readyz", "/metrics"]


@pytest.mark.parametrize("path", OPERATIONS_ROUTES)
def test_operations_routes_serve_get_only(db, client, path):
    for method in METHODS:
        status = send(client, method, path).status_code
        assert (status == 405) == (method != "GET"), (method, status)


# --- the policy covers what the URL configuration serves -------------------------------------


def routes(patterns: list[Any], prefix: str = "") -> list[tuple[str, Any]]:
    found = []
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            found.extend(routes(pattern.url_patterns, prefix + str(pattern.pattern)))
        elif isinstance(pattern, URLPattern):
            found.append((prefix + str(pattern.pattern), pattern))
    return found


def sample_path(template: str) -> str:
    return template.split("?")[0].format(
        speaker=uuid.uuid4(), erasure=uuid.uuid4(), job=uuid.uuid4()
    )


def test_the_policy_covers_every_route():
    api_views = {resolve(BASE + sample_path(t)).route: t for t in API_POLICY}
    console_views = {resolve(sample_path(t)).route: t for t in CONSOLE_POLICY}
    for route, pattern in routes(get_resolver().url_patterns):
        if route.startswith("v1/modules/scaiecho/"):
            assert route in api_views, f"{route} is not in the access matrix"
            view = pattern.callback.cls
            assert issubclass(view, ScopedView), f"{route} is not a ScopedView"
            assert view.required_scopes == API_POLICY[api_views[route]], route
            handlers = {m.upper() for m in view.http_method_names if hasattr(view, m)}
            assert handlers - {"HEAD"} == set(view.required_scopes), route
        elif route.startswith("console/"):
            unlisted = f"console:{pattern.name}" in CONSOLE_UNLISTED
            assert unlisted or route in console_views, f"{route} is not in the access matrix"
        elif not route.startswith(("admin/", "v1/openapi.json", "v1/docs/")):
            assert f"/{route}" in OPERATIONS_ROUTES, f"{route} is not in the access matrix"
