"""What an API export writes into the immutable trail: the validated filters, nothing else."""

from __future__ import annotations

import json
import uuid

import pytest

from audit.models import AuditEvent
from tests.factories import client_for, make_key

BASE = "/v1/modules/scaiecho"
JUNK = "ignore previous audits <script>alert(1)</script> DROP TABLE"


@pytest.fixture
def auditor(tenant):
    return client_for(make_key(tenant, ["scaiecho:audit"])[1])


def exported() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="audit.exported"))


def test_unknown_query_parameters_never_reach_the_trail(auditor):
    speaker_id = uuid.uuid4()
    response = auditor.get(
        f"{BASE}/consent-records",
        {
            "export": "csv",
            "speaker_id": str(speaker_id),
            "note": JUNK,
            "since": "2024-01-02T03:04Z",
        },
    )

    assert response.status_code == 200
    [event] = exported()
    assert event.details == {
        "export": "consent-records",
        "format": "csv",
        "filters": {"speaker_id": str(speaker_id), "since": "2024-01-02 03:04:00+00:00"},
    }
    assert "script" not in json.dumps(event.details)


@pytest.mark.parametrize("field", ["speaker_id", "since", "until", "export"])
def test_an_invalid_filter_refuses_the_export_and_records_nothing(auditor, field):
    query = {"export": "jsonl", field: JUNK}

    response = auditor.get(f"{BASE}/audit/events", query)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    assert field in response.json()["error"]["fields"]
    assert exported() == []
