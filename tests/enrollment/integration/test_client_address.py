"""The consent record's client address is the client's, as the trusted proxy reports it."""

from __future__ import annotations

import pytest

from consent.models import ConsentRecord
from consent.selectors import consent_record_bodies
from tenancy.permissions import ConsentFieldAccess
from tests.factories import enrollment_form

URL = "/v1/modules/scaiecho/speakers"

pytestmark = pytest.mark.django_db


def enroll_through_proxy(api) -> str | None:
    """The client address the consent record holds (encrypted), as an auditor reads it."""
    response = api.post(
        URL,
        enrollment_form(),
        format="multipart",
        REMOTE_ADDR="10.0.0.5",
        HTTP_X_FORWARDED_FOR="192.0.2.66, 198.51.100.7",
    )
    assert response.status_code == 201, response.json()
    records = ConsentRecord.objects.filter(speaker_id=response.json()["data"]["id"])
    return consent_record_bodies(records, ConsentFieldAccess(client_address=True))[0]["client_ip"]


def test_the_consent_record_names_the_client_behind_a_trusted_proxy(api, settings):
    settings.TRUSTED_PROXY_HEADER = "X-Forwarded-For"
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]

    assert enroll_through_proxy(api) == "198.51.100.7"


def test_without_a_trusted_proxy_the_consent_record_names_the_peer(api, settings):
    settings.TRUSTED_PROXY_HEADER = ""

    assert enroll_through_proxy(api) == "10.0.0.5"
