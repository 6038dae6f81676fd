# Tenant and ApiKey now live in the tenancy app (same tables): state only.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("console", "0001_initial"),
        ("tenancy", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.AlterField(
                    model_name="consolemembership",
                    name="api_key",
                    field=models.OneToOneField(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="console_member",
                        to="tenancy.apikey",
                    ),
                ),
                migrations.AlterField(
                    model_name="consolemembership",
                    name="tenant",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="console_members",
                        to="tenancy.tenant",
                    ),
                ),
            ],
        ),
    ]
