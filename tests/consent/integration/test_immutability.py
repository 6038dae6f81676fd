"""Consent records refuse UPDATE, DELETE and TRUNCATE at the database level."""

import pytest
from django.db import DatabaseError, connection, transaction

from consent.models import ConsentRecord
from tests.factories import enrollment_form

pytestmark = pytest.mark.django_db

TABLE = ConsentRecord._meta.db_table


@pytest.fixture
def consent_record(api):
    response = api.post("/v1/modules/scaiecho/speakers", enrollment_form(), format="multipart")
    assert response.status_code == 201
    return ConsentRecord.objects.get(speaker_id=response.json()["data"]["id"])


def refused(sql: str, params=(), replica: bool = False) -> str:
    with connection.cursor() as cursor:
        # The test's own insert left deferred FK checks pending, which TRUNCATE would trip on first.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    with pytest.raises(DatabaseError) as error, transaction.atomic(), connection.cursor() as cursor:
        if replica:
            cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(sql, params)
    return str(error.value)


@pytest.mark.parametrize("replica", [False, True], ids=["origin", "replica"])
def test_raw_update_is_refused(consent_record, replica):
    message = refused(
        f"UPDATE {TABLE} SET consent_stated_purpose = 'forged' WHERE id = %s",
        [consent_record.id],
        replica,
    )
    assert "immutable" in message
    consent_record.refresh_from_db()
    assert consent_record.consent_stated_purpose.startswith("Meeting transcription")


@pytest.mark.parametrize("replica", [False, True], ids=["origin", "replica"])
def test_raw_delete_is_refused(consent_record, replica):
    assert "immutable" in refused(
        f"DELETE FROM {TABLE} WHERE id = %s", [consent_record.id], replica
    )
    assert ConsentRecord.objects.filter(id=consent_record.id).exists()


@pytest.mark.parametrize("replica", [False, True], ids=["origin", "replica"])
def test_truncate_is_refused(consent_record, replica):
    assert "immutable" in refused(f"TRUNCATE {TABLE} CASCADE", replica=replica)
    assert ConsentRecord.objects.filter(id=consent_record.id).exists()


def test_orm_update_and_delete_are_refused(consent_record):
    with pytest.raises(DatabaseError), transaction.atomic():
        ConsentRecord.objects.filter(id=consent_record.id).update(consent_stated_purpose="other")
    with pytest.raises(DatabaseError), transaction.atomic():
        consent_record.delete()
    assert ConsentRecord.objects.filter(id=consent_record.id).exists()


def test_triggers_are_enabled_always():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = %s::regclass "
            "AND NOT tgisinternal ORDER BY tgname",
            [TABLE],
        )
        rows = cursor.fetchall()
    assert rows == [(f"{TABLE}_immutable_rows", "A"), (f"{TABLE}_immutable_truncate", "A")]
