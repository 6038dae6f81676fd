from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, PolymorphicProxySerializer, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound, Throttled
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from audit.api.serializers import ErasureReceiptSerializer
from audit.models import ErasureReason
from audit.selectors import erasure_receipt
from common import rate_limits
from common.client_address import client_address
from common.pagination import DataPagination
from enrollment import reviews, selectors, services
from enrollment.api.serializers import (
    EnrollmentRequestSerializer,
    ReviewRequestSerializer,
    SpeakerDetailSerializer,
    SpeakerListQuerySerializer,
    SpeakerSerializer,
)
from tenancy.api_views import ScopedView
from tenancy.permissions import AUDIT, ENROLL, consent_field_access, principal_of


def _consent_access(request: Request) -> dict[str, Any]:
    """The serializer context that lets the caller see what it may of the consent records."""
    return {"consent_access": consent_field_access(principal_of(request))}


class SpeakerCollectionView(ScopedView):
    parser_classes = [MultiPartParser, FormParser]
    required_scopes = {"GET": [ENROLL, AUDIT], "POST": [ENROLL]}

    @staticmethod
    def max_body_bytes() -> int:
        # Enforced as the body arrives, by operations.body_limits.
        return services.enrollment_body_limit()

    @extend_schema(
        parameters=[SpeakerListQuerySerializer],
        responses=SpeakerSerializer(many=True),
        summary="List speakers",
    )
    def get(self, request: Request) -> Response:
        query = SpeakerListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        speakers = selectors.speakers_for_tenant(
            principal_of(request).tenant, query.validated_data.get("enrollment_status")
        )
        paginator = DataPagination()
        page = paginator.paginate_queryset(speakers, request, view=self)
        return paginator.get_paginated_response(SpeakerSerializer(page, many=True).data)

    @extend_schema(
        request={"multipart/form-data": EnrollmentRequestSerializer},
        responses={
            201: SpeakerDetailSerializer,
            413: OpenApiResponse(description="upload_too_large"),
            422: OpenApiResponse(description="preflight_failed, with every finding"),
        },
        summary="Enroll a speaker",
    )
    def post(self, request: Request) -> Response:
        try:
            rate_limits.consume(
                f"enrollments:{principal_of(request).tenant.id}",
                settings.ENROLLMENT_RATE_LIMIT,
                60,
            )
        except rate_limits.RateLimited as limited:
            raise Throttled(
                wait=limited.retry_after_s,
                detail="This tenant is enrolling faster than ENROLLMENT_RATE_LIMIT a minute.",
            ) from limited
        form = EnrollmentRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        fields = dict(form.validated_data)
        reference, consent = fields.pop("reference"), fields.pop("consent")
        outcome = services.enroll_speaker(
            principal=principal_of(request),
            profile=services.SpeakerProfile(**fields),
            reference=reference,
            consent=consent,
            client_ip=client_address(request.META),
        )
        body = dict(SpeakerDetailSerializer(outcome.speaker, context=_consent_access(request)).data)
        body["enrolled_on"] = outcome.enrolled_on
        if outcome.note:
            body["note"] = outcome.note
        return Response({"data": body}, status=status.HTTP_201_CREATED)


class SpeakerDetailView(ScopedView):
    required_scopes = {"GET": [ENROLL, AUDIT], "DELETE": [ENROLL]}

    @extend_schema(responses=SpeakerDetailSerializer, summary="A speaker's profile")
    def get(self, request: Request, speaker_id: str) -> Response:
        speaker = selectors.speaker_for_tenant(principal_of(request).tenant, speaker_id)
        if speaker is None:
            raise NotFound("No such speaker.")
        detail = SpeakerDetailSerializer(speaker, context=_consent_access(request))
        return Response({"data": detail.data})

    @extend_schema(summary="Erase the speaker (GDPR Art. 17)", responses=ErasureReceiptSerializer)
    def delete(self, request: Request, speaker_id: str) -> Response:
        return erase(request, speaker_id, ErasureReason.REQUESTED)


class ConsentWithdrawalView(ScopedView):
    required_scopes = {"POST": [ENROLL]}

    @extend_schema(
        request=None,
        responses=ErasureReceiptSerializer,
        summary="Withdraw consent: erases the speaker",
    )
    def post(self, request: Request, speaker_id: str) -> Response:
        return erase(request, speaker_id, ErasureReason.CONSENT_WITHDRAWN)


class SpeakerReviewView(ScopedView):
    parser_classes = [JSONParser]
    required_scopes = {"POST": [ENROLL]}

    @extend_schema(
        request=ReviewRequestSerializer,
        responses={
            200: PolymorphicProxySerializer(
                component_name="ReviewOutcome",
                serializers=[SpeakerDetailSerializer, ErasureReceiptSerializer],
                resource_type_field_name=None,
            ),
            403: OpenApiResponse(description="same_reviewer (REVIEW_REQUIRE_OTHER_REVIEWER)"),
            409: OpenApiResponse(description="not_under_review: the speaker is not held"),
        },
        summary="Decide on an enrollment held for review",
        description=(
            "approve: the speaker becomes pending and fans out to the nodes (the answer is its "
            "profile with enrolled_on, as POST speakers answers); reject: it is erased as by "
            "DELETE (the answer is the erasure receipt, reason review_rejected)."
        ),
    )
    def post(self, request: Request, speaker_id: str) -> Response:
        principal = principal_of(request)
        speaker = selectors.speaker_for_tenant(principal.tenant, speaker_id)
        if speaker is None:
            raise NotFound("No such speaker.")
        form = ReviewRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        outcome = reviews.decide(speaker, principal=principal, **form.validated_data)
        if outcome.erasure is not None:
            return Response({"data": erasure_receipt(outcome.erasure)})
        body = dict(SpeakerDetailSerializer(outcome.speaker, context=_consent_access(request)).data)
        body["enrolled_on"] = outcome.enrolled_on
        if outcome.note:
            body["note"] = outcome.note
        return Response({"data": body})


def erase(request: Request, speaker_id: str, reason: str) -> Response:
    principal = principal_of(request)
    speaker = selectors.speaker_for_tenant(principal.tenant, speaker_id)
    if speaker is None:
        raise NotFound("No such speaker.")
    outcome = services.erase_speaker(speaker, reason=reason, actor=principal.actor)
    return Response({"data": erasure_receipt(outcome.erasure)})
