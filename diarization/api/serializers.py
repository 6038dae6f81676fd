from __future__ import annotations

from typing import Any

from rest_framework import serializers

from diarization.formats import FORMATS
from diarization.models import JobStatus
from enrollment.api.serializers import reject_control_characters


def speaker_count(help_text: str) -> serializers.IntegerField:
    return serializers.IntegerField(
        min_value=1, max_value=20, required=False, allow_null=True, help_text=help_text
    )


class DiarizeRequestSerializer(serializers.Serializer):
    audio = serializers.FileField(help_text="The recording (wav, mp3, flac, ogg, m4a).")
    num_speakers = speaker_count("Exactly this many speakers (1-20).")
    min_speakers = speaker_count("At least this many speakers.")
    max_speakers = speaker_count("At most this many speakers.")
    identify = serializers.BooleanField(default=True)
    threshold = serializers.FloatField(
        min_value=0.0,
        max_value=1.0,
        required=False,
        allow_null=True,
        help_text="Cosine similarity needed to label a voice with an enrolled speaker; "
        "defaults to the tenant's.",
    )
    exclusive = serializers.BooleanField(
        default=False, help_text="Each enrolled speaker labels at most one voice of the job."
    )
    confidence = serializers.BooleanField(
        default=False, help_text="Include per-frame confidence scores (0-100) and resolution."
    )
    webhook = serializers.URLField(max_length=2000, required=False, default="", allow_blank=True)
    request_id = serializers.CharField(
        max_length=128,
        required=False,
        default="",
        allow_blank=True,
        validators=[reject_control_characters],
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        low, high, exact = (
            attrs.get("min_speakers"),
            attrs.get("max_speakers"),
            attrs.get("num_speakers"),
        )
        if low is not None and high is not None and low > high:
            raise serializers.ValidationError(
                {"min_speakers": "min_speakers must not be above max_speakers."}
            )
        if exact is not None and (
            (low is not None and exact < low) or (high is not None and exact > high)
        ):
            raise serializers.ValidationError(
                {"num_speakers": "num_speakers must lie between min_speakers and max_speakers."}
            )
        return attrs


class ResultQuerySerializer(serializers.Serializer):
    format = serializers.ChoiceField(choices=sorted(FORMATS), default="json")


class DiarizationJobSerializer(serializers.Serializer):
    """Documents the job body (built by diarization.selectors.job_body)."""

    id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=JobStatus.choices)
    request_id = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    completed_at = serializers.DateTimeField(allow_null=True)
    estimated_time = serializers.IntegerField(
        help_text="Seconds the job is expected to take; revised once a node has decoded the audio."
    )
    audio_duration = serializers.FloatField(
        help_text="Seconds of audio: as the file's header declares at intake (0 when it declares "
        "none), as measured once a node has decoded it."
    )
    options = serializers.DictField()
    node_id = serializers.CharField(allow_null=True)
    warnings = serializers.ListField(child=serializers.DictField())
    error = serializers.DictField(required=False)
    result = serializers.DictField(
        required=False,
        help_text="Once succeeded: `segments` and `speakers`, labelled with `speaker_label` (an "
        "enrolled speaker's id, or `spk_N`). An enrolled speaker's `display_name` is looked up "
        'when read; an erased one reads `"erased": true` with no name.',
    )
