"""Periodic operator work, run by the orchestrator worker's beat."""

from celery import shared_task

from operations import blob_sweeper


@shared_task(name="operations.tasks.sweep_orphan_blobs", acks_late=True)
def sweep_orphan_blobs() -> int:
    """How many orphan blobs this run removed."""
    return len(blob_sweeper.sweep_orphan_blobs().removed)
