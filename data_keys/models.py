"""One data key per speaker, wrapped by the key-encryption key (``data_keys/wrapping.py``).

An ordinary table the service may DELETE from: erasure deletes the speaker's row, and with it
every ciphertext of that person becomes unreadable (crypto-shredding), while the immutable
rows that hold those ciphertexts stay as they are.
"""

import uuid

from django.db import models

from tenancy.models import Tenant


class DataKey(models.Model):
    # The speaker's id, not a foreign key: data_keys sits below enrollment, and the row must
    # go with the erasure while the speaker's tombstone stays.
    speaker_id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="data_keys")
    wrapped_key = models.BinaryField()
    wrapping_key_id = models.CharField(max_length=200, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"data key of speaker {self.speaker_id} (wrapped by {self.wrapping_key_id})"
