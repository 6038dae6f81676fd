# Tenant and ApiKey moved to the tenancy app; their tables stay (state only). Every other
# app's references moved first (the dependencies), so no state points at the deleted models.

import django.db.models.deletion
from django.db import migrations, models


def move_content_types(apps, schema_editor):
    # Admin log entries and permissions point at content types: keep theirs, renamed.
    content_type = apps.get_model("contenttypes", "ContentType")
    content_type.objects.filter(app_label="enrollment", model__in=["tenant", "apikey"]).update(
        app_label="tenancy"
    )


class Migration(migrations.Migration):
    dependencies = [
        ("enrollment", "0003_tenant_identification_threshold_and_more"),
        ("tenancy", "0001_initial"),
        ("consent", "0003_tenancy_models"),
        ("audit", "0004_tenancy_models"),
        ("console", "0002_tenancy_models"),
        ("diarization", "0002_tenancy_models"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.AlterField(
                    model_name="speaker",
                    name="created_by_key",
                    field=models.ForeignKey(
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="speakers_enrolled",
                        to="tenancy.apikey",
                    ),
                ),
                migrations.AlterField(
                    model_name="speaker",
                    name="tenant",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="speakers",
                        to="tenancy.tenant",
                    ),
                ),
                migrations.DeleteModel(name="ApiKey"),
                migrations.DeleteModel(name="Tenant"),
            ],
        ),
        migrations.RunPython(move_content_types, migrations.RunPython.noop),
    ]
