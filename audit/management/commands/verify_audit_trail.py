from typing import Any

from django.core.management.base import BaseCommand

from audit.services import verify_chain


class Command(BaseCommand):
    help = "Walk the audit trail's hash chain; exit 1 naming the first broken event."

    def handle(self, *args: Any, **options: Any) -> None:
        verdict = verify_chain()
        if verdict.intact:
            self.stdout.write(f"audit trail intact: {verdict.events_checked} events verified")
            return
        self.stderr.write(
            f"audit trail BROKEN at event #{verdict.first_broken_seq}: {verdict.problem} "
            f"({verdict.events_checked} events read)"
        )
        raise SystemExit(1)
