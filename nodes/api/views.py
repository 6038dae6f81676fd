from __future__ import annotations

from dataclasses import asdict

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from enrollment import selectors as enrollment_selectors
from enrollment.models import Speaker
from nodes import selectors
from nodes.api.serializers import NodeStatusSerializer, WarmRequestSerializer, WarmViewSerializer
from nodes.services import orchestrator
from tenancy.api_views import ScopedView
from tenancy.permissions import AUDIT, ENROLL, principal_of


def tenant_speaker(request: Request, speaker_id: str) -> Speaker:
    speaker = enrollment_selectors.speaker_for_tenant(principal_of(request).tenant, speaker_id)
    if speaker is None:
        raise NotFound("No such speaker.")
    return speaker


def warm_body(speaker: Speaker) -> dict[str, object]:
    view = orchestrator.warm_view(speaker)
    return {
        **asdict(view),
        "assignments": selectors.assignments_for_speaker(str(speaker.id)),
    }


class SpeakerWarmView(ScopedView):
    parser_classes = [JSONParser]
    required_scopes = {"GET": [ENROLL], "POST": [ENROLL]}

    @extend_schema(responses=WarmViewSerializer, summary="Which nodes hold the speaker")
    def get(self, request: Request, speaker_id: str) -> Response:
        speaker = tenant_speaker(request, speaker_id)
        return Response({"data": WarmViewSerializer(warm_body(speaker)).data})

    @extend_schema(
        request=WarmRequestSerializer,
        responses={202: WarmViewSerializer},
        summary="Re-enroll on every candidate node or a subset",
    )
    def post(self, request: Request, speaker_id: str) -> Response:
        speaker = tenant_speaker(request, speaker_id)
        form = WarmRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        scheduled = orchestrator.rewarm(
            speaker, form.validated_data["node_ids"], principal_of(request).actor
        )
        body = WarmViewSerializer(warm_body(speaker)).data
        return Response(
            {"data": {"scheduled_node_ids": scheduled, **body}}, status=status.HTTP_202_ACCEPTED
        )


class NodeListView(ScopedView):
    required_scopes = {"GET": [ENROLL, AUDIT]}

    @extend_schema(responses=NodeStatusSerializer(many=True), summary="Pyannote nodes")
    def get(self, request: Request) -> Response:
        statuses = selectors.node_statuses(principal_of(request).tenant)
        return Response({"data": NodeStatusSerializer(statuses, many=True).data})
