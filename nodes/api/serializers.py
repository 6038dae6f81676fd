from rest_framework import serializers

from nodes.api.fields import NODE_ID_PATTERN


class WarmRequestSerializer(serializers.Serializer):
    node_ids = serializers.ListField(
        child=serializers.RegexField(NODE_ID_PATTERN, max_length=64),
        allow_empty=True,
        max_length=1000,
        help_text="Empty: every candidate node. Otherwise: these live candidate nodes.",
    )


class AssignmentSerializer(serializers.Serializer):
    node_id = serializers.CharField()
    state = serializers.CharField()
    attempts = serializers.IntegerField()
    last_error = serializers.CharField()
    updated_at = serializers.DateTimeField()


class WarmViewSerializer(serializers.Serializer):
    warm_node_ids = serializers.ListField(child=serializers.CharField())
    candidate_node_ids = serializers.ListField(child=serializers.CharField())
    stale_node_ids = serializers.ListField(child=serializers.CharField())
    assignments = AssignmentSerializer(many=True)


class NodeStatusSerializer(serializers.Serializer):
    node_id = serializers.CharField()
    alive = serializers.BooleanField()
    candidate = serializers.BooleanField()
    heartbeat_age_s = serializers.FloatField(allow_null=True)
    engine = serializers.CharField()
    model_id = serializers.CharField()
    model_version = serializers.CharField()
    warm_count = serializers.IntegerField(help_text="Speakers of this tenant the node holds.")
    last_seen_at = serializers.DateTimeField(allow_null=True)
    pool = serializers.CharField(
        allow_null=True, help_text="The node's pool (NODE_POOLS); null when not heartbeating."
    )
    voiceprints_missing = serializers.IntegerField(
        help_text="Speakers of this tenant with no stored voiceprint of the node's model "
        "(id and version): the node computes them from the recordings in the background."
    )
