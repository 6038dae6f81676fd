"""Celery tasks for diarization; thin wrappers around the modules of diarization.services."""

from __future__ import annotations

import logging

from celery import Task, shared_task
from django.conf import settings

from diarization.services import jobs, node_work, retention, webhook_delivery
from diarization.services.completion import NodeJobError, StaleAttempt
from nodes.runtime import current_node
from nodes.services.node_work import retry_delay_s

logger = logging.getLogger(__name__)


@shared_task(
    name=jobs.RUN_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None
)
def run_job(self: Task, job_id: str, attempt: int) -> str:
    runtime = current_node()
    try:
        return node_work.run_job_here(runtime, job_id, attempt)
    except StaleAttempt:
        return "skipped"
    except Exception as exc:
        permanent = isinstance(exc, NodeJobError) and exc.permanent
        if permanent or self.request.retries >= settings.DIARIZE_TASK_MAX_RETRIES:
            logger.exception("diarization %s failed on node %s", job_id, runtime.node_id)
            # The caller still gets the speech without labels, and a warning saying why.
            jobs.hand_to_orchestrator(job_id, attempt)
            return "handed over"
        raise self.retry(exc=exc, countdown=retry_delay_s(self.request.retries)) from exc


@shared_task(
    name=jobs.DEGRADE_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,
)
def complete_without_node(self: Task, job_id: str, attempt: int, reason: str) -> str:
    try:
        return jobs.complete_without_node(job_id, attempt, reason)
    except StaleAttempt:
        return "skipped"
    except Exception as exc:
        # A database or blob store blip: the caller is owed a result, so keep trying.
        raise self.retry(exc=exc, countdown=retry_delay_s(min(self.request.retries, 5))) from exc


@shared_task(name=webhook_delivery.WEBHOOK_TASK, bind=True, acks_late=True, max_retries=None)
def deliver_webhook(self: Task, job_id: str) -> str:
    try:
        return webhook_delivery.deliver_webhook(job_id)
    except webhook_delivery.WebhookRetry as retry:
        raise self.retry(countdown=retry.countdown_s) from retry


@shared_task(name="diarization.tasks.recover_stalled_jobs", acks_late=True)
def recover_stalled_jobs() -> dict[str, int]:
    recovery = jobs.recover_stalled_jobs()
    return {
        "redispatched": len(recovery.redispatched),
        "resent": len(recovery.resent),
        "webhooks": len(recovery.webhooks),
        "audio_deleted": jobs.delete_finished_audio(),
    }


@shared_task(name="diarization.tasks.expire_results", acks_late=True)
def expire_results() -> dict[str, int]:
    expiry = retention.expire_results()
    return {"expired": len(expiry.expired), "audio_deleted": len(expiry.audio_deleted)}
