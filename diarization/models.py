import uuid

from django.db import models

from tenancy.models import ApiKey, Tenant


class JobStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class WebhookState(models.TextChoices):
    NONE = "none"
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    # The job's result expired (DIARIZATION_RESULT_RETENTION_DAYS) before it was delivered.
    EXPIRED = "expired"


class DiarizationJob(models.Model):
    """One batch diarization: the uploaded audio, where it runs, and its result."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="diarization_jobs")
    created_by_key = models.ForeignKey(
        ApiKey, on_delete=models.PROTECT, null=True, related_name="diarization_jobs"
    )
    request_id = models.CharField(max_length=128, blank=True)
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.PENDING)
    options = models.JSONField(default=dict)

    audio_blob_key = models.CharField(max_length=300)
    audio_sha256 = models.CharField(max_length=64)
    audio_size_bytes = models.BigIntegerField()
    audio_duration_s = models.FloatField()
    audio_deleted_at = models.DateTimeField(null=True, blank=True)

    # The node the current attempt was sent to; a new attempt (the node died) supersedes it.
    node_id = models.CharField(max_length=64, blank=True)
    attempt = models.PositiveIntegerField(default=0)
    estimated_time_s = models.PositiveIntegerField()

    # Speaker ids only (``speaker_label``), never names: names are resolved when it is read.
    result = models.JSONField(null=True, blank=True)
    # When retention deleted the result; the row stays, as a record that the job ran.
    result_expired_at = models.DateTimeField(null=True, blank=True)
    warnings = models.JSONField(default=list)
    error = models.JSONField(null=True, blank=True)

    webhook_url = models.URLField(max_length=2000, blank=True)
    webhook_state = models.CharField(
        max_length=16, choices=WebhookState.choices, default=WebhookState.NONE
    )
    webhook_attempts = models.PositiveIntegerField(default=0)
    webhook_last_error = models.TextField(blank=True)
    webhook_delivered_at = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "id"]
        indexes = [
            models.Index(fields=["tenant", "-created_at"]),
            models.Index(fields=["status", "node_id"]),
        ]

    def __str__(self) -> str:
        return f"diarization {self.id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in (JobStatus.SUCCEEDED, JobStatus.FAILED)
