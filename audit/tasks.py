"""Signed checkpoints of the audit trail, made by the orchestrator worker's beat."""

from celery import shared_task

from audit import checkpoints


@shared_task(name="audit.tasks.checkpoint_trail", acks_late=True)
def checkpoint_trail() -> int | None:
    """The new checkpoint's number, or None when none was due."""
    checkpoint = checkpoints.make_checkpoint()
    return checkpoint.counter if checkpoint else None
