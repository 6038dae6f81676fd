from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from diarization import selectors
from diarization.api.serializers import (
    DiarizationJobSerializer,
    DiarizeRequestSerializer,
    ResultQuerySerializer,
)
from diarization.formats import FORMATS, render
from diarization.models import DiarizationJob, JobStatus
from diarization.services import jobs, tuning
from tenancy.permissions import DIARIZE, principal_of


def _job(request: Request, job_id: str) -> DiarizationJob:
    job = selectors.job_for_tenant(principal_of(request).tenant, job_id)
    if job is None:
        raise NotFound("No such diarization job.")
    return job


class DiarizeView(APIView):
    parser_classes = [MultiPartParser, FormParser]
    required_scopes = {"POST": [DIARIZE]}

    @staticmethod
    def max_body_bytes() -> int:
        # Enforced as the body arrives, by operations.body_limits.
        return tuning.diarize_body_limit()

    @extend_schema(
        request={"multipart/form-data": DiarizeRequestSerializer},
        responses={
            202: DiarizationJobSerializer,
            413: OpenApiResponse(description="upload_too_large"),
            422: OpenApiResponse(description="audio_unusable"),
        },
        summary="Submit a diarization job",
    )
    def post(self, request: Request) -> Response:
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


class DiarizeJobView(APIView):
    required_scopes = {"GET": [DIARIZE]}

    @extend_schema(responses=DiarizationJobSerializer, summary="A diarization job and its result")
    def get(self, request: Request, job_id: str) -> Response:
        return Response({"data": selectors.job_body(_job(request, job_id))})


class DiarizeResultView(APIView):
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
            409: OpenApiResponse(description="job_not_finished"),
        },
        summary="Download a finished job's result",
    )
    def get(self, request: Request, job_id: str) -> HttpResponse:
        query = ResultQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        fmt = query.validated_data["format"]
        job = _job(request, job_id)
        if job.status == JobStatus.FAILED:
            raise jobs.JobFailed("The job failed; it has no result.", details={"error": job.error})
        if job.result is None:
            raise jobs.JobNotFinished(
                f"The job is {job.status}; its result is not available.",
                details={"status": job.status, "error": job.error},
            )
        response = HttpResponse(render(str(job.id), job.result, fmt), content_type=FORMATS[fmt])
        response["Content-Disposition"] = f'attachment; filename="diarization-{job.id}.{fmt}"'
        return response
