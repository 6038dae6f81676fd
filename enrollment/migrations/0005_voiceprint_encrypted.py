"""The voiceprint moves from a clear float array to ciphertext under the speaker's data key.

Every speaker not erased gets its data key here (erased ones get none: their voiceprint was
blanked by the tombstone), in this migration's one transaction.
"""

import numpy as np
from django.db import migrations, models

from data_keys.crypto import field_context
from data_keys.wrapping import new_wrapped_data_key, unwrap_data_key

BATCH = 500
EVICTED = "evicted"
# The format of the speaker row's voiceprint column, frozen here: the voiceprint store
# (0007) replaced it.
DTYPE = np.dtype("<f4")


def _context(speaker_id):
    return field_context("enrollment_speaker", speaker_id, "voiceprint")


def seal_voiceprint(key, vector):
    return key.encrypt(_context(key.speaker_id), np.asarray(vector, dtype=DTYPE).tobytes())


def open_voiceprint(key, ciphertext):
    plain = key.decrypt(_context(key.speaker_id), bytes(ciphertext))
    return np.frombuffer(plain, dtype=DTYPE).astype(np.float32)


def _batches(queryset):
    after = None
    while True:
        batch = list((queryset if after is None else queryset.filter(id__gt=after))[:BATCH])
        if not batch:
            return
        yield batch
        after = batch[-1].id


def _keys(data_key_model, speakers, create):
    """Each speaker's data key, made (and stored) where ``create`` and it has none."""
    stored = {
        row.speaker_id: unwrap_data_key(row.speaker_id, row.wrapped_key, row.wrapping_key_id)
        for row in data_key_model.objects.filter(speaker_id__in=[s.id for s in speakers])
    }
    if create:
        fresh = []
        for speaker in speakers:
            if speaker.id not in stored:
                key, wrapped, key_id = new_wrapped_data_key(speaker.id)
                stored[speaker.id] = key
                fresh.append(
                    data_key_model(
                        speaker_id=speaker.id,
                        tenant_id=speaker.tenant_id,
                        wrapped_key=wrapped,
                        wrapping_key_id=key_id,
                    )
                )
        data_key_model.objects.bulk_create(fresh)
    return stored


def encrypt_voiceprints(apps, schema_editor):
    speaker_model = apps.get_model("enrollment", "Speaker")
    data_key_model = apps.get_model("data_keys", "DataKey")
    # Deferred foreign-key checks fire now, not at the ALTER TABLE that follows.
    schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    live = speaker_model.objects.exclude(enrollment_status=EVICTED).order_by("id")
    for speakers in _batches(live.only("id", "tenant_id", "voiceprint")):
        keys = _keys(data_key_model, speakers, create=True)
        sealed = [s for s in speakers if s.voiceprint is not None]
        for speaker in sealed:
            speaker.voiceprint_ciphertext = seal_voiceprint(keys[speaker.id], speaker.voiceprint)
        speaker_model.objects.bulk_update(sealed, ["voiceprint_ciphertext"])


def decrypt_voiceprints(apps, schema_editor):
    speaker_model = apps.get_model("enrollment", "Speaker")
    data_key_model = apps.get_model("data_keys", "DataKey")
    schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    sealed = speaker_model.objects.filter(voiceprint_ciphertext__isnull=False).order_by("id")
    for speakers in _batches(sealed.only("id", "voiceprint_ciphertext")):
        keys = _keys(data_key_model, speakers, create=False)
        opened = [s for s in speakers if s.id in keys]
        for speaker in opened:
            vector = open_voiceprint(keys[speaker.id], speaker.voiceprint_ciphertext)
            speaker.voiceprint = [float(x) for x in vector]
        speaker_model.objects.bulk_update(opened, ["voiceprint"])


class Migration(migrations.Migration):
    dependencies = [
        ("enrollment", "0004_tenant_and_api_key_moved_to_tenancy"),
        ("data_keys", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="speaker",
            name="voiceprint_ciphertext",
            field=models.BinaryField(blank=True, null=True),
        ),
        migrations.RunPython(encrypt_voiceprints, decrypt_voiceprints),
        migrations.RemoveField(model_name="speaker", name="voiceprint"),
    ]
