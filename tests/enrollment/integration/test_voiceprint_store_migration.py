"""Voiceprints kept on the speaker row move into the voiceprint store once, re-sealed under
the speaker's data key for their model and stamped; and back again."""

from __future__ import annotations

import hashlib
import uuid

import numpy as np
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from data_keys.crypto import field_context
from data_keys.selectors import speaker_key
from data_keys.services import create_data_key, destroy_data_key
from enrollment.models import Voiceprint
from tests.factories import stored_voiceprint

BEFORE = [("enrollment", "0006_review_hold")]
VECTOR = [0.25, -0.5, 0.125]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)


def latest():
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


def old_apps():
    return MigrationExecutor(connection).loader.project_state(BEFORE).apps


def old_context(speaker_id):
    return field_context("enrollment_speaker", speaker_id, "voiceprint")


def old_speakers() -> dict[str, uuid.UUID]:
    """A speaker with a sealed voiceprint in the old column, and one whose key is gone."""
    apps = old_apps()
    tenant = apps.get_model("tenancy", "Tenant").objects.create(slug=f"t-{uuid.uuid4().hex[:8]}")
    made = {}
    for name in ("kept", "keyless"):
        speaker_id = uuid.uuid4()
        key = create_data_key(speaker_id=speaker_id, tenant_id=tenant.id)
        apps.get_model("enrollment", "Speaker").objects.create(
            id=speaker_id,
            tenant_id=tenant.id,
            display_name=name,
            language_primary="en",
            enrollment_status="ready",
            reference_blob_key="k",
            reference_sha256="1" * 64,
            reference_size_bytes=1,
            reference_duration_s=1.0,
            reference_speech_s=1.0,
            voiceprint_ciphertext=key.encrypt(
                old_context(speaker_id), np.asarray(VECTOR, dtype="<f4").tobytes()
            ),
            embedding_model_id="m",
            embedding_model_version="v",
        )
        made[name] = speaker_id
    destroy_data_key(made["keyless"])
    return made


def test_the_old_column_moves_into_the_store_and_back(live_db):
    migrate(BEFORE)
    speakers = old_speakers()

    migrate(latest())

    (row,) = Voiceprint.objects.all()
    assert row.speaker_id == speakers["kept"]
    assert (row.model_id, row.model_version, row.computed_by) == ("m", "v", "preflight")
    plain = np.asarray(VECTOR, dtype="<f4").tobytes()
    assert row.vector_sha256 == hashlib.sha256(plain).hexdigest()
    assert np.allclose(stored_voiceprint(speakers["kept"]), VECTOR)
    with connection.cursor() as cursor:
        columns = {
            c.name
            for c in connection.introspection.get_table_description(cursor, "enrollment_speaker")
        }
    assert "voiceprint_ciphertext" not in columns

    migrate(BEFORE)
    old = old_apps().get_model("enrollment", "Speaker").objects
    sealed = old.get(id=speakers["kept"]).voiceprint_ciphertext
    key = speaker_key(speakers["kept"])
    assert key.decrypt(old_context(speakers["kept"]), bytes(sealed)) == plain
    migrate(latest())
    assert np.allclose(stored_voiceprint(speakers["kept"]), VECTOR)
