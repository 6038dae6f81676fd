from rest_framework import serializers

from audit.models import ErasureOutcome


class AuditQuerySerializer(serializers.Serializer):
    speaker_id = serializers.UUIDField(required=False)
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)
    export = serializers.ChoiceField(choices=["csv", "jsonl"], required=False)


class ConsentRecordSerializer(serializers.Serializer):
    """A consent record as consent.selectors.consent_record_body shows it. The personal fields
    are stored encrypted under the speaker's data key: null once the speaker is erased
    (``erased``), and null for a key that may not see them (tenancy.permissions)."""

    id = serializers.UUIDField()
    speaker_id = serializers.UUIDField()
    consent_user_full_name = serializers.CharField(
        allow_null=True, help_text="Keys with scaiecho:audit only; null once erased."
    )
    consent_stated_purpose = serializers.CharField()
    consent_text = serializers.CharField(
        allow_null=True, help_text="Keys with scaiecho:audit only; null once erased."
    )
    consent_text_sha256 = serializers.CharField(
        help_text="SHA-256 of the consent text: proves a text presented later is the one "
        "consented to; kept after erasure."
    )
    recording_blob_key = serializers.CharField()
    recording_sha256 = serializers.CharField()
    recording_size_bytes = serializers.IntegerField()
    recording_duration_s = serializers.FloatField()
    recording_speech_s = serializers.FloatField()
    api_key_prefix = serializers.CharField()
    client_ip = serializers.CharField(
        allow_null=True,
        help_text="Auditors only (scaiecho:audit keys, console auditors); null when unknown "
        "or once erased.",
    )
    recorded_at = serializers.DateTimeField()
    erased = serializers.BooleanField(
        help_text="The speaker was erased: its data key is destroyed and the personal fields "
        "can no longer be read by anyone; the rest remains as proof of consent."
    )
    unreadable_fields = serializers.ListField(
        child=serializers.CharField(),
        help_text="Personal fields this caller may see whose ciphertext does not decrypt under "
        "the speaker's key (altered, or copied from another record): shown as null. Empty "
        "unless the table was written to behind the service's back.",
    )


class AuditEventSerializer(serializers.Serializer):
    seq = serializers.IntegerField()
    occurred_at = serializers.DateTimeField()
    action = serializers.CharField()
    actor = serializers.CharField()
    speaker_id = serializers.UUIDField(allow_null=True)
    details = serializers.JSONField()
    prev_hash = serializers.CharField()
    hash = serializers.CharField()


class NodeEvictionSerializer(serializers.Serializer):
    node_id = serializers.CharField()
    # "pending" until the node confirms; then the confirmation's outcome.
    state = serializers.ChoiceField(choices=["pending", ErasureOutcome.EVICTED.value, "failed"])
    detail = serializers.CharField()
    confirmed_at = serializers.DateTimeField(required=False)


class ErasureReceiptSerializer(serializers.Serializer):
    """Documents the receipt built by audit.selectors.erasure_receipt."""

    audit_id = serializers.UUIDField()
    speaker_id = serializers.UUIDField()
    reason = serializers.CharField()
    requested_by = serializers.CharField()
    erased_at = serializers.DateTimeField()
    blob_keys = serializers.ListField(child=serializers.CharField())
    blobs_state = serializers.ChoiceField(choices=["pending", "deleted", "failing"])
    blob_versions_deleted = serializers.IntegerField()
    blob_bytes_deleted = serializers.IntegerField()
    consent_record_ids = serializers.ListField(child=serializers.UUIDField())
    data_key_destroyed = serializers.BooleanField(
        help_text="The speaker's data key is gone: the consent record's name, text and address "
        "and the voiceprint can no longer be read by anyone."
    )
    nodes = NodeEvictionSerializer(many=True)
    error_summary = serializers.DictField(child=serializers.CharField())
    complete = serializers.BooleanField()


class ChainVerdictSerializer(serializers.Serializer):
    """A verification of the whole trail (a break anywhere matters to every tenant), told in
    the calling tenant's own numbers: built by audit.services.ChainVerdict.for_tenant."""

    intact = serializers.BooleanField(
        help_text="Every link of the whole trail holds, and it still holds what the newest "
        "signed checkpoints signed."
    )
    events_checked = serializers.IntegerField(
        help_text="How many of this tenant's own events were verified."
    )
    first_broken_seq = serializers.IntegerField(
        allow_null=True,
        help_text="The event the break was found at, when it is one of this tenant's events.",
    )
    problem = serializers.CharField(allow_null=True, help_text="What was found; null if intact.")
    break_in_own_events = serializers.BooleanField(
        allow_null=True,
        help_text="Whether the break was found at one of this tenant's events; null when "
        "intact, or when the break is at no one event (events cut from the tail, a rewrite "
        "found at a checkpoint, a bad checkpoint).",
    )
    anchor = serializers.ChoiceField(
        choices=["none", "current", "overdue"],
        help_text="none: no signed checkpoint yet (a fresh trail); current: the newest "
        "checkpoint holds; overdue: events older than the checkpoint interval allows are "
        "under no checkpoint (the checkpoint task is not running, or checkpoints were removed).",
    )
