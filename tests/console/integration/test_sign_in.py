"""Console (and admin) sign-in under the limits: per user name, per client address, with a
message on the page, a 429, and an audit event that holds no user name or password."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from audit.models import AuditEvent
from console.services import create_console_user
from console.sign_in import keyed_hash

PASSWORD = "correct horse battery staple"
WRONG = "hunter2-wrong-password"
LOGIN = "/console/login/"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def limits(settings):
    settings.CONSOLE_SIGN_IN_USER_LIMIT = 3
    settings.CONSOLE_SIGN_IN_ADDRESS_LIMIT = 100
    return settings


def sign_in(username: str, password: str, client: Client | None = None, **extra: str):
    client = client or Client()
    return client.post(LOGIN, {"username": username, "password": password}, **extra)


def trail_text(event: AuditEvent) -> str:
    return json.dumps({"actor": event.actor, "details": event.details})


def test_a_user_name_is_cut_off_after_its_failed_sign_ins(tenant):
    user, _ = create_console_user(tenant, "ann", "admin", PASSWORD)

    failed = [sign_in("ann", WRONG).status_code for _ in range(3)]
    refused = sign_in("ann", PASSWORD)

    assert failed == [200, 200, 200]
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 900
    page = refused.content.decode()
    assert "Too many failed sign-ins" in page and 'id="refusal"' in page
    assert "_auth_user_id" not in refused.wsgi_request.session  # the password was not tried
    # Another user from the same address signs in.
    create_console_user(tenant, "bob", "admin", PASSWORD)
    assert sign_in("bob", PASSWORD).status_code == 302

    (event,) = AuditEvent.objects.filter(action="console.sign_in_throttled")
    assert event.tenant_id == tenant.id
    assert event.actor == "system:sign-in-throttle"
    assert event.details["user_id"] == user.pk
    assert event.details["limit"] == "user_name"
    for leaked in ("ann", PASSWORD, WRONG, "127.0.0.1"):
        assert leaked not in trail_text(event)


def test_a_throttled_user_name_is_audited_once_per_window(tenant):
    create_console_user(tenant, "ann", "admin", PASSWORD)
    for _ in range(3):
        sign_in("ann", WRONG)

    codes = [sign_in("ann", WRONG).status_code for _ in range(3)]

    assert codes == [429, 429, 429]
    assert AuditEvent.objects.filter(action="console.sign_in_throttled").count() == 1


def test_an_unknown_user_name_is_kept_out_of_the_trail_as_a_keyed_hash():
    typed = "my-secret-password-in-the-wrong-field"
    for _ in range(4):
        sign_in(typed, WRONG)

    (event,) = AuditEvent.objects.filter(action="console.sign_in_throttled")
    assert event.tenant_id is None
    assert event.details["user_name_hmac"] == keyed_hash("user-name", typed)
    assert typed not in trail_text(event)


def test_an_address_is_cut_off_after_failures_across_user_names(tenant, limits):
    limits.CONSOLE_SIGN_IN_USER_LIMIT = 100
    limits.CONSOLE_SIGN_IN_ADDRESS_LIMIT = 3
    create_console_user(tenant, "ann", "admin", PASSWORD)
    for name in ("a", "b", "c"):
        assert sign_in(name, WRONG).status_code == 200

    refused = sign_in("ann", PASSWORD)

    assert refused.status_code == 429
    assert "Too many failed sign-ins" in refused.content.decode()
    assert sign_in("ann", PASSWORD, REMOTE_ADDR="198.51.100.2").status_code == 302
    (event,) = AuditEvent.objects.filter(action="console.sign_in_throttled")
    assert event.details["limit"] == "address"
    assert event.details["client_address_hmac"] == keyed_hash("address", "127.0.0.1")


def test_behind_a_trusted_proxy_the_forwarded_client_is_limited(tenant, limits):
    limits.CONSOLE_SIGN_IN_USER_LIMIT = 100
    limits.CONSOLE_SIGN_IN_ADDRESS_LIMIT = 2
    limits.TRUSTED_PROXY_HEADER = "X-Forwarded-For"
    create_console_user(tenant, "ann", "admin", PASSWORD)
    guesser = {"HTTP_X_FORWARDED_FOR": "198.51.100.1"}
    for name in ("a", "b"):
        sign_in(name, WRONG, **guesser)

    assert sign_in("ann", PASSWORD, **guesser).status_code == 429
    assert sign_in("ann", PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.2").status_code == 302


def test_a_successful_sign_in_is_audited(tenant):
    user, _ = create_console_user(tenant, "ann", "auditor", PASSWORD)

    assert sign_in("ann", PASSWORD).status_code == 302

    (event,) = AuditEvent.objects.filter(action="console.signed_in")
    assert event.tenant_id == tenant.id
    assert event.actor == f"console-user:{user.pk}"
    assert event.details == {"user_id": user.pk}
    for leaked in ("ann", PASSWORD):
        assert leaked not in trail_text(event)


def test_the_admin_sign_in_shares_the_limits():
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_superuser("root", password=PASSWORD)
    for _ in range(2):
        sign_in("root", WRONG)
    # Alternating between the console and the admin gains nothing.
    admin = Client()
    assert admin.post("/admin/login/", {"username": "root", "password": WRONG}).status_code == 200

    refused = admin.post("/admin/login/", {"username": "root", "password": PASSWORD})

    assert refused.status_code == 429
    assert AuditEvent.objects.filter(action="admin.sign_in_throttled").count() == 1
    assert Client().get("/admin/login/").status_code == 200


def test_the_admin_sign_in_still_signs_in():
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_superuser("root", password=PASSWORD)
    admin = Client()

    response = admin.post("/admin/login/?next=/admin/", {"username": "root", "password": PASSWORD})

    assert response.status_code == 302
    assert admin.get("/admin/").status_code == 200
    assert AuditEvent.objects.filter(action="admin.signed_in").count() == 1


def test_without_redis_sign_in_is_refused_rather_than_unthrottled(tenant, settings):
    from common.redis_client import redis_client
    from tests.live import free_port

    create_console_user(tenant, "ann", "admin", PASSWORD)
    shared_redis_url = settings.REDIS_URL
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    redis_client.cache_clear()
    try:
        response = sign_in("ann", PASSWORD)
    finally:
        settings.REDIS_URL = shared_redis_url
        redis_client.cache_clear()

    assert response.status_code == 503
    assert "Sign-in is unavailable" in response.content.decode()


def test_a_failure_that_cannot_be_counted_still_answers(tenant, monkeypatch):
    from redis.exceptions import ConnectionError as RedisConnectionError

    from common import rate_limits

    create_console_user(tenant, "ann", "admin", PASSWORD)

    def redis_gone(name: str, limit: int, window_s: int) -> None:
        raise RedisConnectionError("connection refused")

    monkeypatch.setattr(rate_limits, "consume", redis_gone)

    response = sign_in("ann", WRONG)

    assert response.status_code == 200
    assert "did not match" in response.content.decode()


def test_a_refusal_whose_audit_cannot_be_counted_still_refuses(tenant, monkeypatch):
    from redis.exceptions import ConnectionError as RedisConnectionError

    from console import sign_in as sign_in_module

    create_console_user(tenant, "ann", "admin", PASSWORD)
    for _ in range(3):
        sign_in("ann", WRONG)

    def redis_gone(self, limit: str) -> bool:
        raise RedisConnectionError("connection refused")

    monkeypatch.setattr(sign_in_module.SignInLimits, "first_refusal", redis_gone)

    response = sign_in("ann", PASSWORD)

    assert response.status_code == 429
    assert not AuditEvent.objects.filter(action="console.sign_in_throttled").exists()
