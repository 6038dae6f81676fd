from django.db import migrations

from common.immutability import protect_table


class Migration(migrations.Migration):
    dependencies = [
        ("consent", "0001_initial"),
        ("audit", "0001_refuse_change_function"),
    ]

    operations = [protect_table("consent_consentrecord")]
