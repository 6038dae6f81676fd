import json

import pytest

from audit.models import AuditEvent
from tests.factories import client_for, enrollment_form, make_key

pytestmark = pytest.mark.django_db

SPEAKERS = "/v1/modules/scaiecho/speakers"
BASE = "/v1/modules/scaiecho"


@pytest.fixture
def auditor(tenant):
    return client_for(make_key(tenant, ["scaiecho:audit"])[1])


@pytest.fixture
def two_speakers(api):
    ids = [
        api.post(SPEAKERS, enrollment_form(display_name=f"S{i}"), format="multipart").json()[
            "data"
        ]["id"]
        for i in range(2)
    ]
    api.delete(f"{SPEAKERS}/{ids[0]}")
    return ids


def test_auditor_reads_consent_records_erasures_and_events(auditor, two_speakers):
    consents = auditor.get(f"{BASE}/consent-records").json()
    assert consents["pagination"]["count"] == 2
    only = auditor.get(f"{BASE}/consent-records", {"speaker_id": two_speakers[1]}).json()["data"]
    assert [c["speaker_id"] for c in only] == [two_speakers[1]]

    erasures = auditor.get(f"{BASE}/erasures").json()["data"]
    assert [e["speaker_id"] for e in erasures] == [two_speakers[0]]

    events = auditor.get(f"{BASE}/audit/events", {"speaker_id": two_speakers[0]}).json()["data"]
    assert {e["action"] for e in events} >= {"speaker.enrolled", "speaker.erased"}
    future = auditor.get(f"{BASE}/audit/events", {"since": "2999-01-01T00:00:00Z"}).json()
    assert future["data"] == []


def test_exports_as_csv_and_json_lines_are_themselves_audited(auditor, two_speakers):
    jsonl = auditor.get(f"{BASE}/audit/events", {"export": "jsonl"})
    assert jsonl.status_code == 200
    assert jsonl["Content-Type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in b"".join(jsonl.streaming_content).splitlines()]
    assert {"seq", "hash", "prev_hash", "action"} <= set(lines[0])

    csv_response = auditor.get(f"{BASE}/consent-records", {"export": "csv"})
    rows = b"".join(csv_response.streaming_content).decode().splitlines()
    assert rows[0].startswith("id,speaker_id,consent_user_full_name")
    assert len(rows) == 3
    assert AuditEvent.objects.filter(action="audit.exported").count() == 2


def test_auditor_cannot_change_anything(auditor, two_speakers):
    assert auditor.delete(f"{SPEAKERS}/{two_speakers[1]}").status_code == 403
    assert auditor.post(f"{SPEAKERS}/{two_speakers[1]}/consent/withdraw").status_code == 403
    assert (
        auditor.post(
            f"{SPEAKERS}/{two_speakers[1]}/warm", {"node_ids": []}, format="json"
        ).status_code
        == 403
    )
    assert auditor.post(SPEAKERS, enrollment_form(), format="multipart").status_code == 403


def test_enroll_only_keys_cannot_read_the_audit_api(tenant, two_speakers):
    admin = client_for(make_key(tenant, ["scaiecho:enroll"])[1])
    for path in ("consent-records", "erasures", "audit/events", "audit/verify"):
        response = admin.get(f"{BASE}/{path}")
        assert response.status_code == 403, path
        assert response.json()["error"]["required_scopes"] == [["scaiecho:audit"]]


def test_bad_filters_are_400(auditor):
    response = auditor.get(f"{BASE}/audit/events", {"since": "yesterday", "export": "xml"})
    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {"since", "export"}


def test_csv_cells_never_start_a_formula(api, auditor):
    api.post(
        SPEAKERS,
        enrollment_form(consent_user_full_name='=HYPERLINK("http://x")'),
        format="multipart",
    )
    rows = b"".join(
        auditor.get(f"{BASE}/consent-records", {"export": "csv"}).streaming_content
    ).decode()
    assert "'=HYPERLINK(" in rows
    assert ",=HYPERLINK(" not in rows and ',"=HYPERLINK(' not in rows
