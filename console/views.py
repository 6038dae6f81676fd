"""The web console: server-rendered pages over the same services the API uses.

Admins enroll, re-warm and erase; auditors read. Every view that changes something checks
the role on the server (403), not only by hiding its button.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from audit import selectors as audit_selectors
from audit.api.serializers import AuditEventSerializer, ConsentRecordSerializer
from audit.exports import export_response, in_chunks
from audit.models import ErasureReason
from audit.services import record_event, verify_chain
from common.errors import PreflightRejected, ServiceError
from consent.models import ConsentRecord
from console.forms import AuditFilterForm, EnrollmentForm, SpeakerFilterForm
from console.models import ConsoleMembership
from console.presenters import finding_explanations
from console.services import principal_for
from enrollment import selectors as enrollment_selectors
from enrollment import services as enrollment_services
from enrollment.models import EnrollmentStatus, Speaker
from nodes import selectors as node_selectors
from nodes.models import AssignmentState
from nodes.services import orchestrator
from operations.body_limits import accepts_body_up_to
from tenancy import permissions

View = Callable[..., HttpResponseBase]


def console_view(*, admin: bool = False) -> Callable[[View], View]:
    """Signed in, a member of a tenant and, for ``admin``, allowed to manage speakers; else 403."""

    def decorate(view: View) -> View:
        @login_required
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            membership = (
                ConsoleMembership.objects.select_related("tenant", "api_key", "user")
                .filter(user_id=request.user.pk or 0)
                .first()
            )
            if membership is None:
                return _forbidden(request, "This account belongs to no tenant.")
            # The console asks the same permission module as the API, with the member's key.
            may_manage = permissions.allows(principal_for(membership), permissions.MANAGE_SPEAKERS)
            if admin and not may_manage:
                return _forbidden(request, "Auditors can read but not change anything.")
            request.membership = membership  # type: ignore[attr-defined]
            request.may_manage_speakers = may_manage  # type: ignore[attr-defined]
            return view(request, *args, **kwargs)

        return wrapper

    return decorate


def _forbidden(request: HttpRequest, message: str) -> HttpResponse:
    return render(request, "console/forbidden.html", {"message": message}, status=403)


def _membership(request: HttpRequest) -> ConsoleMembership:
    membership: ConsoleMembership = request.membership  # type: ignore[attr-defined]
    return membership


def _speaker(request: HttpRequest, speaker_id: str) -> Speaker:
    speaker = enrollment_selectors.speaker_for_tenant(_membership(request).tenant, speaker_id)
    if speaker is None:
        raise Http404("No such speaker.")
    return speaker


def _page(request: HttpRequest, items: Any, size: int = 50) -> Any:
    return Paginator(items, size).get_page(request.GET.get("page"))


# --- speakers ----------------------------------------------------------------------------------


@require_GET
@console_view()
def speaker_list(request: HttpRequest) -> HttpResponse:
    form = SpeakerFilterForm(request.GET or None)
    status = form.cleaned_data.get("status") if form.is_valid() else None
    speakers = enrollment_selectors.speakers_for_tenant(_membership(request).tenant, status or None)
    if form.is_valid() and form.cleaned_data.get("q"):
        speakers = speakers.filter(display_name__icontains=form.cleaned_data["q"])
    speakers = speakers.annotate(
        warm_nodes=Count("node_assignments", filter=Q(node_assignments__state=AssignmentState.WARM))
    )
    return render(
        request, "console/speakers.html", {"form": form, "page": _page(request, speakers)}
    )


@accepts_body_up_to(enrollment_services.enrollment_body_limit)
@require_http_methods(["GET", "POST"])
@console_view(admin=True)
def speaker_enroll(request: HttpRequest) -> HttpResponse:
    form = EnrollmentForm(request.POST or None, request.FILES or None)
    if request.method == "GET" or not form.is_valid():
        return render(
            request,
            "console/enroll.html",
            {"form": form},
            status=200 if request.method == "GET" else 400,
        )
    fields = dict(form.cleaned_data)
    reference, consent = fields.pop("reference"), fields.pop("consent")
    try:
        outcome = enrollment_services.enroll_speaker(
            principal=principal_for(_membership(request)),
            profile=enrollment_services.SpeakerProfile(**fields),
            reference=reference,
            consent=consent,
            client_ip=request.META.get("REMOTE_ADDR"),
        )
    except PreflightRejected as rejected:
        findings = finding_explanations(rejected.details.get("findings", []))
        return render(
            request,
            "console/enroll.html",
            {"form": form, "rejected": rejected.message, "findings": findings},
            status=422,
        )
    except ServiceError as failure:
        return render(
            request,
            "console/enroll.html",
            {"form": form, "error": failure.message},
            status=failure.status_code,
        )
    return redirect("console:speaker", speaker_id=outcome.speaker.id)


@require_GET
@console_view()
def speaker_detail(request: HttpRequest, speaker_id: str) -> HttpResponse:
    speaker = _speaker(request, speaker_id)
    consent = ConsentRecord.objects.filter(speaker=speaker).order_by("recorded_at").first()
    erasure = (
        getattr(speaker, "erasure", None)
        if speaker.enrollment_status == EnrollmentStatus.EVICTED
        else None
    )
    return render(
        request,
        "console/speaker.html",
        {
            "speaker": speaker,
            "consent": consent,
            "erasure": erasure,
            "findings": finding_explanations(speaker.preflight.get("findings", [])),
            "nodes": _warm_state(speaker),
        },
    )


def _warm_state(speaker: Speaker) -> dict[str, Any]:
    view = orchestrator.warm_view(speaker)
    return {
        "status": speaker.enrollment_status,
        "warm_node_ids": view.warm_node_ids,
        "candidate_node_ids": view.candidate_node_ids,
        "stale_node_ids": view.stale_node_ids,
    }


@require_GET
@console_view()
def speaker_status(request: HttpRequest, speaker_id: str) -> JsonResponse:
    """What the speaker page polls while enrollment fans out."""
    return JsonResponse(_warm_state(_speaker(request, speaker_id)))


@require_POST
@console_view(admin=True)
def speaker_rewarm(request: HttpRequest, speaker_id: str) -> HttpResponse:
    speaker = _speaker(request, speaker_id)
    try:
        orchestrator.rewarm(speaker, [], principal_for(_membership(request)).actor)
    except ServiceError as failure:
        return render(request, "console/forbidden.html", {"message": failure.message}, status=400)
    return redirect("console:speaker", speaker_id=speaker.id)


@require_http_methods(["GET", "POST"])
@console_view(admin=True)
def speaker_erase(request: HttpRequest, speaker_id: str) -> HttpResponse:
    speaker = _speaker(request, speaker_id)
    if request.method == "GET":
        return render(request, "console/erase_confirm.html", {"speaker": speaker})
    outcome = enrollment_services.erase_speaker(
        speaker,
        reason=ErasureReason.REQUESTED,
        actor=principal_for(_membership(request)).actor,
    )
    return redirect("console:erasure", audit_id=outcome.erasure.id)


# --- nodes -------------------------------------------------------------------------------------


@require_GET
@console_view()
def node_list(request: HttpRequest) -> HttpResponse:
    statuses = node_selectors.node_statuses(_membership(request).tenant)
    return render(request, "console/nodes.html", {"nodes": statuses})


# --- auditor pages -----------------------------------------------------------------------------


AUDIT_LISTS = {
    "consent-records": (audit_selectors.consent_records, ConsentRecordSerializer),
    "erasures": (audit_selectors.erasures, None),
    "audit-events": (audit_selectors.audit_events, AuditEventSerializer),
}


def _audit_rows(request: HttpRequest, name: str) -> tuple[AuditFilterForm, Any]:
    form = AuditFilterForm(request.GET or None)
    query = {k: v for k, v in form.cleaned_data.items() if v} if form.is_valid() else {}
    if "speaker_id" in query:
        query["speaker_id"] = str(query["speaker_id"])
    rows = AUDIT_LISTS[name][0](_membership(request).tenant, **query)
    return form, rows


@require_GET
@console_view()
def consent_records(request: HttpRequest) -> HttpResponse:
    form, rows = _audit_rows(request, "consent-records")
    return render(
        request, "console/consent_records.html", {"form": form, "page": _page(request, rows)}
    )


@require_GET
@console_view()
def erasures(request: HttpRequest) -> HttpResponse:
    form, rows = _audit_rows(request, "erasures")
    page = _page(request, rows)
    receipts = [audit_selectors.erasure_receipt(erasure) for erasure in page]
    return render(
        request, "console/erasures.html", {"form": form, "page": page, "receipts": receipts}
    )


def _receipt(request: HttpRequest, audit_id: str) -> dict[str, Any]:
    erasure = audit_selectors.erasure_for_tenant(_membership(request).tenant, audit_id)
    if erasure is None:
        raise Http404("No such erasure.")
    # The speaker's name was erased with it: the receipt names the speaker by id.
    return audit_selectors.erasure_receipt(erasure)


@require_GET
@console_view()
def erasure_detail(request: HttpRequest, audit_id: str) -> HttpResponse:
    return render(request, "console/erasure.html", {"receipt": _receipt(request, audit_id)})


@require_GET
@console_view()
def erasure_status(request: HttpRequest, audit_id: str) -> JsonResponse:
    """What the receipt page polls while nodes confirm their evictions."""
    return JsonResponse(_receipt(request, audit_id))


@require_GET
@console_view()
def audit_trail(request: HttpRequest) -> HttpResponse:
    form, rows = _audit_rows(request, "audit-events")
    return render(
        request,
        "console/audit.html",
        {"form": form, "page": _page(request, rows), "verdict": verify_chain()},
    )


@require_GET
@console_view()
def audit_export(request: HttpRequest, name: str, fmt: str) -> HttpResponseBase:
    if name not in AUDIT_LISTS or fmt not in ("csv", "jsonl"):
        raise Http404("No such export.")
    form, rows = _audit_rows(request, name)
    membership = _membership(request)
    record_event(
        "audit.exported",
        actor=principal_for(membership).actor,
        tenant=membership.tenant,
        details={"export": name, "format": fmt, "filters": dict(request.GET.items())},
    )
    serializer = AUDIT_LISTS[name][1]

    def serialize(chunk: list[Any]) -> list[dict[str, Any]]:
        if serializer is None:
            return [audit_selectors.erasure_receipt(erasure) for erasure in chunk]
        return list(serializer(chunk, many=True).data)

    return export_response(
        (row for chunk in in_chunks(rows) for row in serialize(chunk)), fmt, name
    )
