from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from common.errors import ServiceError
from operations.services import create_api_key
from tenancy.models import ALL_SCOPES, Tenant


class Command(BaseCommand):
    help = "Create an API key for a tenant and print the key alone on stdout (shown only once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("tenant_slug")
        parser.add_argument(
            "--scopes",
            default=",".join(ALL_SCOPES),
            help=f"comma-separated, from: {', '.join(ALL_SCOPES)} (default: all)",
        )
        parser.add_argument("--name", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=options["tenant_slug"]).first()
        if tenant is None:
            raise CommandError(
                f"no tenant '{options['tenant_slug']}'; create it with create_tenant"
            )
        scopes = [s.strip() for s in options["scopes"].split(",") if s.strip()]
        try:
            _, raw_key = create_api_key(tenant, scopes, options["name"])
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(raw_key)
