from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from common.errors import ServiceError
from console.models import ConsoleRole
from console.services import create_console_user
from tenancy.models import Tenant


class Command(BaseCommand):
    help = "Creates a web console user for a tenant, as admin or auditor."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("tenant", help="the tenant's slug")
        parser.add_argument("username")
        parser.add_argument("--role", choices=ConsoleRole.values, required=True)
        parser.add_argument("--password", help="generated and printed when left out")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"No tenant {options['tenant']!r}.")
        try:
            _, password = create_console_user(
                tenant, options["username"], options["role"], options["password"]
            )
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(
            f"Created {options['role']} {options['username']!r} for tenant {tenant.slug}."
        )
        if not options["password"]:
            self.stdout.write(f"Password (shown only now): {password}")
