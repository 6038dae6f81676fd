from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from audit import selectors
from audit.api.serializers import (
    AuditEventSerializer,
    AuditQuerySerializer,
    ChainVerdictSerializer,
    ConsentRecordSerializer,
    ErasureReceiptSerializer,
)
from audit.exports import export_response, in_chunks
from audit.services import record_event, verify_chain
from common.pagination import DataPagination
from consent.selectors import consent_record_bodies
from tenancy import permissions
from tenancy.api_views import ScopedView
from tenancy.permissions import AUDIT, ENROLL, principal_of


class AuditListView(ScopedView):
    """A filtered, paginated list that auditors can also export as CSV or JSON Lines."""

    required_scopes = {"GET": [AUDIT]}
    export_name = ""

    def rows(self, request: Request, query: dict[str, Any]) -> Any:
        raise NotImplementedError

    def serialize(self, items: Any) -> list[dict[str, Any]]:
        raise NotImplementedError

    def get(self, request: Request) -> Any:
        form = AuditQuerySerializer(data=request.query_params)
        form.is_valid(raise_exception=True)
        query = dict(form.validated_data)
        fmt = query.pop("export", None)
        principal = principal_of(request)
        rows = self.rows(request, {k: str(v) if k == "speaker_id" else v for k, v in query.items()})
        if fmt and request.method == "HEAD":
            # The export's headers only: no row leaves, so nothing is recorded as exported.
            return export_response(iter(()), fmt, self.export_name)
        if fmt:
            record_event(
                "audit.exported",
                actor=principal.actor,
                tenant=principal.tenant,
                details={
                    "export": self.export_name,
                    "format": fmt,
                    "filters": {k: str(v) for k, v in query.items()},
                },
            )
            serialize: Callable[[Any], list[dict[str, Any]]] = self.serialize
            return export_response(
                (row for chunk in in_chunks(rows) for row in serialize(chunk)),
                fmt,
                self.export_name,
            )
        paginator = DataPagination()
        page: list[Any] | None = paginator.paginate_queryset(rows, request, view=self)
        return paginator.get_paginated_response(self.serialize(page))


class ConsentRecordListView(AuditListView):
    export_name = "consent-records"

    @extend_schema(
        parameters=[AuditQuerySerializer],
        responses=ConsentRecordSerializer(many=True),
        summary="Consent records (auditors)",
    )
    def get(self, request: Request) -> Any:
        return super().get(request)

    def rows(self, request: Request, query: dict[str, Any]) -> Any:
        return selectors.consent_records(principal_of(request).tenant, **query)

    def serialize(self, items: Any) -> list[dict[str, Any]]:
        access = permissions.consent_field_access(principal_of(self.request))
        return list(ConsentRecordSerializer(consent_record_bodies(items, access), many=True).data)


class ErasureListView(AuditListView):
    export_name = "erasures"

    @extend_schema(
        parameters=[AuditQuerySerializer],
        responses=ErasureReceiptSerializer(many=True),
        summary="Erasure receipts (auditors)",
    )
    def get(self, request: Request) -> Any:
        return super().get(request)

    def rows(self, request: Request, query: dict[str, Any]) -> Any:
        return selectors.erasures(principal_of(request).tenant, **query)

    def serialize(self, items: Any) -> list[dict[str, Any]]:
        return [selectors.erasure_receipt(erasure) for erasure in items]


class AuditEventListView(AuditListView):
    export_name = "audit-events"

    @extend_schema(
        parameters=[AuditQuerySerializer],
        responses=AuditEventSerializer(many=True),
        summary="The audit trail (auditors)",
    )
    def get(self, request: Request) -> Any:
        return super().get(request)

    def rows(self, request: Request, query: dict[str, Any]) -> Any:
        return selectors.audit_events(principal_of(request).tenant, **query)

    def serialize(self, items: Any) -> list[dict[str, Any]]:
        return list(AuditEventSerializer(items, many=True).data)


class ErasureDetailView(ScopedView):
    required_scopes = {"GET": [ENROLL, AUDIT]}

    @extend_schema(responses=ErasureReceiptSerializer, summary="An erasure receipt")
    def get(self, request: Request, audit_id: str) -> Response:
        erasure = selectors.erasure_for_tenant(principal_of(request).tenant, audit_id)
        if erasure is None:
            raise NotFound("No such erasure.")
        return Response({"data": selectors.erasure_receipt(erasure)})


class AuditVerifyView(ScopedView):
    required_scopes = {"GET": [AUDIT]}

    @extend_schema(
        responses=ChainVerdictSerializer,
        summary="Verify the audit trail against its signed checkpoints",
    )
    def get(self, request: Request) -> Response:
        verdict = verify_chain(principal_of(request).tenant)
        return Response({"data": verdict.for_tenant()})
