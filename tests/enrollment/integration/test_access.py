import json

import pytest

from tenancy.models import ApiKey
from tests.factories import client_for, enrollment_form, make_key, make_tenant

URL = "/v1/modules/scaiecho/speakers"

pytestmark = pytest.mark.django_db


def test_missing_key_is_401_with_a_bearer_challenge():
    response = client_for(None).get(URL)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header", ["Bearer se_000000000000_nope", "Bearer garbage", "Basic abc", "Bearer "]
)
def test_bad_key_is_401(header):
    response = client_for(None).get(URL, HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_revoked_key_is_401(tenant):
    key, raw = make_key(tenant)
    ApiKey.objects.filter(id=key.id).update(revoked_at="2026-01-01T00:00:00Z")
    assert client_for(raw).get(URL).status_code == 401


def test_transcribe_scope_does_not_imply_enroll(tenant):
    _, raw = make_key(tenant, ["scaiecho:transcribe", "scaiecho:diarize"])
    response = client_for(raw).post(URL, enrollment_form(), format="multipart")
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "missing_scope"
    assert "scaiecho:enroll" in error["message"]
    assert error["required_scopes"] == [["scaiecho:enroll"]]


def test_auditor_can_read_but_not_enroll(tenant):
    _, raw = make_key(tenant, ["scaiecho:audit"])
    auditor = client_for(raw)
    assert auditor.get(URL).status_code == 200
    assert auditor.post(URL, enrollment_form(), format="multipart").status_code == 403


def test_another_tenants_speaker_is_404(api):
    created = api.post(URL, enrollment_form(), format="multipart").json()["data"]
    stranger = client_for(make_key(make_tenant())[1])
    response = stranger.get(f"{URL}/{created['id']}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert stranger.get(URL).json()["pagination"]["count"] == 0


def test_keys_are_stored_only_as_hashes(tenant):
    key, raw = make_key(tenant)
    stored = ApiKey.objects.get(id=key.id)
    assert raw not in {stored.key_sha256, stored.prefix, stored.name}
    secret = raw.split("_", 2)[2]
    assert len(secret) >= 40
    assert all(secret not in str(value) for value in vars(stored).values())


def test_a_key_with_a_known_prefix_is_checked_in_constant_time(tenant, monkeypatch):
    """Keys are looked up by their public prefix; the secret's hash is then compared with
    hmac.compare_digest, whose time does not depend on where the hashes differ."""
    import hmac

    from tenancy import auth

    compared = []
    compare_digest = hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return compare_digest(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    key, raw = make_key(tenant)
    forged = raw[:-1] + ("A" if raw[-1] != "A" else "B")

    assert client_for(forged).get(URL).status_code == 401
    assert compared == [(key.key_sha256, auth.hash_api_key(forged))]
    assert client_for(raw).get(URL).status_code == 200


def test_openapi_schema_is_served():
    response = client_for(None).get("/v1/openapi.json")
    assert response.status_code == 200
    schema = json.loads(response.content)
    assert "/v1/modules/scaiecho/speakers" in schema["paths"]
    assert schema["components"]["securitySchemes"]["ApiKeyBearer"]["scheme"] == "bearer"


def test_openapi_schema_generates_without_warnings(tmp_path):
    from django.core.management import call_command

    call_command("spectacular", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    assert "/v1/modules/scaiecho/erasures/{audit_id}" in (tmp_path / "schema.yaml").read_text()
