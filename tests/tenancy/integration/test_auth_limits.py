"""The API's failed-authentication limits: per presented key (its public prefix) and, looser,
per client address, the address read through the configured trusted proxy only."""

from __future__ import annotations

import pytest

from tests.factories import make_key

SPEAKERS = "/v1/modules/scaiecho/speakers"

pytestmark = pytest.mark.django_db


def get(raw_key: str, **extra: str):
    from rest_framework.test import APIClient

    return APIClient().get(SPEAKERS, HTTP_AUTHORIZATION=f"Bearer {raw_key}", **extra)


def test_guessing_one_key_is_cut_off_without_locking_out_the_others_behind_that_address(
    settings, tenant
):
    settings.AUTH_FAILURE_KEY_LIMIT = 3
    settings.AUTH_FAILURE_LIMIT = 50
    victim, victim_raw = make_key(tenant)
    guess = f"se_{victim.prefix}_{'A' * 43}"

    codes = [get(guess).status_code for _ in range(4)]

    assert codes == [401, 401, 401, 429]
    refused = get(guess)
    assert refused.json()["error"]["code"] == "rate_limited"
    assert "this key" in refused.json()["error"]["message"]
    assert 1 <= int(refused["Retry-After"]) <= settings.AUTH_FAILURE_WINDOW_S
    # Another client behind the same NAT or proxy, with a key of its own, carries on.
    assert get(make_key(tenant)[1]).status_code == 200
    # The guessed key waits out the window too: its secret cannot be probed meanwhile.
    assert get(victim_raw).status_code == 429


def test_trying_prefix_after_prefix_is_cut_off_per_address(settings, tenant):
    settings.AUTH_FAILURE_KEY_LIMIT = 100
    settings.AUTH_FAILURE_LIMIT = 3

    codes = [get(f"se_{n:012d}_guess").status_code for n in range(4)]

    assert codes == [401, 401, 401, 429]
    refused = get(make_key(tenant)[1])
    assert refused.status_code == 429
    assert "this address" in refused.json()["error"]["message"]
    assert get(make_key(tenant)[1], REMOTE_ADDR="198.51.100.2").status_code == 200


def test_malformed_credentials_count_against_the_address(settings, tenant):
    settings.AUTH_FAILURE_LIMIT = 2
    from rest_framework.test import APIClient

    client = APIClient()
    assert client.get(SPEAKERS, HTTP_AUTHORIZATION="Basic abc").status_code == 401
    assert client.get(SPEAKERS, HTTP_AUTHORIZATION="Bearer").status_code == 401
    assert get(make_key(tenant)[1]).status_code == 429


def test_behind_a_trusted_proxy_each_client_has_its_own_address_limit(settings, tenant):
    settings.TRUSTED_PROXY_HEADER = "X-Forwarded-For"
    settings.TRUSTED_PROXIES = ["127.0.0.0/8"]
    settings.AUTH_FAILURE_LIMIT = 2
    settings.AUTH_FAILURE_KEY_LIMIT = 100
    guesser = {"HTTP_X_FORWARDED_FOR": "198.51.100.1"}

    codes = [get(f"se_{n:012d}_guess", **guesser).status_code for n in range(3)]

    assert codes == [401, 401, 429]
    neighbour = {"HTTP_X_FORWARDED_FOR": "198.51.100.2"}
    assert get(make_key(tenant)[1], **neighbour).status_code == 200


def test_a_forwarded_address_the_service_does_not_trust_changes_nothing(settings, tenant):
    settings.TRUSTED_PROXY_HEADER = ""
    settings.AUTH_FAILURE_LIMIT = 2
    settings.AUTH_FAILURE_KEY_LIMIT = 100

    codes = [
        get(f"se_{n:012d}_guess", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}").status_code
        for n in range(3)
    ]

    assert codes == [401, 401, 429]
