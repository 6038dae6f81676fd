"""The voiceprint moves from the speaker row to the voiceprint store (``Voiceprint``).

The old ciphertext is bound to the speaker row's column, the new one to the speaker and the
model, and the stamp is the plaintext's SHA-256: so each vector is decrypted with the speaker's
data key and sealed again here, in this migration's one transaction, and the old column goes.
A speaker whose key is gone (erased) has no vector to move: its tombstone blanked the column.
Reversible: the vectors of the speakers' own model go back into the column.
"""

import hashlib

import django.db.models.deletion
import numpy as np
from django.db import migrations, models

from data_keys.crypto import field_context
from data_keys.wrapping import unwrap_data_key

BATCH = 500
DTYPE = np.dtype("<f4")
PREFLIGHT = "preflight"


def _old_context(speaker_id):
    return field_context("enrollment_speaker", speaker_id, "voiceprint")


def _new_context(speaker_id, model_id, model_version):
    return field_context(
        "enrollment_voiceprint", speaker_id, f"{len(model_id)}:{model_id}:{model_version}"
    )


def _keys(data_key_model, speaker_ids):
    return {
        row.speaker_id: unwrap_data_key(row.speaker_id, row.wrapped_key, row.wrapping_key_id)
        for row in data_key_model.objects.filter(speaker_id__in=speaker_ids)
    }


def _batches(queryset):
    after = None
    while True:
        batch = list((queryset if after is None else queryset.filter(id__gt=after))[:BATCH])
        if not batch:
            return
        yield batch
        after = batch[-1].id


def move_to_store(apps, schema_editor):
    speaker_model = apps.get_model("enrollment", "Speaker")
    voiceprint_model = apps.get_model("enrollment", "Voiceprint")
    data_key_model = apps.get_model("data_keys", "DataKey")
    schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    sealed = speaker_model.objects.filter(voiceprint_ciphertext__isnull=False).order_by("id")
    fields = ("id", "tenant_id", "voiceprint_ciphertext", "embedding_model_id")
    for speakers in _batches(sealed.only(*fields, "embedding_model_version")):
        keys = _keys(data_key_model, [s.id for s in speakers])
        rows = []
        for speaker in speakers:
            key = keys.get(speaker.id)
            if key is None:
                continue
            plain = key.decrypt(_old_context(speaker.id), bytes(speaker.voiceprint_ciphertext))
            model = (speaker.embedding_model_id, speaker.embedding_model_version)
            rows.append(
                voiceprint_model(
                    speaker_id=speaker.id,
                    tenant_id=speaker.tenant_id,
                    model_id=model[0],
                    model_version=model[1],
                    ciphertext=key.encrypt(_new_context(speaker.id, *model), plain),
                    vector_sha256=hashlib.sha256(plain).hexdigest(),
                    computed_by=PREFLIGHT,
                )
            )
        voiceprint_model.objects.bulk_create(rows)


def move_back(apps, schema_editor):
    speaker_model = apps.get_model("enrollment", "Speaker")
    voiceprint_model = apps.get_model("enrollment", "Voiceprint")
    data_key_model = apps.get_model("data_keys", "DataKey")
    schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    for speakers in _batches(speaker_model.objects.order_by("id")):
        keys = _keys(data_key_model, [s.id for s in speakers])
        stored = {
            (v.speaker_id, v.model_id, v.model_version): v
            for v in voiceprint_model.objects.filter(speaker_id__in=[s.id for s in speakers])
        }
        changed = []
        for speaker in speakers:
            model = (speaker.embedding_model_id, speaker.embedding_model_version)
            row = stored.get((speaker.id, *model))
            key = keys.get(speaker.id)
            if row is None or key is None:
                continue
            plain = key.decrypt(_new_context(speaker.id, *model), bytes(row.ciphertext))
            speaker.voiceprint_ciphertext = key.encrypt(_old_context(speaker.id), plain)
            changed.append(speaker)
        speaker_model.objects.bulk_update(changed, ["voiceprint_ciphertext"])


class Migration(migrations.Migration):
    dependencies = [
        ("enrollment", "0006_review_hold"),
        ("data_keys", "0001_initial"),
        ("tenancy", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="Voiceprint",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("model_id", models.CharField(max_length=200)),
                ("model_version", models.CharField(max_length=100)),
                ("ciphertext", models.BinaryField()),
                ("vector_sha256", models.CharField(max_length=64)),
                ("computed_by", models.CharField(max_length=80)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "speaker",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="voiceprints",
                        to="enrollment.speaker",
                    ),
                ),
                (
                    "tenant",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="tenancy.tenant",
                    ),
                ),
            ],
            options={
                "indexes": [
                    models.Index(
                        fields=["tenant", "model_id", "model_version", "id"],
                        name="enrollment__tenant__f0c630_idx",
                    )
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("speaker", "model_id", "model_version"),
                        name="one_voiceprint_per_model",
                    )
                ],
            },
        ),
        migrations.RunPython(move_to_store, move_back),
        migrations.RemoveField(model_name="speaker", name="voiceprint_ciphertext"),
    ]
