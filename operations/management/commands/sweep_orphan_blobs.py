from typing import Any

from django.core.management.base import BaseCommand, CommandError

from common.blobs import BlobStoreError
from operations.blob_sweeper import sweep_orphan_blobs


class Command(BaseCommand):
    help = (
        "Remove, once, every blob whose write intent is older than BLOB_INTENT_GRACE_S and "
        "that no row owns (every version), and stale .partial files of the local store; "
        "print what was removed. Exits with an error when something could not be removed."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            report = sweep_orphan_blobs()
        except BlobStoreError as exc:
            raise CommandError(f"the blob store is unavailable: {exc}") from exc
        for blob in report.removed:
            self.stdout.write(
                f"removed {blob['key']} ({blob['purpose']}, {blob['versions']} versions, "
                f"{blob['bytes']} bytes)"
            )
        for key in report.owned:
            self.stdout.write(f"kept {key} (a row owns it; its intent cleared)")
        for name in report.partials_removed:
            self.stdout.write(f"removed partial write {name}")
        for blob in report.failed:
            self.stderr.write(f"could not remove {blob['key']}: {blob['error']}")
        for name in report.partials_failed:
            self.stderr.write(f"could not remove partial write {name}")
        self.stdout.write(
            f"{len(report.removed)} orphan blobs and {len(report.partials_removed)} partial "
            f"writes removed, {len(report.failed) + len(report.partials_failed)} failed"
        )
        if report.failed or report.partials_failed:
            raise CommandError("some orphans could not be removed; the next run tries again")
