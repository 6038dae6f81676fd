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


# The statuses a node holds a speaker in (and computes a missing voiceprint for).
WARMABLE_STATUSES = (EnrollmentStatus.PENDING, EnrollmentStatus.READY)


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

    # The model of the preflight's voiceprint (kept in the voiceprint store, Voiceprint).
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


class Voiceprint(models.Model):
    """One speaker's voiceprint made by one embedding model: the voiceprint store.

    Written by whoever computes it first (the preflight at intake, or a node whose model differs)
    and read by the duplicate check, streaming sessions and starting nodes instead of embedding
    the reference again. The vector is encrypted under the speaker's data key, bound to the
    speaker and the model (enrollment/voiceprints.py); erasure deletes the rows and the key.
    """

    id = models.BigAutoField(primary_key=True)
    speaker = models.ForeignKey(Speaker, on_delete=models.PROTECT, related_name="voiceprints")
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    model_id = models.CharField(max_length=200)
    model_version = models.CharField(max_length=100)
    ciphertext = models.BinaryField()
    # SHA-256 of the plaintext float32 bytes: a reader checks what it decrypted against it.
    vector_sha256 = models.CharField(max_length=64)
    # "preflight", or "node:<node id>".
    computed_by = models.CharField(max_length=80)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["speaker", "model_id", "model_version"], name="one_voiceprint_per_model"
            )
        ]
        # The duplicate check's fingerprint (count, sum, max of ids) is an index-only scan.
        indexes = [models.Index(fields=["tenant", "model_id", "model_version", "id"])]

    def __str__(self) -> str:
        return f"voiceprint of {self.speaker_id} ({self.model_id} {self.model_version})"
