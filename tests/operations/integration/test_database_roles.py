"""Two database roles: what the service's role cannot do to the immutable tables, on a real
connection as that role, and the start check that refuses a role that could."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import psycopg
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import OperationalError, connection

from audit.models import ErasureAudit
from audit.services import confirm_erasure
from common import database_roles
from common.database_roles import UnsafeDatabaseRole, check_database_role
from common.immutability import IMMUTABLE_TABLES, REFUSE_CHANGE_FUNCTION_NAME
from config.embedded import prepare_service_roles
from tests import live
from tests.factories import client_for, enrollment_form, make_key, make_tenant

SPEAKERS = "/v1/modules/scaiecho/speakers"
FUNCTION = f"{REFUSE_CHANGE_FUNCTION_NAME}()"
PRIMARY_KEYS = {
    "consent_consentrecord": "id",
    "audit_auditevent": "seq",
    "audit_erasureaudit": "id",
    "audit_erasureconfirmation": "id",
}
# What an attacker holding the service's credentials would try, table by table.
TABLE_STATEMENTS = {
    "disable_trigger": "ALTER TABLE {t} DISABLE TRIGGER {t}_immutable_rows",
    "disable_all_triggers": "ALTER TABLE {t} DISABLE TRIGGER ALL",
    "drop_trigger": "DROP TRIGGER {t}_immutable_rows ON {t}",
    "drop_truncate_trigger": "DROP TRIGGER {t}_immutable_truncate ON {t}",
    "drop_table": "DROP TABLE {t} CASCADE",
    "truncate": "TRUNCATE {t} CASCADE",
    "update": "UPDATE {t} SET {pk} = {pk}",
    "delete": "DELETE FROM {t}",
    "take_ownership": "ALTER TABLE {t} OWNER TO CURRENT_USER",
    "own_trigger": (
        f"CREATE TRIGGER forged BEFORE INSERT ON {{t}} FOR EACH ROW EXECUTE FUNCTION {FUNCTION}"
    ),
}
FUNCTION_STATEMENTS = {
    "replace_function": (
        f"CREATE OR REPLACE FUNCTION {FUNCTION} RETURNS trigger AS $$ BEGIN RETURN NEW; END; $$ "
        "LANGUAGE plpgsql"
    ),
    "drop_function": f"DROP FUNCTION {FUNCTION} CASCADE",
    "take_function": f"ALTER FUNCTION {FUNCTION} OWNER TO CURRENT_USER",
    "replica_role": "SET session_replication_role = replica",
}


def protection() -> dict[str, object]:
    """The triggers that guard the immutable tables and the function they call, as the
    superuser sees them."""
    with psycopg.connect(live.test_database_url(), autocommit=True) as admin:
        triggers = admin.execute(
            "SELECT c.relname || '.' || t.tgname, t.tgenabled, t.tgfoid::regprocedure::text "
            "FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE t.tgname LIKE '%%_immutable_%%' ORDER BY 1"
        ).fetchall()
        function = admin.execute(
            "SELECT md5(prosrc), proowner::regrole::text FROM pg_proc WHERE proname = %s",
            [REFUSE_CHANGE_FUNCTION_NAME],
        ).fetchone()
        tables = admin.execute(
            "SELECT relname, relowner::regrole::text FROM pg_class WHERE relname = ANY(%s)",
            [list(IMMUTABLE_TABLES)],
        ).fetchall()
    return {"triggers": triggers, "function": function, "tables": sorted(tables)}


def test_the_migrations_protect_exactly_the_listed_tables(db):
    """The role grants and the start check read IMMUTABLE_TABLES; a table protected by a
    later migration must be listed there too."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, t.tgname, t.tgenabled FROM pg_trigger t "
            "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_proc p ON p.oid = t.tgfoid "
            "WHERE p.proname = %s ORDER BY 1, 2",
            [REFUSE_CHANGE_FUNCTION_NAME],
        )
        triggers = cursor.fetchall()
    assert {table for table, _, _ in triggers} == set(IMMUTABLE_TABLES)
    assert triggers == [
        (table, f"{table}_immutable_{kind}", "A")
        for table in sorted(IMMUTABLE_TABLES)
        for kind in ("rows", "truncate")
    ]


@pytest.mark.parametrize("table", IMMUTABLE_TABLES)
@pytest.mark.parametrize("statement", TABLE_STATEMENTS.values(), ids=TABLE_STATEMENTS.keys())
def test_the_service_role_cannot_lift_the_protection(application_role, table, statement):
    before = protection()
    sql = statement.format(t=table, pk=PRIMARY_KEYS[table])
    with (
        application_role.connect() as service,
        pytest.raises(psycopg.errors.InsufficientPrivilege) as refusal,
    ):
        service.execute(sql)
    # Refused by the privilege system itself, before any trigger had to.
    assert "must be owner" in str(refusal.value) or "permission denied" in str(refusal.value)
    assert "immutable" not in str(refusal.value)
    assert protection() == before


@pytest.mark.parametrize("statement", FUNCTION_STATEMENTS.values(), ids=FUNCTION_STATEMENTS.keys())
def test_the_service_role_cannot_replace_the_trigger_function(application_role, statement):
    before = protection()
    with (
        application_role.connect() as service,
        pytest.raises(psycopg.errors.InsufficientPrivilege) as refusal,
    ):
        service.execute(statement)
    assert "must be owner" in str(refusal.value) or "permission denied" in str(refusal.value)
    assert protection() == before


def test_the_function_stays_the_owners_where_the_schema_lets_everyone_create(application_role):
    """PostgreSQL before 15 lets every role create in ``public``: replacing the function still
    needs its ownership."""
    with psycopg.connect(live.test_database_url(), autocommit=True) as admin:
        admin.execute(f"GRANT CREATE ON SCHEMA public TO {application_role.name}")
        try:
            with (
                application_role.connect() as service,
                pytest.raises(psycopg.errors.InsufficientPrivilege, match="must be owner"),
            ):
                service.execute(FUNCTION_STATEMENTS["replace_function"])
        finally:
            admin.execute(f"REVOKE CREATE ON SCHEMA public FROM {application_role.name}")


def test_the_owner_can_do_what_the_service_role_cannot(db):
    """The statements above are refused for want of ownership, not for a mistake in them."""
    with connection.cursor() as cursor:
        for table in IMMUTABLE_TABLES:
            for name, statement in TABLE_STATEMENTS.items():
                if name in {"drop_table", "truncate", "update", "delete"}:
                    continue  # the triggers (or the data) answer those, tested elsewhere
                cursor.execute("SAVEPOINT attempt")
                cursor.execute(statement.format(t=table, pk=PRIMARY_KEYS[table]))
                cursor.execute("ROLLBACK TO SAVEPOINT attempt")
        for statement in FUNCTION_STATEMENTS.values():
            cursor.execute("SAVEPOINT attempt")
            cursor.execute(statement)
            cursor.execute("ROLLBACK TO SAVEPOINT attempt")


@pytest.fixture
def immutable_rows(live_db, loaded_models):
    """A row in each immutable table, committed: two speakers enrolled, one of them erased
    and its eviction confirmed. Returns the speaker that was not erased."""
    api = client_for(make_key(make_tenant())[1])
    kept, erased = (
        api.post(SPEAKERS, enrollment_form(), format="multipart").json()["data"]["id"]
        for _ in range(2)
    )
    assert api.delete(f"{SPEAKERS}/{erased}").status_code == 200
    confirm_erasure(ErasureAudit.objects.get(speaker_id=erased), node_id="n", outcome="evicted")
    return kept


def copy_row(service: psycopg.Connection, table: str, overrides: dict[str, str]) -> object:
    """INSERTs a copy of one of ``table``'s rows, ``overrides`` (SQL) replacing some columns;
    the primary key, unless overridden, comes from the table's own default."""
    columns = [
        row[0]
        for row in service.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
            "ORDER BY ordinal_position",
            [table],
        )
        if row[0] != PRIMARY_KEYS[table] or row[0] in overrides
    ]
    values = ", ".join(overrides.get(c, f'"{c}"') for c in columns)
    names = ", ".join(f'"{c}"' for c in columns)
    row = service.execute(
        f"INSERT INTO {table} ({names}) SELECT {values} FROM {table} LIMIT 1 "
        f"RETURNING {PRIMARY_KEYS[table]}"
    ).fetchone()
    assert row is not None
    return row[0]


def test_the_service_role_inserts_into_and_reads_the_immutable_tables(
    application_role, immutable_rows
):
    overrides = {
        "consent_consentrecord": {"id": "gen_random_uuid()"},
        "audit_auditevent": {"hash": "md5(random()::text) || md5(random()::text)"},
        "audit_erasureaudit": {"id": "gen_random_uuid()", "speaker_id": f"'{immutable_rows}'"},
        "audit_erasureconfirmation": {},
    }
    with application_role.connect() as service:
        for table in IMMUTABLE_TABLES:
            (before,) = service.execute(f"SELECT count(*) FROM {table}").fetchone()
            key = copy_row(service, table, overrides[table])
            found = service.execute(
                f"SELECT count(*) FROM {table} WHERE {PRIMARY_KEYS[table]} = %s", [key]
            ).fetchone()
            assert found == (1,)
            assert service.execute(f"SELECT count(*) FROM {table}").fetchone() == (before + 1,)


def test_the_service_role_keeps_ordinary_dml_and_only_reads_the_migration_record(
    application_role,
):
    with application_role.connect() as service:
        service.execute("UPDATE enrollment_speaker SET description = description")
        service.execute("DELETE FROM django_session WHERE expire_date < now()")
        assert service.execute("SELECT count(*) FROM django_migrations").fetchone()[0] > 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            service.execute(
                "INSERT INTO django_migrations (app, name, applied) VALUES ('x', 'y', now())"
            )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            service.execute("DELETE FROM django_migrations")


def test_the_service_role_may_destroy_and_rewrap_data_keys(application_role):
    """Erasure deletes a speaker's data key and rotation re-wraps it: an ordinary table."""
    with application_role.connect() as service:
        service.execute("DELETE FROM data_keys_datakey WHERE speaker_id = gen_random_uuid()")
        service.execute(
            "UPDATE data_keys_datakey SET wrapping_key_id = wrapping_key_id "
            "WHERE speaker_id = gen_random_uuid()"
        )


def service_privileges(role: str) -> dict[str, list[bool]]:
    """SELECT, INSERT, UPDATE, DELETE of ``role`` on a few tables."""
    tables = [
        "consent_consentrecord",
        "audit_auditevent",
        "enrollment_speaker",
        "django_migrations",
    ]
    with psycopg.connect(live.test_database_url(), autocommit=True) as admin:
        return {
            table: [
                admin.execute(
                    "SELECT has_table_privilege(%s, %s, %s)", [role, table, p]
                ).fetchone()[0]
                for p in ("SELECT", "INSERT", "UPDATE", "DELETE")
            ]
            for table in tables
        }


@pytest.mark.live
def test_migrate_runs_as_the_owner_and_grants_the_service_role(application_role):
    """`manage.py migrate` with DATABASE_OWNER_URL (here the suite's superuser) on a database
    whose service role holds nothing yet: it migrates as the owner (as the service role, even
    reading the content types would fail) and grants the service role its privileges."""
    with psycopg.connect(live.test_database_url(), autocommit=True) as admin:
        admin.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {application_role.name}")
    nothing = {table: [False] * 4 for table in service_privileges(application_role.name)}
    assert service_privileges(application_role.name) == nothing
    env = {
        **os.environ,
        "DATABASE_URL": application_role.url(),
        "DATABASE_OWNER_URL": live.test_database_url(),
    }

    def migrate(*options: str) -> None:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--no-input", *options],
            cwd=live.ROOT,
            env=env,
            check=True,
            capture_output=True,
        )

    migrate("--plan")  # looks, changes nothing
    assert service_privileges(application_role.name) == nothing
    migrate()
    assert service_privileges(application_role.name) == {
        "consent_consentrecord": [True, True, False, False],
        "audit_auditevent": [True, True, False, False],
        "enrollment_speaker": [True, True, True, True],
        "django_migrations": [True, False, False, False],
    }


# --- The start check --------------------------------------------------------------------------


def act_as(role: str, *setup: str) -> None:
    """Runs ``setup`` as the superuser, then the rest of the test's transaction as ``role``
    (a plain identifier: the test database's name and a suffix)."""
    with connection.cursor() as cursor:
        for statement in setup:
            cursor.execute(statement.format(role=role))
        cursor.execute(f"SET LOCAL ROLE {role}")


def test_the_service_role_passes_the_check(db, application_role, settings, caplog):
    settings.DATABASE_ROLE_CHECK = "refuse"
    act_as(application_role.name)
    with caplog.at_level(logging.INFO, logger="common.database_roles"):
        check_database_role("api")
    assert f"api connects as database role {application_role.name}, which cannot" in caplog.text


UNSAFE_ROLES = {
    "owns_a_table": (
        ["ALTER TABLE audit_auditevent OWNER TO {role}"],
        "owns table audit_auditevent",
    ),
    "acts_as_the_owner": (
        [
            "CREATE ROLE {role}_owner",
            "GRANT {role}_owner TO {role}",
            "ALTER TABLE consent_consentrecord OWNER TO {role}_owner",
        ],
        "_owner, owner of table consent_consentrecord",
    ),
    "owns_the_function": (
        [f"ALTER FUNCTION {FUNCTION} OWNER TO {{role}}"],
        f"owns function {FUNCTION}",
    ),
    "owns_the_schema": (
        ["ALTER SCHEMA public OWNER TO {role}"],
        "owns schema public, so may drop table audit_erasureaudit",
    ),
    "holds_truncate": (
        ["GRANT TRUNCATE ON audit_erasureconfirmation TO {role}"],
        "holds TRUNCATE on table audit_erasureconfirmation",
    ),
    "holds_column_update": (
        ["GRANT UPDATE (consent_text_ciphertext) ON consent_consentrecord TO {role}"],
        "holds UPDATE on table consent_consentrecord",
    ),
    "creates_roles": (["ALTER ROLE {role} CREATEROLE"], "(CREATEROLE)"),
}


@pytest.mark.parametrize(("setup", "finding"), UNSAFE_ROLES.values(), ids=UNSAFE_ROLES.keys())
def test_a_role_that_could_alter_the_immutable_tables_is_refused(
    db, application_role, settings, setup, finding
):
    settings.DATABASE_ROLE_CHECK = "refuse"
    act_as(application_role.name, *setup)
    with pytest.raises(UnsafeDatabaseRole) as refusal:
        check_database_role("api")
    message = str(refusal.value)
    assert f"api connects as database role {application_role.name}, which " in message
    assert finding in message
    assert "api refuses to start" in message and "DATABASE_OWNER_URL" in message


def test_a_superuser_is_refused(db, settings):
    """What the suite itself connects as (CI's postgres, the embedded server's)."""
    settings.DATABASE_ROLE_CHECK = "refuse"
    with pytest.raises(UnsafeDatabaseRole, match="which is a superuser: it could lift"):
        check_database_role("worker w1")


def test_with_warn_an_owning_role_only_warns(db, application_role, settings, caplog):
    settings.DATABASE_ROLE_CHECK = "warn"
    act_as(application_role.name, "ALTER TABLE consent_consentrecord OWNER TO {role}")
    with caplog.at_level(logging.WARNING, logger="common.database_roles"):
        check_database_role("api")
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "owns table consent_consentrecord" in warning.getMessage()
    assert warning.getMessage().endswith("starting anyway (DATABASE_ROLE_CHECK=warn)")


def test_a_check_that_cannot_run_refuses(db, settings, monkeypatch):
    def unreachable(connection):
        raise OperationalError("connection refused")

    settings.DATABASE_ROLE_CHECK = "refuse"
    monkeypatch.setattr(database_roles, "inspect_role", unreachable)
    with pytest.raises(UnsafeDatabaseRole) as refusal:
        check_database_role("api")
    assert str(refusal.value) == (
        "api could not check its database role (connection refused). api refuses to start "
        "until it can; set DATABASE_ROLE_CHECK=warn to start anyway."
    )


def test_an_unknown_check_mode_is_a_configuration_error(db, settings):
    settings.DATABASE_ROLE_CHECK = "ignore"
    with pytest.raises(ImproperlyConfigured, match="'refuse' or 'warn', not 'ignore'"):
        check_database_role("api")


# --- The embedded server's roles --------------------------------------------------------------


def test_the_embedded_launcher_hands_a_superusers_schema_to_the_owner(db, application_role):
    """A data directory migrated before the roles existed: its tables, their identity
    sequences and the trigger function belong to the superuser until the launcher hands them
    over; again, it changes nothing."""
    owner = f"{application_role.name}_owner"
    with connection.cursor() as cursor:
        for _ in range(2):
            prepare_service_roles(cursor, owner, application_role.name)
        cursor.execute(
            "SELECT DISTINCT relowner::regrole::text FROM pg_class "
            "WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'S')"
        )
        assert cursor.fetchall() == [(owner,)]
        cursor.execute(
            "SELECT proowner::regrole::text FROM pg_proc WHERE proname = %s",
            [REFUSE_CHANGE_FUNCTION_NAME],
        )
        assert cursor.fetchall() == [(owner,)]
        cursor.execute("SELECT has_schema_privilege(%s, 'public', 'CREATE')", [owner])
        assert cursor.fetchone() == (True,)
