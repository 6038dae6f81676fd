"""Celery tasks run by pyannote nodes; thin wrappers around nodes.services."""

from __future__ import annotations

from celery import Task, shared_task
from django.conf import settings

from nodes import services
from nodes.runtime import current_node


@shared_task(
    name=services.WARM_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,
)
def warm_speaker(self: Task, speaker_id: str) -> str:
    runtime = current_node()
    try:
        return services.warm_here(runtime, speaker_id)
    except Exception as exc:
        # Anything but a NodeWorkError (a database or Redis blip, a bug) counts as transient.
        permanent = isinstance(exc, services.NodeWorkError) and exc.permanent
        if permanent or self.request.retries >= settings.NODE_TASK_MAX_RETRIES:
            services.record_failure(runtime.node_id, speaker_id, str(exc))
            return "failed"
        raise self.retry(exc=exc, countdown=services.retry_delay_s(self.request.retries)) from exc


@shared_task(name=services.EVICT_TASK, acks_late=True, reject_on_worker_lost=True)
def evict_speaker(speaker_id: str) -> str:
    return services.evict_here(current_node(), speaker_id)


@shared_task(name="nodes.tasks.reconcile_assignments", acks_late=True)
def reconcile_assignments() -> int:
    return len(services.reconcile_assignments(settings.NODE_REQUEUE_AFTER_S))
