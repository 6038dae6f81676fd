from __future__ import annotations

import re
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from audit.api.serializers import ConsentRecordSerializer
from consent.selectors import consent_record_bodies, consent_records_for_speaker
from enrollment import reviews
from enrollment.models import EnrollmentStatus, Speaker
from tenancy.permissions import ConsentFieldAccess

# RFC 5646 language tags with an ISO 639 primary language (2-3 letters); the 4-8 letter
# primary subtags are reserved or unused, and a long word there is almost always a mistake.
_BCP47 = re.compile(
    r"^[a-z]{2,3}(?:-[a-z]{3}){0,3}"
    r"(?:-[a-z]{4})?"
    r"(?:-(?:[a-z]{2}|\d{3}))?"
    r"(?:-(?:[a-z\d]{5,8}|\d[a-z\d]{3}))*"
    r"(?:-[a-wyz\d](?:-[a-z\d]{2,8})+)*"
    r"(?:-x(?:-[a-z\d]{1,8})+)?$",
    re.IGNORECASE,
)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def validate_language_tag(value: str) -> None:
    if not _BCP47.match(value):
        raise serializers.ValidationError(
            f"'{value}' is not a BCP-47 language tag (for example 'en', 'en-GB', 'pt-BR')."
        )


def reject_control_characters(value: str) -> None:
    if _CONTROL.search(value):
        raise serializers.ValidationError("Control characters are not allowed.")


class EnrollmentRequestSerializer(serializers.Serializer):
    display_name = serializers.CharField(max_length=200, validators=[reject_control_characters])
    language_primary = serializers.CharField(max_length=35, validators=[validate_language_tag])
    description = serializers.CharField(
        max_length=1000,
        allow_blank=True,
        default="",
        validators=[reject_control_characters],
    )
    consent_user_full_name = serializers.CharField(
        max_length=200, validators=[reject_control_characters]
    )
    consent_stated_purpose = serializers.CharField(
        max_length=1000, validators=[reject_control_characters]
    )
    consent_text = serializers.CharField(max_length=10_000)
    reference = serializers.FileField(help_text="Reference recording (wav, mp3, flac, ogg, m4a).")
    consent = serializers.FileField(help_text="The speaker reading the consent text aloud.")


class SpeakerListQuerySerializer(serializers.Serializer):
    enrollment_status = serializers.ChoiceField(choices=EnrollmentStatus.choices, required=False)


class ReviewRequestSerializer(serializers.Serializer):
    decision = serializers.ChoiceField(
        choices=reviews.DECISIONS,
        help_text="approve: the enrollment fans out to the nodes; reject: it is erased.",
    )
    note = serializers.CharField(
        max_length=2000,
        allow_blank=True,
        default="",
        validators=[reject_control_characters],
        help_text="Why; kept only encrypted under the speaker's data key.",
    )


class HeldFindingSerializer(serializers.Serializer):
    code = serializers.CharField()
    severity = serializers.CharField()
    recording = serializers.CharField()
    message = serializers.CharField()
    measured = serializers.FloatField(allow_null=True)
    threshold = serializers.FloatField(allow_null=True)
    speaker_id = serializers.CharField(
        required=False, help_text="duplicate_voice: the speaker already enrolled with this voice."
    )


class ReviewHoldSerializer(serializers.Serializer):
    findings = HeldFindingSerializer(many=True, help_text="The checks that held the enrollment.")
    expires_at = serializers.DateTimeField(
        help_text="Unless decided on by then, the enrollment is erased (REVIEW_EXPIRY_DAYS)."
    )


class SpeakerSerializer(serializers.ModelSerializer):
    reference = serializers.SerializerMethodField()
    embedding_model = serializers.SerializerMethodField()
    review = serializers.SerializerMethodField(
        help_text="Only while enrollment_status is needs_review: why it is held, and until when."
    )

    class Meta:
        model = Speaker
        fields = [
            "id",
            "display_name",
            "language_primary",
            "description",
            "enrollment_status",
            "reference",
            "embedding_model",
            "review",
            "created_at",
            "updated_at",
        ]

    def get_reference(self, speaker: Speaker) -> dict[str, Any]:
        return {
            "sha256": speaker.reference_sha256,
            "size_bytes": speaker.reference_size_bytes,
            "duration_s": round(speaker.reference_duration_s, 3),
            "speech_s": round(speaker.reference_speech_s, 3),
        }

    def get_embedding_model(self, speaker: Speaker) -> dict[str, str]:
        return {"id": speaker.embedding_model_id, "version": speaker.embedding_model_version}

    @extend_schema_field(ReviewHoldSerializer(allow_null=True))
    def get_review(self, speaker: Speaker) -> dict[str, Any] | None:
        if speaker.enrollment_status != EnrollmentStatus.NEEDS_REVIEW:
            return None
        return dict(
            ReviewHoldSerializer(
                {
                    "findings": reviews.held_findings(speaker),
                    "expires_at": reviews.review_expires_at(speaker),
                }
            ).data
        )


class SpeakerDetailSerializer(SpeakerSerializer):
    """``context["consent_access"]`` (tenancy.permissions.consent_field_access) says which
    personal fields of the consent records the caller sees; without it, none."""

    preflight = serializers.JSONField()
    consent_records = serializers.SerializerMethodField()

    class Meta(SpeakerSerializer.Meta):
        fields = [*SpeakerSerializer.Meta.fields, "preflight", "consent_records"]

    @extend_schema_field(ConsentRecordSerializer(many=True))
    def get_consent_records(self, speaker: Speaker) -> list[dict[str, Any]]:
        access = self.context.get("consent_access") or ConsentFieldAccess()
        records = consent_records_for_speaker(speaker.tenant_id, speaker.id)
        return list(ConsentRecordSerializer(consent_record_bodies(records, access), many=True).data)
