"""A finished job POSTed to its webhook by the orchestrator, with backoff between attempts."""

from __future__ import annotations

import json
import logging

from django.conf import settings
from django.utils import timezone

from common.tasks import send_task
from diarization import webhooks
from diarization.models import DiarizationJob, WebhookState
from diarization.selectors import job_body
from tenancy.services import webhook_secret

logger = logging.getLogger(__name__)

WEBHOOK_TASK = "diarization.tasks.deliver_webhook"


class WebhookRetry(Exception):
    def __init__(self, countdown_s: float, reason: str):
        super().__init__(reason)
        self.countdown_s = countdown_s


def queue_webhook(job_id: str) -> None:
    """Queues the delivery of a finished job's webhook."""
    send_task(WEBHOOK_TASK, args=[job_id])


def deliver_webhook(job_id: str) -> str:
    """POSTs the finished job to its webhook, once it succeeds; raises WebhookRetry to back off."""
    job = DiarizationJob.objects.select_related("tenant").filter(id=job_id).first()
    if job is None or job.webhook_state != WebhookState.PENDING or not job.is_finished:
        return "skipped"
    # Built at each attempt and never stored: names are those of now, so a speaker erased
    # since the job finished goes out as an erased label with no name.
    body = json.dumps(job_body(job), separators=(",", ":"), default=str).encode()
    attempts = job.webhook_attempts + 1
    DiarizationJob.objects.filter(id=job_id).update(webhook_attempts=attempts)
    try:
        webhooks.post(job.webhook_url, body, webhook_secret(job.tenant), str(job.id))
    except (webhooks.DeliveryFailed, webhooks.WebhookNotAllowed) as exc:
        reason = str(exc)[:1000]
        if attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
            DiarizationJob.objects.filter(id=job_id).update(
                webhook_state=WebhookState.FAILED, webhook_last_error=reason
            )
            logger.warning("diarization %s: webhook given up after %d attempts", job_id, attempts)
            return "failed"
        DiarizationJob.objects.filter(id=job_id).update(webhook_last_error=reason)
        backoff = settings.WEBHOOK_BACKOFF_S * 2 ** (attempts - 1)
        raise WebhookRetry(min(settings.WEBHOOK_MAX_BACKOFF_S, backoff), reason) from exc
    DiarizationJob.objects.filter(id=job_id).update(
        webhook_state=WebhookState.DELIVERED,
        webhook_delivered_at=timezone.now(),
        webhook_last_error="",
    )
    return "delivered"
