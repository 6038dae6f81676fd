# Tenant and ApiKey now live in the tenancy app (same tables): state only.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("consent", "0002_consent_record_immutable"),
        ("tenancy", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.AlterField(
                    model_name="consentrecord",
                    name="api_key",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="consent_records",
                        to="tenancy.apikey",
                    ),
                ),
                migrations.AlterField(
                    model_name="consentrecord",
                    name="tenant",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="consent_records",
                        to="tenancy.tenant",
                    ),
                ),
            ],
        ),
    ]
