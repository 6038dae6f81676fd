import io

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction

from audit.models import AuditEvent, ErasureAudit, ErasureConfirmation
from audit.services import record_event, verify_chain
from consent.models import ConsentRecord
from tests import audio
from tests.factories import client_for, enrollment_form, make_key, upload

pytestmark = pytest.mark.django_db

SPEAKERS = "/v1/modules/scaiecho/speakers"
IMMUTABLE = [ConsentRecord, AuditEvent, ErasureAudit, ErasureConfirmation]


@pytest.fixture
def erased(api):
    speaker_id = api.post(SPEAKERS, enrollment_form(), format="multipart").json()["data"]["id"]
    api.delete(f"{SPEAKERS}/{speaker_id}")
    from audit.services import confirm_erasure

    confirm_erasure(
        ErasureAudit.objects.get(speaker_id=speaker_id), node_id="node-x", outcome="evicted"
    )
    return speaker_id


def execute(sql: str, replica: bool) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    with transaction.atomic(), connection.cursor() as cursor:
        if replica:
            cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(sql)


@pytest.mark.parametrize("model", IMMUTABLE, ids=lambda m: m.__name__)
@pytest.mark.parametrize("replica", [False, True], ids=["origin", "replica"])
@pytest.mark.parametrize(
    "statement",
    ["UPDATE {t} SET {c} = {c}", "DELETE FROM {t}", "TRUNCATE {t} CASCADE"],
    ids=["update", "delete", "truncate"],
)
def test_immutable_tables_refuse_changes_from_raw_sql(erased, model, replica, statement):
    table = model._meta.db_table
    column = model._meta.pk.column
    before = model.objects.count()
    assert before > 0
    with pytest.raises(DatabaseError, match="immutable"):
        execute(statement.format(t=table, c=column), replica)
    assert model.objects.count() == before


def test_sensitive_actions_land_in_the_trail(api, erased):
    bad = enrollment_form(reference=upload("r.wav", audio.encode(audio.silence(4.0))))
    api.post(SPEAKERS, bad, format="multipart")
    actions = list(AuditEvent.objects.values_list("action", flat=True))
    for action in (
        "api_key.created",
        "speaker.enrolled",
        "speaker.erased",
        "speaker.status_changed",
        "erasure.evicted",
        "preflight.rejected",
    ):
        assert action in actions, action
    enrolled = AuditEvent.objects.get(action="speaker.enrolled")
    assert enrolled.actor.startswith("api-key:")
    assert enrolled.details["consent_record_id"]


def test_every_event_links_to_the_one_before():
    for n in range(5):
        record_event("test.event", actor="system", details={"n": n})
    events = list(AuditEvent.objects.order_by("seq"))
    for before, after in zip(events, events[1:], strict=False):
        assert after.prev_hash == before.hash
    assert verify_chain().intact


def tamper(sql: str, params) -> None:
    """What an attacker with the table owner's rights would have to do."""
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # flush the test's pending FK checks
        cursor.execute(
            "ALTER TABLE audit_auditevent DISABLE TRIGGER audit_auditevent_immutable_rows"
        )
        cursor.execute(sql, params)
        cursor.execute(
            "ALTER TABLE audit_auditevent ENABLE ALWAYS TRIGGER audit_auditevent_immutable_rows"
        )


def test_a_tampered_event_is_named_by_the_verifier():
    events = [record_event("test.event", actor="system", details={"n": n}) for n in range(6)]
    tamper("UPDATE audit_auditevent SET details = %s WHERE seq = %s", ['{"n": 99}', events[3].seq])
    verdict = verify_chain()
    assert not verdict.intact
    assert verdict.first_broken_seq == events[3].seq
    assert verdict.problem == "content does not match its hash"


def test_a_deleted_event_is_found_at_the_next_link():
    events = [record_event("test.event", actor="system", details={"n": n}) for n in range(6)]
    tamper("DELETE FROM audit_auditevent WHERE seq = %s", [events[2].seq])
    verdict = verify_chain()
    assert verdict.first_broken_seq == events[3].seq
    assert "link" in verdict.problem


def test_verify_command_and_endpoint(tenant):
    record_event("test.event", actor="system")
    out = io.StringIO()
    call_command("verify_audit_trail", stdout=out)
    assert "intact" in out.getvalue()
    auditor = client_for(make_key(tenant, ["scaiecho:audit"])[1])
    body = auditor.get("/v1/modules/scaiecho/audit/verify").json()["data"]
    assert body["intact"] is True and body["events_checked"] >= 1

    event = AuditEvent.objects.order_by("seq").last()
    tamper("UPDATE audit_auditevent SET actor = 'someone' WHERE seq = %s", [event.seq])
    with pytest.raises(SystemExit) as exit_code:
        call_command("verify_audit_trail", stdout=io.StringIO(), stderr=io.StringIO())
    assert exit_code.value.code == 1
    assert auditor.get("/v1/modules/scaiecho/audit/verify").json()["data"]["first_broken_seq"] == (
        event.seq
    )


def test_values_that_jsonb_rewrites_still_verify():
    record_event(
        "test.event",
        actor="system",
        details={
            "big": 1e20,
            "negative_zero": -0.0,
            "nan": float("nan"),
            "nul": "a\x00b",
            "nested": {"b": 1, "a": [1.5, "x"]},
        },
    )
    event = AuditEvent.objects.order_by("seq").last()
    assert event.details["nan"] is None and event.details["nul"] == "ab"
    assert verify_chain().intact
