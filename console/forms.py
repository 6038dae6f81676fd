from __future__ import annotations

from collections.abc import Callable

from django import forms
from rest_framework import serializers

from enrollment import reviews
from enrollment.api.serializers import reject_control_characters, validate_language_tag
from enrollment.models import EnrollmentStatus


def _django_validator(check: Callable[[str], None]) -> Callable[[str], None]:
    """The API's field checks, raising Django's ValidationError for forms."""

    def validate(value: str) -> None:
        try:
            check(value)
        except serializers.ValidationError as exc:
            raise forms.ValidationError(" ".join(str(d) for d in exc.detail)) from exc

    return validate


TEXT = [_django_validator(reject_control_characters)]


class EnrollmentForm(forms.Form):
    display_name = forms.CharField(max_length=200, validators=TEXT)
    language_primary = forms.CharField(
        max_length=35,
        initial="en",
        validators=[_django_validator(validate_language_tag)],
        help_text="BCP-47, for example en, en-GB, pt-BR",
    )
    description = forms.CharField(max_length=1000, required=False, validators=TEXT)
    consent_user_full_name = forms.CharField(
        max_length=200, validators=TEXT, label="Full name of the person consenting"
    )
    consent_stated_purpose = forms.CharField(
        max_length=1000, validators=TEXT, label="Purpose stated to them"
    )
    consent_text = forms.CharField(
        max_length=10_000, widget=forms.Textarea(attrs={"rows": 3}), label="Consent text read aloud"
    )
    reference = forms.FileField(label="Reference recording", help_text="wav, mp3, flac, ogg, m4a")
    consent = forms.FileField(label="Consent recording", help_text="the person reading the text")


class ReviewForm(forms.Form):
    decision = forms.ChoiceField(choices=[(d, d) for d in reviews.DECISIONS])
    note = forms.CharField(max_length=2000, required=False, validators=TEXT)


class SpeakerFilterForm(forms.Form):
    q = forms.CharField(required=False, label="Name")
    status = forms.ChoiceField(
        required=False, choices=[("", "any status"), *EnrollmentStatus.choices]
    )


class AuditFilterForm(forms.Form):
    speaker_id = forms.UUIDField(required=False)
    since = forms.DateTimeField(required=False)
    until = forms.DateTimeField(required=False)
