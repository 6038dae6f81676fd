#!/usr/bin/env python
import os
import sys

# Commands that never touch PostgreSQL or Redis: they run without the embedded servers.
NO_SERVERS = {"help", "version", "check", "diffsettings", "collectstatic", "spectacular"}


def needs_servers(argv: list[str]) -> bool:
    command = argv[1] if len(argv) > 1 else "help"
    return command not in NO_SERVERS and not {"-h", "--help", "--version"} & set(argv)


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.core.management import execute_from_command_line

    if not needs_servers(sys.argv):
        execute_from_command_line(sys.argv)
        return
    from config import embedded

    # Starts the embedded servers that DATABASE_URL / REDIS_URL do not replace; children
    # (run_service's workers and nodes) inherit the URLs and reuse them. An embedded PostgreSQL
    # gets two roles: `migrate` runs as the owner (DATABASE_OWNER_URL), everything else as the
    # application role (DATABASE_URL), as a deployment with both URLs does.
    with embedded.running(service_roles=True):
        execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
