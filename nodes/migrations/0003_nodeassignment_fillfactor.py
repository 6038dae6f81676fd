from django.db import migrations

# A starting node rewrites its assignment row of every speaker it loads (its boot id): with
# room left on each page those updates are HOT (no new index entries), which more than halves
# the cost of recording a loaded gallery. Pages written before this keep their fill until the
# table is rewritten (VACUUM FULL, or pg_repack).
ASSIGNMENT_FILLFACTOR = 50


class Migration(migrations.Migration):
    dependencies = [
        ("nodes", "0002_alter_nodeassignment_state"),
    ]

    operations = [
        migrations.RunSQL(
            f"ALTER TABLE nodes_nodeassignment SET (fillfactor = {ASSIGNMENT_FILLFACTOR})",
            "ALTER TABLE nodes_nodeassignment RESET (fillfactor)",
        ),
    ]
