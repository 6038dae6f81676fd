"""The consent record's full name, consent text and client address move from clear text to
ciphertext under the speaker's data key (enrollment 0005 gave every speaker not erased one).

The table refuses UPDATE (its immutable-rows trigger), so this migration, run by the owner in
one transaction, disables that trigger, rewrites each row once and enables it again (ENABLE
ALWAYS, as common/immutability.py created it) before it commits: no other transaction ever
sees the table unprotected, and a failure rolls everything back, the trigger's state
included. Records of erased speakers keep no personal field: they get no ciphertext, and the
clear columns are dropped.
"""

from django.db import migrations, models

from consent.models import consent_field_context
from data_keys.wrapping import unwrap_data_key

BATCH = 500
TABLE = "consent_consentrecord"
ROW_TRIGGER = f"{TABLE}_immutable_rows"
# The clear column, the ciphertext column; both named by the context the ciphertext is bound to.
FIELDS = [
    ("consent_user_full_name", "full_name_ciphertext"),
    ("consent_text", "consent_text_ciphertext"),
    ("client_ip", "client_ip_ciphertext"),
]


def _rewrite_each_record(apps, schema_editor, rewrite, updated_fields):
    record_model = apps.get_model("consent", "ConsentRecord")
    data_key_model = apps.get_model("data_keys", "DataKey")
    schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    schema_editor.execute(f"ALTER TABLE {TABLE} DISABLE TRIGGER {ROW_TRIGGER}")
    records = record_model.objects.order_by("id")
    after = None
    while True:
        batch = list((records if after is None else records.filter(id__gt=after))[:BATCH])
        if not batch:
            break
        keys = {
            row.speaker_id: unwrap_data_key(row.speaker_id, row.wrapped_key, row.wrapping_key_id)
            for row in data_key_model.objects.filter(
                speaker_id__in={record.speaker_id for record in batch}
            )
        }
        for record in batch:
            rewrite(record, keys.get(record.speaker_id))
        record_model.objects.bulk_update(batch, updated_fields)
        after = batch[-1].id
    schema_editor.execute(f"ALTER TABLE {TABLE} ENABLE ALWAYS TRIGGER {ROW_TRIGGER}")


def encrypt_personal_fields(apps, schema_editor):
    def encrypt(record, key):
        for clear, sealed in FIELDS:
            value = getattr(record, clear)
            if key is not None and value:
                context = consent_field_context(record.id, clear)
                setattr(record, sealed, key.encrypt_text(context, value))

    _rewrite_each_record(apps, schema_editor, encrypt, [sealed for _, sealed in FIELDS])


def decrypt_personal_fields(apps, schema_editor):
    def decrypt(record, key):
        for clear, sealed in FIELDS:
            value = getattr(record, sealed)
            if key is not None and value is not None:
                context = consent_field_context(record.id, clear)
                setattr(record, clear, key.decrypt_text(context, bytes(value)))
            elif clear != "client_ip":
                setattr(record, clear, "")  # erased: the columns were NOT NULL before

    _rewrite_each_record(apps, schema_editor, decrypt, [clear for clear, _ in FIELDS])


class Migration(migrations.Migration):
    atomic = True  # the trigger is off only inside this one transaction

    dependencies = [
        ("consent", "0003_tenancy_models"),
        ("enrollment", "0005_voiceprint_encrypted"),
        ("data_keys", "0001_initial"),
    ]

    operations = [
        # Nullable on the way: so that this migration can also be reversed with rows.
        migrations.AlterField(
            model_name="consentrecord",
            name="consent_user_full_name",
            field=models.CharField(max_length=200, null=True),
        ),
        migrations.AlterField(
            model_name="consentrecord",
            name="consent_text",
            field=models.TextField(null=True),
        ),
        migrations.AddField(
            model_name="consentrecord",
            name="full_name_ciphertext",
            field=models.BinaryField(null=True),
        ),
        migrations.AddField(
            model_name="consentrecord",
            name="consent_text_ciphertext",
            field=models.BinaryField(null=True),
        ),
        migrations.AddField(
            model_name="consentrecord",
            name="client_ip_ciphertext",
            field=models.BinaryField(null=True),
        ),
        migrations.RunPython(encrypt_personal_fields, decrypt_personal_fields),
        migrations.RemoveField(model_name="consentrecord", name="consent_user_full_name"),
        migrations.RemoveField(model_name="consentrecord", name="consent_text"),
        migrations.RemoveField(model_name="consentrecord", name="client_ip"),
    ]
