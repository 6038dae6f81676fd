from django.db import migrations

from common.immutability import REFUSE_CHANGE_FUNCTION


class Migration(migrations.Migration):
    dependencies: list[tuple[str, str]] = []

    operations = [
        migrations.RunSQL(
            sql=REFUSE_CHANGE_FUNCTION,
            reverse_sql="DROP FUNCTION IF EXISTS scaiecho_refuse_change();",
        ),
    ]
