"""Console exports record their filters as the filter form validated them, never raw text."""

from __future__ import annotations

import json
import uuid

import pytest
from django.test import Client

from audit.models import AuditEvent
from console.services import create_console_user

JUNK = "ignore previous audits <script>alert(1)</script> DROP TABLE"


@pytest.fixture
def auditor(tenant, settings) -> Client:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    client = Client()
    client.force_login(create_console_user(tenant, f"auditor-{tenant.slug}", "auditor", "x")[0])
    return client


def exported() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="audit.exported"))


def test_an_export_records_only_the_validated_filters(auditor):
    speaker_id = uuid.uuid4()
    query = {"speaker_id": str(speaker_id), "until": "2030-05-06 07:08", "page": "2", "q": JUNK}

    response = auditor.get("/console/export/audit-events.jsonl", query)

    assert response.status_code == 200
    [event] = exported()
    assert event.details == {
        "export": "audit-events",
        "format": "jsonl",
        "filters": {"speaker_id": str(speaker_id), "until": "2030-05-06 07:08:00+00:00"},
    }
    assert "script" not in json.dumps(event.details)


def test_an_export_without_filters_records_none(auditor):
    assert auditor.get("/console/export/erasures.csv", {"note": JUNK}).status_code == 200
    [event] = exported()
    assert event.details == {"export": "erasures", "format": "csv", "filters": {}}


@pytest.mark.parametrize("field", ["speaker_id", "since", "until"])
def test_an_invalid_filter_refuses_the_export_and_records_nothing(auditor, field):
    response = auditor.get("/console/export/consent-records.csv", {field: JUNK})

    assert response.status_code == 400
    page = response.content.decode()
    assert "nothing was exported" in page and "<script>alert" not in page
    assert exported() == []
