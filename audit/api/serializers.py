from rest_framework import serializers


class AuditQuerySerializer(serializers.Serializer):
    speaker_id = serializers.UUIDField(required=False)
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)
    export = serializers.ChoiceField(choices=["csv", "jsonl"], required=False)


class ConsentRecordSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    speaker_id = serializers.UUIDField()
    consent_user_full_name = serializers.CharField()
    consent_stated_purpose = serializers.CharField()
    consent_text = serializers.CharField()
    consent_text_sha256 = serializers.CharField()
    recording_blob_key = serializers.CharField()
    recording_sha256 = serializers.CharField()
    recording_size_bytes = serializers.IntegerField()
    recording_duration_s = serializers.FloatField()
    api_key_prefix = serializers.CharField()
    client_ip = serializers.CharField(allow_null=True)
    recorded_at = serializers.DateTimeField()


class AuditEventSerializer(serializers.Serializer):
    seq = serializers.IntegerField()
    occurred_at = serializers.DateTimeField()
    action = serializers.CharField()
    actor = serializers.CharField()
    speaker_id = serializers.UUIDField(allow_null=True)
    details = serializers.JSONField()
    prev_hash = serializers.CharField()
    hash = serializers.CharField()
