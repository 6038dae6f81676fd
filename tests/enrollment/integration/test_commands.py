import io

import pytest
from django.core.management import CommandError, call_command

from tenancy.auth import hash_api_key
from tenancy.models import ApiKey, Tenant
from tests.factories import client_for

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_create_tenant_is_idempotent():
    assert run("create_tenant", "acme").strip() == "acme"
    assert run("create_tenant", "acme").strip() == "acme"
    assert Tenant.objects.filter(slug="acme").count() == 1


def test_create_api_key_prints_the_key_alone_and_stores_its_hash():
    run("create_tenant", "acme")
    output = run("create_api_key", "acme", "--scopes", "scaiecho:enroll,scaiecho:audit")
    raw_key = output.strip()
    assert output.count("\n") == 1 and raw_key.startswith("se_")
    key = ApiKey.objects.get(tenant__slug="acme")
    assert key.key_sha256 == hash_api_key(raw_key)
    assert sorted(key.scopes) == ["scaiecho:audit", "scaiecho:enroll"]
    assert client_for(raw_key).get("/v1/modules/scaiecho/speakers").status_code == 200


def test_create_api_key_refuses_unknown_scopes_and_tenants():
    run("create_tenant", "acme")
    with pytest.raises(CommandError, match="unknown scopes"):
        run("create_api_key", "acme", "--scopes", "scaiecho:everything")
    with pytest.raises(CommandError, match="no tenant"):
        run("create_api_key", "nobody")
