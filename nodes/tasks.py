"""Celery tasks of the nodes; thin wrappers around nodes.services."""

from __future__ import annotations

import logging

from celery import Task, shared_task
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError
from redis.exceptions import RedisError

from nodes.runtime import current_node
from nodes.services import node_work, orchestrator

# What a dependency's outage raises (non-permanent NodeWorkErrors are the blob store's).
logger = logging.getLogger(__name__)

OUTAGES = (node_work.NodeWorkError, RedisError, OperationalError, InterfaceError)


@shared_task(
    name=orchestrator.WARM_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,
)
def warm_speaker(self: Task, speaker_id: str) -> str:
    runtime = current_node()
    try:
        return node_work.warm_here(runtime, speaker_id)
    except Exception as exc:
        # Anything but a permanent NodeWorkError (an outage, a bug) is retried first.
        permanent = isinstance(exc, node_work.NodeWorkError) and exc.permanent
        if not permanent and self.request.retries < settings.NODE_TASK_MAX_RETRIES:
            raise self.retry(
                exc=exc, countdown=node_work.retry_delay_s(self.request.retries)
            ) from exc
        if not permanent and isinstance(exc, OUTAGES):
            # The blob store, Redis or PostgreSQL is still down: an outage says nothing about
            # the recording, so the work goes back to the reconciler instead of failing.
            try:
                node_work.defer_warm(runtime.node_id, speaker_id, str(exc))
            except DatabaseError:
                # The database is the outage: the assignment is still queued all the same.
                logger.warning("warm of %s deferred unrecorded: %s", speaker_id, exc)
            return "deferred"
        node_work.record_failure(runtime.node_id, speaker_id, str(exc))
        return "failed"


@shared_task(name=orchestrator.EVICT_TASK, acks_late=True, reject_on_worker_lost=True)
def evict_speaker(speaker_id: str) -> str:
    return node_work.evict_here(current_node(), speaker_id)


@shared_task(name="nodes.tasks.reconcile_assignments", acks_late=True)
def reconcile_assignments() -> int:
    return len(orchestrator.reconcile_assignments(settings.NODE_REQUEUE_AFTER_S))
