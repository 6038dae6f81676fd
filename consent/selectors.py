from django.db.models import QuerySet

from consent.models import ConsentRecord
from enrollment.models import Speaker


def consent_records_for_speaker(speaker: Speaker) -> QuerySet[ConsentRecord]:
    return ConsentRecord.objects.filter(tenant_id=speaker.tenant_id, speaker=speaker)
