import uuid

from django.db import models

from tenancy.models import ApiKey, Tenant


class EnrollmentStatus(models.TextChoices):
    PENDING = "pending"
    # An uncertain voice check held the enrollment for a person's review: stored, never warm.
    NEEDS_REVIEW = "needs_review"
    READY = "ready"
    FAILED = "failed"
    EVICTED = "evicted"


class Speaker(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="speakers")
    display_name = models.CharField(max_length=200)
    language_primary = models.CharField(max_length=35)
    description = models.CharField(max_length=1000, blank=True)
    enrollment_status = models.CharField(
        max_length=16, choices=EnrollmentStatus.choices, default=EnrollmentStatus.PENDING
    )

    reference_blob_key = models.CharField(max_length=300)
    reference_sha256 = models.CharField(max_length=64)
    reference_size_bytes = models.BigIntegerField()
    reference_duration_s = models.FloatField()
    reference_speech_s = models.FloatField()

    # The preflight's voiceprint, kept to find the same voice enrolled twice in a tenant:
    # encrypted under the speaker's data key (enrollment/voiceprints.py), a biometric template
    # that erasure makes unreadable by destroying that key.
    voiceprint_ciphertext = models.BinaryField(null=True, blank=True)
    embedding_model_id = models.CharField(max_length=200)
    embedding_model_version = models.CharField(max_length=100)
    preflight = models.JSONField(default=dict)

    created_by_key = models.ForeignKey(
        ApiKey, on_delete=models.PROTECT, null=True, related_name="speakers_enrolled"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    status_changed_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "id"]
        indexes = [models.Index(fields=["tenant", "enrollment_status", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.display_name} ({self.id})"
