"""Celery tasks run by pyannote nodes; thin wrappers around nodes.services."""

from __future__ import annotations

import logging

from celery import Task, shared_task
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError
from redis.exceptions import RedisError

from nodes import services
from nodes.runtime import current_node

# What a dependency's outage raises (non-permanent NodeWorkErrors are the blob store's).
logger = logging.getLogger(__name__)

OUTAGES = (services.NodeWorkError, RedisError, OperationalError, InterfaceError)


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
        # Anything but a permanent NodeWorkError (an outage, a bug) is retried first.
        permanent = isinstance(exc, services.NodeWorkError) and exc.permanent
        if not permanent and self.request.retries < settings.NODE_TASK_MAX_RETRIES:
            raise self.retry(
                exc=exc, countdown=services.retry_delay_s(self.request.retries)
            ) from exc
        if not permanent and isinstance(exc, OUTAGES):
            # The blob store, Redis or PostgreSQL is still down: an outage says nothing about
            # the recording, so the work goes back to the reconciler instead of failing.
            try:
                services.defer_warm(runtime.node_id, speaker_id, str(exc))
            except DatabaseError:
                # The database is the outage: the assignment is still queued all the same.
                logger.warning("warm of %s deferred unrecorded: %s", speaker_id, exc)
            return "deferred"
        services.record_failure(runtime.node_id, speaker_id, str(exc))
        return "failed"


@shared_task(name=services.EVICT_TASK, acks_late=True, reject_on_worker_lost=True)
def evict_speaker(speaker_id: str) -> str:
    return services.evict_here(current_node(), speaker_id)


@shared_task(name="nodes.tasks.reconcile_assignments", acks_late=True)
def reconcile_assignments() -> int:
    return len(services.reconcile_assignments(settings.NODE_REQUEUE_AFTER_S))
