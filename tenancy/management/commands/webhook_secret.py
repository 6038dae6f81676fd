from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from tenancy.models import Tenant
from tenancy.services import webhook_secret


class Command(BaseCommand):
    help = "Prints the secret that signs a tenant's webhook deliveries (--rotate makes a new one)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("tenant", help="the tenant's slug")
        parser.add_argument("--rotate", action="store_true", help="replace the secret")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"No tenant {options['tenant']!r}.")
        self.stdout.write(webhook_secret(tenant, rotate=options["rotate"]))
