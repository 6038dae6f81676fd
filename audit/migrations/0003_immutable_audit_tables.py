from django.db import migrations

from common.immutability import protect_table


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_audit_trail_and_erasures")]

    operations = [
        protect_table("audit_auditevent"),
        protect_table("audit_erasureaudit"),
        protect_table("audit_erasureconfirmation"),
    ]
