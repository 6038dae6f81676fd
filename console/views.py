"""The web console: server-rendered pages over the same services the API uses.

Admins enroll, re-warm, erase and decide on held enrollments; auditors read. Every view that
changes something checks the role on the server (403), not only by hiding its button.
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
from django.views.decorators.http import require_http_methods

from audit import selectors as audit_selectors
from audit.api.serializers import AuditEventSerializer, ConsentRecordSerializer
from audit.checkpoints import CheckpointsUnavailable
from audit.exports import export_response, in_chunks
from audit.models import ErasureReason
from audit.services import record_event, verify_chain
from common.client_address import client_address
from common.errors import PreflightRejected, ServiceError
from consent.models import ConsentRecord
from consent.selectors import consent_record_bodies
from console.forms import AuditFilterForm, EnrollmentForm, ReviewForm, SpeakerFilterForm
from console.models import ConsoleMembership, ConsoleRole
from console.presenters import finding_explanations
from console.services import principal_for
from enrollment import reviews
from enrollment import selectors as enrollment_selectors
from enrollment import services as enrollment_services
from enrollment.models import EnrollmentStatus, Speaker
from nodes import selectors as node_selectors
from nodes.models import AssignmentState
from nodes.services import orchestrator
from operations.body_limits import accepts_body_up_to
from tenancy import permissions

View = Callable[..., HttpResponseBase]


def console_view(method: str, *methods: str, admin: bool = False) -> Callable[[View], View]:
    """Serves only the methods named (any other, HEAD and OPTIONS included, is a 405 before
    sign-in is asked); signed in, a member of a tenant and, for ``admin``, allowed to manage
    speakers; else 403."""

    def decorate(view: View) -> View:
        @require_http_methods([method, *methods])
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


def _consent_access(request: HttpRequest) -> permissions.ConsentFieldAccess:
    membership = _membership(request)
    return permissions.consent_field_access(
        principal_for(membership), console_auditor=membership.role == ConsoleRole.AUDITOR
    )


def _page(request: HttpRequest, items: Any, size: int = 50) -> Any:
    return Paginator(items, size).get_page(request.GET.get("page"))


# --- speakers ----------------------------------------------------------------------------------


@console_view("GET")
def speaker_list(request: HttpRequest) -> HttpResponse:
    form = SpeakerFilterForm(request.GET or None)
    status = form.cleaned_data.get("status") if form.is_valid() else None
    speakers = enrollment_selectors.speakers_for_tenant(_membership(request).tenant, status or None)
    if form.is_valid() and form.cleaned_data.get("q"):
        speakers = speakers.filter(display_name__icontains=form.cleaned_data["q"])
    speakers = speakers.annotate(
        warm_nodes=Count("node_assignments", filter=Q(node_assignments__state=AssignmentState.WARM))
    ).order_by("-created_at", "id")  # an aggregate drops Meta.ordering; pages need an order
    return render(
        request, "console/speakers.html", {"form": form, "page": _page(request, speakers)}
    )


@accepts_body_up_to(enrollment_services.enrollment_body_limit)
@console_view("GET", "POST", admin=True)
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
            client_ip=client_address(request.META),
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


@console_view("GET")
def speaker_detail(request: HttpRequest, speaker_id: str) -> HttpResponse:
    speaker = _speaker(request, speaker_id)
    first = ConsentRecord.objects.filter(speaker=speaker).order_by("recorded_at")[:1]
    consent = next(iter(consent_record_bodies(first, _consent_access(request))), None)
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


@console_view("GET")
def speaker_status(request: HttpRequest, speaker_id: str) -> JsonResponse:
    """What the speaker page polls while enrollment fans out."""
    return JsonResponse(_warm_state(_speaker(request, speaker_id)))


@console_view("POST", admin=True)
def speaker_rewarm(request: HttpRequest, speaker_id: str) -> HttpResponse:
    speaker = _speaker(request, speaker_id)
    try:
        orchestrator.rewarm(speaker, [], principal_for(_membership(request)).actor)
    except ServiceError as failure:
        return _refused(request, failure)
    return redirect("console:speaker", speaker_id=speaker.id)


def _refused(request: HttpRequest, failure: ServiceError) -> HttpResponse:
    return render(
        request, "console/forbidden.html", {"message": failure.message}, status=failure.status_code
    )


@console_view("GET", "POST", admin=True)
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


# --- the review queue --------------------------------------------------------------------------


@console_view("GET")
def review_queue(request: HttpRequest) -> HttpResponse:
    """Held enrollments with what held them, and past decisions; admins decide, auditors read."""
    tenant = _membership(request).tenant
    held = enrollment_selectors.speakers_for_tenant(tenant, EnrollmentStatus.NEEDS_REVIEW)
    queue = [
        {
            "speaker": speaker,
            "findings": finding_explanations(reviews.held_findings(speaker)),
            "consent_match_score": speaker.preflight.get("consent_match_score"),
            "expires_at": reviews.review_expires_at(speaker),
        }
        for speaker in held.order_by("created_at")
    ]
    decisions = [
        {"event": event, "note": reviews.decision_note(event)}
        for event in enrollment_selectors.review_decisions(tenant)[:50]
    ]
    return render(request, "console/reviews.html", {"queue": queue, "decisions": decisions})


@console_view("GET", admin=True)
def speaker_recording(request: HttpRequest, speaker_id: str, role: str) -> HttpResponse:
    """A held enrollment's recording, for its reviewer's browser to play."""
    try:
        recording = reviews.held_recording(_speaker(request, speaker_id), role)
    except ServiceError as failure:
        return _refused(request, failure)
    response = HttpResponse(recording.data, content_type=recording.media_type)
    response["Cache-Control"] = "no-store"  # biometric data: no copy left in caches
    response["Content-Disposition"] = "inline"
    return response


@console_view("POST", admin=True)
def speaker_review(request: HttpRequest, speaker_id: str) -> HttpResponse:
    speaker = _speaker(request, speaker_id)
    form = ReviewForm(request.POST)
    if not form.is_valid():
        message = "; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in form.errors.items())
        return render(request, "console/forbidden.html", {"message": message}, status=400)
    try:
        outcome = reviews.decide(
            speaker, principal=principal_for(_membership(request)), **form.cleaned_data
        )
    except ServiceError as failure:
        return _refused(request, failure)
    if outcome.erasure is not None:
        return redirect("console:erasure", audit_id=outcome.erasure.id)
    return redirect("console:reviews")


# --- nodes -------------------------------------------------------------------------------------


@console_view("GET")
def node_list(request: HttpRequest) -> HttpResponse:
    statuses = node_selectors.node_statuses(_membership(request).tenant)
    return render(request, "console/nodes.html", {"nodes": statuses})


# --- auditor pages -----------------------------------------------------------------------------


AUDIT_LISTS = {
    "consent-records": (audit_selectors.consent_records, ConsentRecordSerializer),
    "erasures": (audit_selectors.erasures, None),
    "audit-events": (audit_selectors.audit_events, AuditEventSerializer),
}


def _audit_filters(form: AuditFilterForm) -> dict[str, Any]:
    """The filters a valid form holds, as the selectors take them."""
    query = {k: v for k, v in form.cleaned_data.items() if v}
    if "speaker_id" in query:
        query["speaker_id"] = str(query["speaker_id"])
    return query


def _audit_rows(request: HttpRequest, name: str) -> tuple[AuditFilterForm, Any]:
    form = AuditFilterForm(request.GET or None)
    query = _audit_filters(form) if form.is_valid() else {}
    rows = AUDIT_LISTS[name][0](_membership(request).tenant, **query)
    return form, rows


@console_view("GET")
def consent_records(request: HttpRequest) -> HttpResponse:
    form, rows = _audit_rows(request, "consent-records")
    page = _page(request, rows)
    records = consent_record_bodies(page, _consent_access(request))
    return render(
        request, "console/consent_records.html", {"form": form, "page": page, "records": records}
    )


@console_view("GET")
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


@console_view("GET")
def erasure_detail(request: HttpRequest, audit_id: str) -> HttpResponse:
    return render(request, "console/erasure.html", {"receipt": _receipt(request, audit_id)})


@console_view("GET")
def erasure_status(request: HttpRequest, audit_id: str) -> JsonResponse:
    """What the receipt page polls while nodes confirm their evictions."""
    return JsonResponse(_receipt(request, audit_id))


@console_view("GET")
def audit_trail(request: HttpRequest) -> HttpResponse:
    form, rows = _audit_rows(request, "audit-events")
    # The whole trail is verified; the page tells the member's tenant only its own numbers.
    try:
        verdict: dict[str, Any] | None = verify_chain(_membership(request).tenant).for_tenant()
        unverifiable = ""
    except CheckpointsUnavailable as exc:
        verdict, unverifiable = None, exc.message
    return render(
        request,
        "console/audit.html",
        {
            "form": form,
            "page": _page(request, rows),
            "verdict": verdict,
            "unverifiable": unverifiable,
        },
    )


@console_view("GET")
def audit_export(request: HttpRequest, name: str, fmt: str) -> HttpResponseBase:
    if name not in AUDIT_LISTS or fmt not in ("csv", "jsonl"):
        raise Http404("No such export.")
    form = AuditFilterForm(request.GET)
    if not form.is_valid():
        # Not everything instead of what was asked for; and nothing unchecked reaches the trail.
        return render(request, "console/export_refused.html", {"form": form}, status=400)
    filters = _audit_filters(form)
    membership = _membership(request)
    rows = AUDIT_LISTS[name][0](membership.tenant, **filters)
    # Only the form's validated fields are recorded, never the raw query string: the trail is
    # immutable, so free text there would be permanent.
    record_event(
        "audit.exported",
        actor=principal_for(membership).actor,
        tenant=membership.tenant,
        details={
            "export": name,
            "format": fmt,
            "filters": {k: str(v) for k, v in filters.items()},
        },
    )
    serializer = AUDIT_LISTS[name][1]
    access = _consent_access(request)

    def serialize(chunk: list[Any]) -> list[dict[str, Any]]:
        if serializer is None:
            return [audit_selectors.erasure_receipt(erasure) for erasure in chunk]
        if name == "consent-records":
            chunk = consent_record_bodies(chunk, access)
        return list(serializer(chunk, many=True).data)

    return export_response(
        (row for chunk in in_chunks(rows) for row in serialize(chunk)), fmt, name
    )
