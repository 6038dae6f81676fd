"""Database-level immutability for compliance tables.

A row trigger refuses UPDATE and DELETE and a statement trigger refuses
TRUNCATE (row triggers never see TRUNCATE). Both are ``ENABLE ALWAYS`` so they
also fire under ``session_replication_role = replica``, which silences
ordinary triggers.
"""

from django.db import migrations

# What the migrations protect (below): the database roles' grants and the start check
# (common/database_roles.py) hold these tables to INSERT and SELECT for the service.
IMMUTABLE_TABLES = (
    "consent_consentrecord",
    "audit_auditevent",
    "audit_erasureaudit",
    "audit_erasureconfirmation",
)
REFUSE_CHANGE_FUNCTION_NAME = "scaiecho_refuse_change"

REFUSE_CHANGE_FUNCTION = """
CREATE OR REPLACE FUNCTION scaiecho_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'table % is immutable: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
"""


def protect_table(table: str) -> migrations.RunSQL:
    row_trigger = f"{table}_immutable_rows"
    truncate_trigger = f"{table}_immutable_truncate"
    return migrations.RunSQL(
        sql=f"""
        CREATE TRIGGER {row_trigger} BEFORE UPDATE OR DELETE ON {table}
            FOR EACH ROW EXECUTE FUNCTION scaiecho_refuse_change();
        CREATE TRIGGER {truncate_trigger} BEFORE TRUNCATE ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION scaiecho_refuse_change();
        ALTER TABLE {table} ENABLE ALWAYS TRIGGER {row_trigger};
        ALTER TABLE {table} ENABLE ALWAYS TRIGGER {truncate_trigger};
        """,
        reverse_sql=f"""
        DROP TRIGGER IF EXISTS {row_trigger} ON {table};
        DROP TRIGGER IF EXISTS {truncate_trigger} ON {table};
        """,
    )
