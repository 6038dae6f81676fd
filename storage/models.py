from django.db import models


class BlobPurpose(models.TextChoices):
    ENROLLMENT_REFERENCE = "enrollment.reference"
    ENROLLMENT_CONSENT = "enrollment.consent"
    DIARIZATION_UPLOAD = "diarization.upload"


class BlobIntent(models.Model):
    """A blob about to be written whose owning row is not committed yet.

    Committed on its own before the write, deleted with the commit of the row that owns the
    blob or once the blob is removed: an intent that outlives ``BLOB_INTENT_GRACE_S`` names a
    blob that nothing may point at, which the sweeper (``operations/blob_sweeper.py``) removes.
    """

    key = models.CharField(max_length=300, primary_key=True)
    purpose = models.CharField(max_length=40, choices=BlobPurpose.choices)
    created_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.purpose} {self.key}"
