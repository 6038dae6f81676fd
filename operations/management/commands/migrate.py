"""``migrate`` as the role that owns the schema (``DATABASE_OWNER_URL``) when there is one.

Tables belong to whoever creates them: run as the service's own role, a migration would hand
it the immutable tables (README, "Database roles"). The default connection itself switches to
the owner's credentials for the run, so that every migration's own queries, also those that
name no database, run as the owner; the grants to the service's role follow.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.commands import migrate
from django.db import DEFAULT_DB_ALIAS, connections

from common.database_roles import grant_application_privileges

OWNER_CONNECTION = ("USER", "PASSWORD", "HOST", "PORT")


class Command(migrate.Command):
    def handle(self, *args: Any, **options: Any) -> None:
        owner = settings.DATABASE_OWNER
        if owner is None or options["database"] != DEFAULT_DB_ALIAS:
            super().handle(*args, **options)
            return
        connection = connections[DEFAULT_DB_ALIAS]
        service = connection.settings_dict
        connection.close()
        # The database stays the service's: also a test database the test runner named.
        connection.settings_dict = {**service, **{k: owner[k] for k in OWNER_CONNECTION}}
        try:
            super().handle(*args, **options)
            migrated = not (options["plan"] or options["check_unapplied"])
            if migrated and service["USER"] != owner["USER"]:
                grant_application_privileges(connection, service["USER"])
        finally:
            # The owner's connection is not kept by a process that goes on (run_service).
            connection.close()
            connection.settings_dict = service
