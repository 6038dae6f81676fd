from __future__ import annotations

import uuid

from django.db.models import QuerySet

from consent.models import ConsentRecord


def consent_records_for_speaker(
    tenant_id: uuid.UUID, speaker_id: uuid.UUID
) -> QuerySet[ConsentRecord]:
    return ConsentRecord.objects.filter(tenant_id=tenant_id, speaker_id=speaker_id)
