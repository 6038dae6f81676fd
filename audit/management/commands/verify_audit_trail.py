from typing import Any

from django.core.management.base import BaseCommand, CommandError

from audit.checkpoints import CheckpointsUnavailable
from audit.services import ANCHOR_OVERDUE, verify_chain


class Command(BaseCommand):
    help = (
        "Walk the audit trail's hash chain and check it against the newest signed checkpoints; "
        "exit 1 naming what does not hold."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            verdict = verify_chain()
        except CheckpointsUnavailable as exc:
            raise CommandError(exc.message, returncode=2) from exc
        if verdict.intact:
            checkpoint = verdict.checkpoint
            anchor = (
                f"the newest checkpoint, #{checkpoint.counter}, signed event #{checkpoint.seq} "
                f"at {checkpoint.made_at.isoformat()}"
                if checkpoint
                else "no signed checkpoint yet"
            )
            self.stdout.write(
                f"audit trail intact: {verdict.events_checked} events verified; {anchor}"
            )
            if verdict.anchor == ANCHOR_OVERDUE:
                self.stderr.write(
                    "warning: events older than the checkpoint interval allows are under no "
                    "signed checkpoint (is the orchestrator's beat running? were checkpoints "
                    "removed from the blob store?)"
                )
            return
        self.stderr.write(
            f"audit trail BROKEN: {verdict.problem}; {verdict.detail} "
            f"({verdict.events_checked} events read)"
        )
        raise SystemExit(1)
