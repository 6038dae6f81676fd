from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from tenancy.services import create_tenant


class Command(BaseCommand):
    help = "Create a tenant (idempotent) and print its slug."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--name", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = create_tenant(options["slug"], options["name"])
        self.stdout.write(tenant.slug)
