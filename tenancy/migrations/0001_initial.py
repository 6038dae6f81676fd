# Tenant and ApiKey moved here from the enrollment app. Their tables keep their names
# (enrollment_tenant, enrollment_apikey): only Django's model state moves, no row is touched.

import uuid

import django.contrib.postgres.fields
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("enrollment", "0003_tenant_identification_threshold_and_more"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name="Tenant",
                    fields=[
                        (
                            "id",
                            models.UUIDField(
                                default=uuid.uuid4,
                                editable=False,
                                primary_key=True,
                                serialize=False,
                            ),
                        ),
                        ("slug", models.SlugField(max_length=64, unique=True)),
                        ("name", models.CharField(blank=True, max_length=200)),
                        ("retention_days", models.PositiveIntegerField(default=1095)),
                        ("identification_threshold", models.FloatField(blank=True, null=True)),
                        ("webhook_secret", models.CharField(blank=True, max_length=100)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                    ],
                    options={"db_table": "enrollment_tenant"},
                ),
                migrations.CreateModel(
                    name="ApiKey",
                    fields=[
                        (
                            "id",
                            models.UUIDField(
                                default=uuid.uuid4,
                                editable=False,
                                primary_key=True,
                                serialize=False,
                            ),
                        ),
                        ("name", models.CharField(blank=True, max_length=100)),
                        ("prefix", models.CharField(max_length=16, unique=True)),
                        ("key_sha256", models.CharField(max_length=64)),
                        (
                            "scopes",
                            django.contrib.postgres.fields.ArrayField(
                                base_field=models.CharField(
                                    choices=[
                                        ("scaiecho:enroll", "Enroll speakers (biometric capture)"),
                                        ("scaiecho:transcribe", "Transcribe audio"),
                                        ("scaiecho:diarize", "Label speakers in transcripts"),
                                        (
                                            "scaiecho:audit",
                                            "Read consent records, erasures and the audit trail",
                                        ),
                                    ],
                                    max_length=32,
                                ),
                                size=None,
                            ),
                        ),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("revoked_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "tenant",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="api_keys",
                                to="tenancy.tenant",
                            ),
                        ),
                    ],
                    options={"db_table": "enrollment_apikey"},
                ),
            ],
        ),
    ]
