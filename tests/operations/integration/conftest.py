from __future__ import annotations

import secrets
from dataclasses import dataclass
from urllib.parse import quote

import psycopg
import pytest


@dataclass(frozen=True)
class Role:
    name: str
    password: str

    def url(self) -> str:
        """The test database, as this role."""
        from django.db import connection

        conf = connection.settings_dict
        host = conf["HOST"] or ""
        credentials = f"{quote(self.name)}:{quote(self.password)}"
        if host.startswith("/"):
            return f"postgresql://{credentials}@/{conf['NAME']}?host={quote(host)}"
        port = f":{conf['PORT']}" if conf["PORT"] else ""
        return f"postgresql://{credentials}@{host}{port}/{conf['NAME']}"

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.url(), autocommit=True)


@pytest.fixture
def application_role(application_role_made, django_db_blocker):
    """The role with the service's grants as the owner's ``migrate`` gives them now: granted
    afresh for each test, since a migration test earlier in the session may have dropped and
    recreated tables (and their grants with them)."""
    from django.db import connection

    from common.database_roles import grant_application_privileges

    with django_db_blocker.unblock():
        grant_application_privileges(connection, application_role_made.name)
    return application_role_made


@pytest.fixture(scope="session")
def application_role_made(live_test_database, django_db_blocker):
    """A real second role in the test database. The suite connects as the server's superuser
    (CI's ``postgres``), so the role is made here, idempotently, named after the test database
    (roles are shared by every database of the server), and dropped at the end."""
    from django.db import connection

    # Lower case: the tests name it unquoted, which PostgreSQL folds to lower case.
    role = Role(f"{connection.settings_dict['NAME']}_app".lower(), secrets.token_hex(16))
    name = connection.ops.quote_name(role.name)
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role.name])
        if cursor.fetchone() is None:
            cursor.execute(f"CREATE ROLE {name}")
        # A hex password needs no quoting; without the server's trust it is what logs in.
        cursor.execute(
            f"ALTER ROLE {name} LOGIN NOSUPERUSER NOCREATEROLE PASSWORD '{role.password}'"
        )
    yield role
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(f"DROP OWNED BY {name}")
        cursor.execute(f"DROP ROLE {name}")


@pytest.fixture
def consent_then(monkeypatch):
    """Runs a fault right after the consent record's INSERT, inside the enrollment's
    transaction (the speaker row is already written by then)."""
    from enrollment import services

    def arm(fault):
        original = services.record_consent

        def record_consent_then_fault(**kwargs):
            record = original(**kwargs)
            fault()
            return record

        monkeypatch.setattr(services, "record_consent", record_consent_then_fault)

    return arm


@pytest.fixture
def at_enrollment_commit(consent_then, monkeypatch):
    """Runs faults around the COMMIT of the enrollment's transaction: ``before`` as it is about
    to go out, ``after`` once the server has committed. Other commits are left alone."""
    from django.db import connections

    database = connections["default"]
    original_commit = database._commit
    armed = []
    consent_then(lambda: armed.append(True))

    def arm(before=None, after=None):
        def commit():
            if not armed:
                return original_commit()
            armed.clear()
            if before is not None:
                before(database)
            done = original_commit()
            if after is not None:
                after(database)
            return done

        monkeypatch.setattr(database, "_commit", commit)

    return arm
