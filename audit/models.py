import uuid

from django.db import models

from tenancy.models import Tenant


class AuditEvent(models.Model):
    """One sensitive action, hash-chained to the event before it; append-only."""

    seq = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey(
        Tenant, on_delete=models.PROTECT, null=True, related_name="audit_events"
    )
    occurred_at = models.DateTimeField()
    action = models.CharField(max_length=64)
    actor = models.CharField(max_length=200, help_text="api-key:<prefix>, node:<id>, system")
    speaker_id = models.UUIDField(null=True, blank=True, db_index=True)
    details = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["seq"]
        indexes = [models.Index(fields=["tenant", "occurred_at"])]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action}"


class ErasureReason(models.TextChoices):
    REQUESTED = "erasure_requested"
    CONSENT_WITHDRAWN = "consent_withdrawn"
    RETENTION_EXPIRED = "retention_expired"
    REVIEW_REJECTED = "review_rejected"
    REVIEW_EXPIRED = "review_expired"


class ErasureAudit(models.Model):
    """The immutable receipt of one GDPR Art. 17 erasure."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="erasures")
    # A string reference: audit sits below enrollment in the layers.
    speaker = models.OneToOneField(
        "enrollment.Speaker", on_delete=models.PROTECT, related_name="erasure"
    )
    reason = models.CharField(max_length=32, choices=ErasureReason.choices)
    requested_by = models.CharField(max_length=200)
    erased_at = models.DateTimeField()
    # What is to be deleted; what was deleted (or failed) arrives as confirmations.
    blob_keys = models.JSONField(default=list)
    consent_record_ids = models.JSONField(default=list)
    nodes_to_evict = models.JSONField(default=list)

    class Meta:
        ordering = ["-erased_at"]

    def __str__(self) -> str:
        return f"erasure {self.id} of {self.speaker_id}"


class ErasureOutcome(models.TextChoices):
    """What a confirmation of an erasure says."""

    EVICTED = "evicted"  # a node dropped the embedding
    BLOBS_DELETED = "blobs_deleted"  # every version of every recording is gone
    BLOB_ERROR = "blob_error"  # the blob store failed; retried by the orchestrator


class ErasureConfirmation(models.Model):
    """A later fact about an erasure (blobs deleted or failing, a node evicted); append-only."""

    id = models.BigAutoField(primary_key=True)
    erasure = models.ForeignKey(
        ErasureAudit, on_delete=models.PROTECT, related_name="confirmations"
    )
    node_id = models.CharField(max_length=64, blank=True)
    outcome = models.CharField(max_length=16, choices=ErasureOutcome.choices)
    detail = models.TextField(blank=True)
    bytes_deleted = models.BigIntegerField(null=True, blank=True)
    versions_deleted = models.IntegerField(null=True, blank=True)
    confirmed_at = models.DateTimeField()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.erasure_id} {self.node_id} {self.outcome}"
