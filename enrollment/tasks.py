"""Periodic compliance work, run by the orchestrator worker's beat."""

from celery import shared_task
from django.conf import settings

from enrollment import reviews, services


@shared_task(name="enrollment.tasks.erase_expired_speakers", acks_late=True)
def erase_expired_speakers() -> int:
    return len(services.erase_expired_speakers())


@shared_task(name="enrollment.tasks.erase_expired_reviews", acks_late=True)
def erase_expired_reviews() -> int:
    return len(reviews.erase_expired_reviews())


@shared_task(name="enrollment.tasks.retry_blob_erasures", acks_late=True)
def retry_blob_erasures() -> int:
    # Younger erasures may still be deleting their blobs in the request that made them.
    return services.retry_blob_erasures(settings.NODE_REQUEUE_AFTER_S)
