"""Tenants and their API keys: who is calling, and with which scopes."""

import uuid

from django.contrib.postgres.fields import ArrayField
from django.db import models


class Scope(models.TextChoices):
    ENROLL = "scaiecho:enroll", "Enroll speakers (biometric capture)"
    TRANSCRIBE = "scaiecho:transcribe", "Transcribe audio"
    DIARIZE = "scaiecho:diarize", "Label speakers in transcripts"
    AUDIT = "scaiecho:audit", "Read consent records, erasures and the audit trail"


ALL_SCOPES = [scope.value for scope in Scope]


class Tenant(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200, blank=True)
    # Speakers unused this long are erased (BIPA: at most 3 years after last interaction).
    retention_days = models.PositiveIntegerField(default=3 * 365)
    # This tenant's identification threshold; None: DIARIZE_IDENTIFICATION_THRESHOLD.
    identification_threshold = models.FloatField(null=True, blank=True)
    # Signs webhook deliveries; made on first use (tenancy.services.webhook_secret).
    webhook_secret = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        # The table predates the tenancy app (it began in enrollment).
        db_table = "enrollment_tenant"

    def __str__(self) -> str:
        return self.slug


class ApiKey(models.Model):
    """A tenant's API key; only its SHA-256 is stored, looked up by its public prefix."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, unique=True)
    key_sha256 = models.CharField(max_length=64)
    scopes = ArrayField(models.CharField(max_length=32, choices=Scope.choices))
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "enrollment_apikey"

    def __str__(self) -> str:
        return f"{self.tenant.slug}:{self.prefix}"
