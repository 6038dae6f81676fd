"""Two database roles (README, "Database roles").

The owner runs the migrations and owns every table and trigger function; the service connects
as the application role, which may only INSERT into and SELECT from the immutable tables
(``common/immutability.py``), so that its credentials cannot lift their protection:
ALTER, DISABLE TRIGGER, DROP and CREATE OR REPLACE FUNCTION need ownership, TRUNCATE, UPDATE
and DELETE a privilege it does not hold. :func:`grant_application_privileges` gives the
application role its privileges after each migration; :func:`check_database_role` is what
every long-running process asks before it starts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from common.immutability import IMMUTABLE_TABLES, REFUSE_CHANGE_FUNCTION_NAME

logger = logging.getLogger(__name__)

ROLE_CHECK_MODES = ("refuse", "warn")
# On an immutable table these would let a role change rows, empty the table, or hang a
# trigger of its own on it.
CHANGING_PRIVILEGES = ("UPDATE", "DELETE", "TRUNCATE", "TRIGGER")

# The tables the migrations protect, and any other that a trigger of the refusing function
# guards; a protected table that lost its triggers still counts (it is listed by name).
_PROTECTED_TABLES = """
    SELECT c.oid FROM pg_class c
    WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')
    AND (c.relname = ANY(%(tables)s) OR EXISTS (
        SELECT 1 FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
        WHERE t.tgrelid = c.oid AND p.proname = %(function)s
    ))
"""
_TABLES = f"""
    SELECT c.oid::regclass::text, c.oid IN ({_PROTECTED_TABLES})
    FROM pg_class c
    WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')
    ORDER BY 1
"""
_ROLE = "SELECT current_user, rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user"
# pg_has_role(..., 'MEMBER'): the role is the owner, or may act as it through membership.
_PROTECTED_OBJECTS = f"""
    SELECT 'table ' || c.oid::regclass::text, pg_get_userbyid(c.relowner),
           pg_has_role(c.relowner, 'MEMBER'), n.nspname, pg_has_role(n.nspowner, 'MEMBER'),
           ARRAY[has_any_column_privilege(c.oid, 'UPDATE'), has_table_privilege(c.oid, 'DELETE'),
                 has_table_privilege(c.oid, 'TRUNCATE'), has_table_privilege(c.oid, 'TRIGGER')]
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid IN ({_PROTECTED_TABLES})
    UNION ALL
    SELECT 'function ' || p.oid::regprocedure::text, pg_get_userbyid(p.proowner),
           pg_has_role(p.proowner, 'MEMBER'), n.nspname, pg_has_role(n.nspowner, 'MEMBER'),
           ARRAY[]::boolean[]
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE p.oid IN (
        SELECT t.tgfoid FROM pg_trigger t
        WHERE t.tgrelid IN ({_PROTECTED_TABLES}) AND NOT t.tgisinternal
    ) OR (p.proname = %(function)s AND n.nspname = current_schema())
    ORDER BY 1
"""


def _catalog_parameters() -> dict[str, Any]:
    return {"tables": list(IMMUTABLE_TABLES), "function": REFUSE_CHANGE_FUNCTION_NAME}


class UnsafeDatabaseRole(Exception):
    """The service's database role could lift the protection of the immutable tables."""


@dataclass(frozen=True)
class RoleReport:
    role: str
    # What the role could do to the immutable tables' protection; empty when nothing.
    findings: list[str]


def inspect_role(connection: BaseDatabaseWrapper) -> RoleReport:
    """What the role ``connection`` is connected as could do to the immutable tables."""
    parameters = _catalog_parameters()
    with connection.cursor() as cursor:
        cursor.execute(_ROLE)
        role, superuser, create_role = cursor.fetchone()
        if superuser:
            return RoleReport(role, ["is a superuser"])
        findings = ["may create roles and grant itself others' (CREATEROLE)"] if create_role else []
        cursor.execute(_PROTECTED_OBJECTS, parameters)
        for name, owner, acts_as_owner, schema, acts_as_schema_owner, held in cursor.fetchall():
            if acts_as_owner:
                findings.append(
                    f"owns {name}" if owner == role else f"acts as {owner}, owner of {name}"
                )
            if acts_as_schema_owner:
                findings.append(f"owns schema {schema}, so may drop {name}")
            privileges = [p for p, has in zip(CHANGING_PRIVILEGES, held, strict=False) if has]
            if privileges and not acts_as_owner:
                findings.append(f"holds {', '.join(privileges)} on {name}")
    return RoleReport(role, findings)


def check_database_role(process: str) -> None:
    """Raises :class:`UnsafeDatabaseRole` when the role ``process`` connects as could lift the
    immutable tables' protection, or cannot be checked; with ``DATABASE_ROLE_CHECK=warn`` it
    logs that instead."""
    mode = settings.DATABASE_ROLE_CHECK
    if mode not in ROLE_CHECK_MODES:
        raise ImproperlyConfigured(f"DATABASE_ROLE_CHECK is 'refuse' or 'warn', not {mode!r}.")
    try:
        report = inspect_role(connections[DEFAULT_DB_ALIAS])
    except DatabaseError as exc:
        problem = f"{process} could not check its database role ({str(exc).strip()})"
        remedy = "refuses to start until it can; set DATABASE_ROLE_CHECK=warn to start anyway"
    else:
        if not report.findings:
            logger.info(
                "%s connects as database role %s, which cannot alter the immutable tables",
                process,
                report.role,
            )
            return
        problem = (
            f"{process} connects as database role {report.role}, which "
            f"{'; '.join(report.findings)}: it could lift the protection of the consent records "
            "and the audit trail"
        )
        remedy = (
            "refuses to start: connect as a role that owns none of the immutable tables, with "
            'DATABASE_OWNER_URL naming the role that migrates (README, "Database roles"), or '
            "set DATABASE_ROLE_CHECK=warn to start anyway"
        )
    if mode == "warn":
        logger.warning("%s; starting anyway (DATABASE_ROLE_CHECK=warn)", problem)
        return
    raise UnsafeDatabaseRole(f"{problem}. {process} {remedy}.")


def grant_application_privileges(connection: BaseDatabaseWrapper, role: str) -> None:
    """Gives ``role`` what the service needs on every table of the schema and nothing more:
    INSERT and SELECT on the immutable tables, SELECT on the migration record, ordinary DML
    on the others.

    Run as the owner after each migration rather than through default privileges: those
    cannot tell an immutable table from another when it is created, and a migration cannot
    name the application role (it is deployment configuration). Each table is granted
    afresh, so tables that later migrations add follow, and anything an earlier setup granted
    beyond this is taken back, in one transaction.
    """
    grantee = connection.ops.quote_name(role)
    parameters = _catalog_parameters()
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        cursor.execute(_TABLES, parameters)
        for table, immutable in cursor.fetchall():
            if immutable:
                privileges = "SELECT, INSERT"
            elif table == "django_migrations":
                privileges = "SELECT"
            else:
                privileges = "SELECT, INSERT, UPDATE, DELETE"
            cursor.execute(f"REVOKE ALL ON {table} FROM {grantee}")
            cursor.execute(f"GRANT {privileges} ON {table} TO {grantee}")
