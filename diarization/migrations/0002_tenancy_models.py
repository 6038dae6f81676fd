# Tenant and ApiKey now live in the tenancy app (same tables): state only.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("diarization", "0001_initial"),
        ("tenancy", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.AlterField(
                    model_name="diarizationjob",
                    name="created_by_key",
                    field=models.ForeignKey(
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="diarization_jobs",
                        to="tenancy.apikey",
                    ),
                ),
                migrations.AlterField(
                    model_name="diarizationjob",
                    name="tenant",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="diarization_jobs",
                        to="tenancy.tenant",
                    ),
                ),
            ],
        ),
    ]
