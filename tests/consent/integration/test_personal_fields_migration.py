"""A database holding consent records and voiceprints in clear moves to ciphertext under each
speaker's data key once, in one transaction per table, with the consent table's immutability
whole before and after; records of speakers erased earlier keep no personal field at all."""

from __future__ import annotations

import importlib
import uuid

import numpy as np
import pytest
from django.db import DatabaseError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from consent.models import ConsentRecord
from consent.selectors import consent_record_bodies
from data_keys.models import DataKey
from tenancy.permissions import ConsentFieldAccess
from tests.factories import stored_voiceprint

# The schema as it was before the personal fields were encrypted (and as the old models saw it).
OLD_STATE = [
    ("enrollment", "0004_tenant_and_api_key_moved_to_tenancy"),
    ("consent", "0003_tenancy_models"),
]
BEFORE = [*OLD_STATE, ("data_keys", None)]
TABLE = "consent_consentrecord"
EVERY_FIELD = ConsentFieldAccess(identity=True, client_address=True)
CONSENT_MIGRATION = "consent.migrations.0004_personal_fields_encrypted"


def migrate(targets: list[tuple[str, str | None]]) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return MigrationExecutor(connection)


def latest() -> list[tuple[str, str | None]]:
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


def columns(table: str) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s", [table]
        )
        return {row[0] for row in cursor.fetchall()}


def whole_table_as_stored() -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT coalesce(string_agg(r::text, '|' ORDER BY id), '') FROM {TABLE} r")
        return cursor.fetchone()[0]


def trigger_states() -> list[tuple[str, str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = %s::regclass "
            "AND NOT tgisinternal ORDER BY tgname",
            [TABLE],
        )
        return cursor.fetchall()


PROTECTED = [(f"{TABLE}_immutable_rows", "A"), (f"{TABLE}_immutable_truncate", "A")]


def old_rows() -> dict[str, uuid.UUID]:
    """Rows as the old schema wrote them: a live speaker with a voiceprint, a live one without,
    and one erased before this change, whose consent record still held its fields in clear."""
    old = MigrationExecutor(connection).loader.project_state(OLD_STATE).apps
    tenant = old.get_model("tenancy", "Tenant").objects.create(slug=f"t-{uuid.uuid4().hex[:8]}")
    key = old.get_model("tenancy", "ApiKey").objects.create(
        tenant=tenant, prefix=uuid.uuid4().hex[:12], key_sha256="0" * 64, scopes=["x"]
    )
    speakers = {}
    for name, status, voiceprint in [
        ("Ada Lovelace", "ready", [0.25, -0.5, 0.125]),
        ("Charles Babbage", "pending", None),
        ("Erased Person", "evicted", None),
    ]:
        speaker = old.get_model("enrollment", "Speaker").objects.create(
            tenant=tenant,
            display_name="" if status == "evicted" else name,
            language_primary="en",
            enrollment_status=status,
            reference_blob_key="k",
            reference_sha256="1" * 64,
            reference_size_bytes=1,
            reference_duration_s=1.0,
            reference_speech_s=1.0,
            voiceprint=voiceprint,
            embedding_model_id="m",
            embedding_model_version="v",
            created_by_key=key,
        )
        old.get_model("consent", "ConsentRecord").objects.create(
            tenant=tenant,
            speaker=speaker,
            consent_user_full_name=name,
            consent_stated_purpose="Diarization",
            consent_text=f"I, {name}, consent.",
            consent_text_sha256="2" * 64,
            recording_blob_key="c",
            recording_sha256="3" * 64,
            recording_size_bytes=1,
            recording_duration_s=1.0,
            recording_speech_s=1.0,
            api_key=key,
            api_key_prefix=key.prefix,
            client_ip="192.0.2.10" if status != "pending" else None,
            recorded_at=timezone.now(),
        )
        speakers[name] = speaker.id
    return speakers


def opened(speaker_id: uuid.UUID) -> dict:
    return consent_record_bodies(ConsentRecord.objects.filter(speaker_id=speaker_id), EVERY_FIELD)[
        0
    ]


def test_clear_rows_move_to_ciphertext_once_and_erased_ones_keep_nothing(live_db):
    migrate(BEFORE)
    speakers = old_rows()
    ada, charles, erased = speakers.values()

    migrate(latest())

    assert set(DataKey.objects.values_list("speaker_id", flat=True)) == {ada, charles}
    assert np.allclose(stored_voiceprint(ada), [0.25, -0.5, 0.125])
    assert stored_voiceprint(charles) is None
    assert "voiceprint" not in columns("enrollment_speaker")

    assert opened(ada)["erased"] is False
    assert (
        opened(ada)["consent_user_full_name"],
        opened(ada)["consent_text"],
        opened(ada)["client_ip"],
    ) == ("Ada Lovelace", "I, Ada Lovelace, consent.", "192.0.2.10")
    assert opened(charles)["client_ip"] is None and opened(charles)["erased"] is False
    assert opened(erased)["erased"] is True
    assert opened(erased)["consent_user_full_name"] is None
    assert opened(erased)["consent_stated_purpose"] == "Diarization"
    assert opened(erased)["consent_text_sha256"] == "2" * 64

    assert not {"consent_user_full_name", "consent_text", "client_ip"} & columns(TABLE)
    stored = whole_table_as_stored()
    for clear in ("Ada Lovelace", "Charles Babbage", "Erased Person", "192.0.2.10", "consent."):
        assert clear not in stored
    # Immutable again, as before the migration.
    assert trigger_states() == PROTECTED
    with pytest.raises(DatabaseError, match="immutable"), transaction.atomic():
        ConsentRecord.objects.filter(speaker_id=ada).update(consent_stated_purpose="forged")

    # And back: the clear columns return (blank for the erased speaker, whose key is gone).
    migrate(BEFORE)
    old = MigrationExecutor(connection).loader.project_state(OLD_STATE).apps
    records = old.get_model("consent", "ConsentRecord").objects
    assert records.get(speaker_id=ada).consent_user_full_name == "Ada Lovelace"
    assert records.get(speaker_id=erased).consent_user_full_name == ""
    assert old.get_model("enrollment", "Speaker").objects.get(id=ada).voiceprint == [
        0.25,
        -0.5,
        0.125,
    ]
    assert trigger_states() == PROTECTED
    migrate(latest())
    assert opened(ada)["consent_user_full_name"] == "Ada Lovelace"


def test_a_failure_half_way_leaves_every_consent_record_as_it_was(live_db, monkeypatch):
    migrate(BEFORE)
    speakers = old_rows()
    before = whole_table_as_stored()
    migration = importlib.import_module(CONSENT_MIGRATION)
    real_context = migration.consent_field_context
    encrypted = []

    def fail_on_the_second_record(record_id, column):
        encrypted.append(record_id)
        if len(set(encrypted)) > 1:
            raise RuntimeError("injected half-way")
        return real_context(record_id, column)

    monkeypatch.setattr(migration, "consent_field_context", fail_on_the_second_record)
    try:
        with pytest.raises(RuntimeError, match="injected"):
            migrate(latest())
        assert whole_table_as_stored() == before
        assert "consent_user_full_name" in columns(TABLE)
        assert trigger_states() == PROTECTED
    finally:
        monkeypatch.undo()
        migrate(latest())  # the speakers' keys, made before, are used as they are
    assert opened(speakers["Ada Lovelace"])["consent_user_full_name"] == "Ada Lovelace"
