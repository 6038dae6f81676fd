"""Tenant and ApiKey moved from enrollment to tenancy: a database with rows migrates as is."""

from __future__ import annotations

import uuid

from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from consent.models import ConsentRecord
from enrollment.models import Speaker
from tenancy.models import ApiKey, Tenant

# The schema as it was before the move.
BEFORE_THE_MOVE = [
    ("enrollment", "0003_tenant_identification_threshold_and_more"),
    ("consent", "0002_consent_record_immutable"),
    ("audit", "0003_immutable_audit_tables"),
    ("console", "0001_initial"),
    ("diarization", "0001_initial"),
    ("nodes", "0002_alter_nodeassignment_state"),
]


def migrate(targets: list[tuple[str, str | None]]) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return MigrationExecutor(connection)


def latest() -> list[tuple[str, str | None]]:
    executor = MigrationExecutor(connection)
    return executor.loader.graph.leaf_nodes()


def test_rows_written_before_the_move_read_through_the_tenancy_models(live_db):
    executor = migrate(BEFORE_THE_MOVE)
    old = executor.loader.project_state(BEFORE_THE_MOVE).apps
    tenant = old.get_model("enrollment", "Tenant").objects.create(
        slug="before-the-move", name="Old", retention_days=30, webhook_secret="whsec_x"
    )
    key = old.get_model("enrollment", "ApiKey").objects.create(
        tenant=tenant, prefix="abcdef123456", key_sha256="0" * 64, scopes=["scaiecho:enroll"]
    )
    speaker = old.get_model("enrollment", "Speaker").objects.create(
        tenant=tenant,
        display_name="Old Speaker",
        language_primary="en",
        reference_blob_key="k",
        reference_sha256="1" * 64,
        reference_size_bytes=1,
        reference_duration_s=1.0,
        reference_speech_s=1.0,
        embedding_model_id="m",
        embedding_model_version="v",
        created_by_key=key,
    )
    old.get_model("consent", "ConsentRecord").objects.create(
        tenant=tenant,
        speaker=speaker,
        consent_user_full_name="Old Speaker",
        consent_stated_purpose="p",
        consent_text="t",
        consent_text_sha256="2" * 64,
        recording_blob_key="c",
        recording_sha256="3" * 64,
        recording_size_bytes=1,
        recording_duration_s=1.0,
        recording_speech_s=1.0,
        api_key=key,
        api_key_prefix=key.prefix,
        recorded_at=timezone.now(),
    )

    migrate(latest())

    moved = Tenant.objects.get(id=tenant.id)
    assert (moved.slug, moved.retention_days, moved.webhook_secret) == (
        "before-the-move",
        30,
        "whsec_x",
    )
    assert ApiKey.objects.get(id=key.id).tenant == moved
    assert Speaker.objects.get(id=speaker.id).created_by_key_id == key.id
    assert ConsentRecord.objects.get(speaker_id=speaker.id).api_key.tenant == moved
    assert Tenant._meta.db_table == "enrollment_tenant"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT app_label FROM django_content_type WHERE model IN ('tenant', 'apikey')"
        )
        assert {row[0] for row in cursor.fetchall()} <= {"tenancy"}
    # New rows go through the new models into the same tables.
    assert Tenant.objects.create(slug=f"t-{uuid.uuid4().hex[:8]}").pk
