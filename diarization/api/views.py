from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound, Throttled
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from common import rate_limits
from diarization import selectors
from diarization.api.serializers import (
    DiarizationJobSerializer,
    DiarizeRequestSerializer,
    ResultQuerySerializer,
)
from diarization.formats import FORMATS, render
from diarization.models import DiarizationJob, JobStatus
from diarization.services import jobs, retention, tuning
from tenancy.api_views import ScopedView
from tenancy.permissions import DIARIZE, principal_of

RESULT_EXPIRED = OpenApiResponse(
    description="result_expired: the job completed more than DIARIZATION_RESULT_RETENTION_DAYS "
    "ago and its result was deleted; `status`, `completed_at` and `result_expired_at` remain."
)


def _job(request: Request, job_id: str) -> DiarizationJob:
    job = selectors.job_for_tenant(principal_of(request).tenant, job_id)
    if job is None:
        raise NotFound("No such diarization job.")
    return job


class DiarizeView(ScopedView):
    parser_classes = [MultiPartParser, FormParser]
    required_scopes = {"POST": [DIARIZE]}

    @staticmethod
    def max_body_bytes() -> int:
        # Enforced as the body arrives, by operations.body_limits.
        return tuning.diarize_body_limit()

    @extend_schema(
        request={"multipart/form-data": DiarizeRequestSerializer},
        responses={
            202: OpenApiResponse(
                response=DiarizationJobSerializer,
                description="Accepted once the upload is stored and its header passed the "
                "limits; the node decodes it. Audio that then proves unusable (it does not "
                "decode, or holds more than the limits) fails the job: `status` `failed` "
                "with `error.code` `audio_undecodable`, `audio_too_long` or "
                "`audio_too_costly`, in `GET diarize/{job}` and the webhook.",
            ),
            413: OpenApiResponse(description="upload_too_large: over DIARIZE_MAX_UPLOAD_BYTES"),
            422: OpenApiResponse(
                description="audio_unusable, with `reason`: `audio_unsupported_format`, "
                "`audio_undecodable` (no readable header or audio stream), `audio_too_long` "
                "(declared duration over DIARIZE_MAX_DURATION_S) or `audio_too_costly` "
                "(declared seconds x rate x channels over DIARIZE_MAX_INPUT_SAMPLES); "
                "`measured` and `threshold` give the figures. Nothing is stored."
            ),
            429: OpenApiResponse(
                description="rate_limited: the tenant submitted DIARIZE_RATE_LIMIT jobs this "
                "minute; Retry-After says when to try again."
            ),
            503: OpenApiResponse(description="blob_store_unavailable: nothing was stored"),
        },
        parameters=[
            OpenApiParameter(
                "Retry-After",
                OpenApiTypes.INT,
                OpenApiParameter.HEADER,
                response=[429],
                description="Seconds until the tenant may submit again.",
            )
        ],
        summary="Submit a diarization job",
    )
    def post(self, request: Request) -> Response:
        # Counted before the form is parsed: a refused request's upload is never handled.
        try:
            rate_limits.consume(
                f"diarize:{principal_of(request).tenant.id}", settings.DIARIZE_RATE_LIMIT, 60
            )
        except rate_limits.RateLimited as limited:
            raise Throttled(
                wait=limited.retry_after_s,
                detail="This tenant is submitting diarization jobs faster than "
                "DIARIZE_RATE_LIMIT a minute.",
            ) from limited
        form = DiarizeRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        fields = dict(form.validated_data)
        audio = fields.pop("audio")
        job = jobs.submit_job(principal_of(request), jobs.JobRequest(**fields), audio)
        return Response(
            {"data": selectors.job_body(job)},
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": f"{request.path.rstrip('/')}/{job.id}"},
        )


class DiarizeJobView(ScopedView):
    required_scopes = {"GET": [DIARIZE]}

    @extend_schema(
        responses={
            200: OpenApiResponse(
                response=DiarizationJobSerializer,
                description="The job; once it succeeded, its `result`. Segments and speakers "
                "carry `speaker_label` (an enrolled speaker's id, or `spk_N`); an enrolled "
                "speaker's `display_name` is looked up now, and an erased speaker's label "
                'reads `"erased": true` with no name.',
            ),
            410: RESULT_EXPIRED,
        },
        summary="A diarization job and its result",
    )
    def get(self, request: Request, job_id: str) -> Response:
        job = _job(request, job_id)
        retention.check_result_kept(job)
        return Response({"data": selectors.job_body(job)})


class DiarizeResultView(ScopedView):
    required_scopes = {"GET": [DIARIZE]}

    def perform_content_negotiation(self, request: Request, force: bool = False) -> tuple:
        # `?format=` names the download's format here, not one of DRF's renderers.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        parameters=[ResultQuerySerializer],
        responses={
            (200, "application/json"): OpenApiResponse(
                response=OpenApiTypes.OBJECT, description="format=json"
            ),
            (200, "text/plain"): OpenApiResponse(
                response=OpenApiTypes.STR, description="format=rttm, srt, vtt or txt"
            ),
            409: OpenApiResponse(description="job_not_finished, job_failed"),
            410: RESULT_EXPIRED,
        },
        summary="Download a finished job's result",
    )
    def get(self, request: Request, job_id: str) -> HttpResponse:
        query = ResultQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        fmt = query.validated_data["format"]
        job = _job(request, job_id)
        retention.check_result_kept(job)
        if job.status == JobStatus.FAILED:
            raise jobs.JobFailed("The job failed; it has no result.", details={"error": job.error})
        if job.result is None:
            raise jobs.JobNotFinished(
                f"The job is {job.status}; its result is not available.",
                details={"status": job.status, "error": job.error},
            )
        result = selectors.named_result(job.tenant_id, job.result)
        response = HttpResponse(render(str(job.id), result, fmt), content_type=FORMATS[fmt])
        response["Content-Disposition"] = f'attachment; filename="diarization-{job.id}.{fmt}"'
        return response
