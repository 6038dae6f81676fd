"""Re-wraps every data key under the current key-encryption key (README, "Data keys").

Rotation: set the new key as DATA_KEY_ENCRYPTION_KEY, move the old one to
DATA_KEY_ENCRYPTION_KEYS_RETIRED, restart, run this; once it reports no key left under the old
one, drop it from DATA_KEY_ENCRYPTION_KEYS_RETIRED.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from data_keys.services import REWRAP_BATCH_SIZE, rewrap_data_keys


class Command(BaseCommand):
    help = "Re-wrap every speaker's data key under the current DATA_KEY_ENCRYPTION_KEY."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--batch-size",
            type=int,
            default=REWRAP_BATCH_SIZE,
            help="data keys re-wrapped per transaction",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] < 1:
            raise CommandError("--batch-size is at least 1.")
        try:
            report = rewrap_data_keys(
                options["batch_size"],
                on_batch=lambda n: self.stdout.write(f"re-wrapped a batch of {n}"),
            )
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"current key-encryption key {report.current_key_id}: "
            f"{report.rewrapped} data keys re-wrapped, "
            f"{report.already_current} already under it"
        )
        if report.unreadable:
            listing = ", ".join(f"{n} under {k}" for k, n in sorted(report.unreadable.items()))
            raise CommandError(
                f"{sum(report.unreadable.values())} data keys could not be unwrapped ({listing}): "
                "add their key-encryption key to DATA_KEY_ENCRYPTION_KEYS_RETIRED and run again."
            )
