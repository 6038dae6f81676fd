import uuid

from django.db import models

from tenancy.models import ApiKey, Tenant


class ConsentRecord(models.Model):
    """Proof that a speaker agreed to enrollment; immutable at the database level."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="consent_records")
    # A string reference: consent sits below enrollment in the layers.
    speaker = models.ForeignKey(
        "enrollment.Speaker", on_delete=models.PROTECT, related_name="consent_records"
    )

    consent_user_full_name = models.CharField(max_length=200)
    consent_stated_purpose = models.CharField(max_length=1000)
    consent_text = models.TextField()
    consent_text_sha256 = models.CharField(max_length=64)

    recording_blob_key = models.CharField(max_length=300)
    recording_sha256 = models.CharField(max_length=64)
    recording_size_bytes = models.BigIntegerField()
    recording_duration_s = models.FloatField()
    recording_speech_s = models.FloatField()

    api_key = models.ForeignKey(ApiKey, on_delete=models.PROTECT, related_name="consent_records")
    api_key_prefix = models.CharField(max_length=16)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-recorded_at", "id"]

    def __str__(self) -> str:
        return f"consent {self.id} for speaker {self.speaker_id}"
