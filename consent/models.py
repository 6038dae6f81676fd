import uuid

from django.db import models

from data_keys.crypto import field_context
from tenancy.models import ApiKey, Tenant

# The consent record's personal fields: stored only as ciphertext under the speaker's data key.
FULL_NAME = "consent_user_full_name"
CONSENT_TEXT = "consent_text"
CLIENT_IP = "client_ip"


class ConsentRecord(models.Model):
    """Proof that a speaker agreed to enrollment; immutable at the database level.

    The full name, the consent text and the client's address are ciphertext under the
    speaker's data key (``data_keys``), so that erasure, which destroys that key, leaves the
    row unchanged and unreadable as to the person; the purpose, the timestamps, the key that
    recorded it and the hashes remain as proof of consent (GDPR Art. 17(3)(e)).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="consent_records")
    # A string reference: consent sits below enrollment in the layers.
    speaker = models.ForeignKey(
        "enrollment.Speaker", on_delete=models.PROTECT, related_name="consent_records"
    )

    # Null only for records of speakers erased before the fields were encrypted.
    full_name_ciphertext = models.BinaryField(null=True)
    consent_stated_purpose = models.CharField(max_length=1000)
    consent_text_ciphertext = models.BinaryField(null=True)
    # Proves later that a text someone presents is the one consented to.
    consent_text_sha256 = models.CharField(max_length=64)

    recording_blob_key = models.CharField(max_length=300)
    recording_sha256 = models.CharField(max_length=64)
    recording_size_bytes = models.BigIntegerField()
    recording_duration_s = models.FloatField()
    recording_speech_s = models.FloatField()

    api_key = models.ForeignKey(ApiKey, on_delete=models.PROTECT, related_name="consent_records")
    api_key_prefix = models.CharField(max_length=16)
    # Null when the address was unknown, or the speaker was erased before it was encrypted.
    client_ip_ciphertext = models.BinaryField(null=True)
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-recorded_at", "id"]

    def __str__(self) -> str:
        return f"consent {self.id} for speaker {self.speaker_id}"


def consent_field_context(record_id: uuid.UUID | str, column: str) -> str:
    """What a consent field's ciphertext is bound to: this record, this column."""
    return field_context(ConsentRecord._meta.db_table, record_id, column)
