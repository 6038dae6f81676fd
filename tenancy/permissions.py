"""Who may do what: the one place that turns a principal's scopes into permissions.

The API's views derive from ``tenancy.api_views.ScopedView`` and declare ``required_scopes``
per method from the alternatives below; ``HasRequiredScopes`` checks them and fails closed: a
method a view serves but does not declare is refused, HEAD needs what GET needs, OPTIONS is not
served. The console and the streaming route ask ``allows`` with the same alternatives.
Enrollment is biometric capture: ``scaiecho:enroll`` is never implied by another scope.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rest_framework import exceptions
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from common.api_errors import MissingScope
from tenancy.auth import ApiPrincipal
from tenancy.models import Scope

# Each is one alternative: every scope in it is needed.
ENROLL = (Scope.ENROLL.value,)
AUDIT = (Scope.AUDIT.value,)
TRANSCRIBE = (Scope.TRANSCRIBE.value,)
DIARIZE = (Scope.TRANSCRIBE.value, Scope.DIARIZE.value)

ScopeAlternatives = list[tuple[str, ...]]

# What a principal may do, as alternatives of scopes.
MANAGE_SPEAKERS: ScopeAlternatives = [ENROLL]
READ_SPEAKERS: ScopeAlternatives = [ENROLL, AUDIT]
READ_AUDIT_TRAIL: ScopeAlternatives = [AUDIT]
STREAM: ScopeAlternatives = [TRANSCRIBE]
LABEL_SPEAKERS: ScopeAlternatives = [DIARIZE]


def allows(principal: ApiPrincipal, alternatives: ScopeAlternatives) -> bool:
    """True when the principal holds every scope of at least one alternative."""
    return any(all(principal.has_scope(scope) for scope in needed) for needed in alternatives)


# A consent record's personal fields, before erasure (after it nobody sees them): anyone who
# may read speakers sees its purpose, timestamps and hashes; the consenting person's name and
# the consent text need the audit scope; the client's address is for auditors only.
READ_CONSENT_IDENTITY: ScopeAlternatives = [AUDIT]
READ_CONSENT_CLIENT_ADDRESS: ScopeAlternatives = [AUDIT]


@dataclass(frozen=True)
class ConsentFieldAccess:
    """Which of a consent record's personal fields a principal may see."""

    identity: bool = False  # the full name and the consent text
    client_address: bool = False

    @property
    def any(self) -> bool:
        return self.identity or self.client_address


def consent_field_access(
    principal: ApiPrincipal, *, console_auditor: bool | None = None
) -> ConsentFieldAccess:
    """What of a consent record ``principal`` may see. ``console_auditor``: for a console user,
    whether they sign in as an auditor; console admins hold the audit scope too (to read the
    trail), and see the name and text but not the address. None for an API key, whose audit
    scope alone decides."""
    may_audit = allows(principal, READ_CONSENT_IDENTITY)
    return ConsentFieldAccess(
        identity=may_audit,
        client_address=allows(principal, READ_CONSENT_CLIENT_ADDRESS)
        and console_auditor is not False,
    )


def principal_of(request: Request) -> ApiPrincipal:
    assert isinstance(request.user, ApiPrincipal)
    return request.user


class HasRequiredScopes(BasePermission):
    """Checks ``view.required_scopes[METHOD]``: a list of alternatives, each a tuple of scopes.

    ``{"GET": [("scaiecho:enroll",), ("scaiecho:audit",)]}`` means enroll OR audit;
    ``{"POST": [("scaiecho:transcribe", "scaiecho:diarize")]}`` means both. A method the view
    has no handler for is a 405; one it serves without declaring it (or a view that declares
    nothing) is a 403 for every key: a missing declaration never means "anyone".
    """

    def has_permission(self, request: Request, view: Any) -> bool:
        method = request.method or ""
        if method.lower() not in view.http_method_names or not hasattr(view, method.lower()):
            # Which methods a route serves is public (the OpenAPI schema); no need for a key.
            raise exceptions.MethodNotAllowed(method)
        principal = request.user
        if not isinstance(principal, ApiPrincipal):
            raise exceptions.NotAuthenticated("Missing 'Authorization: Bearer <api key>' header.")
        # Django answers HEAD with the GET handler, so it needs what GET needs.
        declared = getattr(view, "required_scopes", None) or {}
        alternatives = declared.get("GET" if method == "HEAD" else method)
        if not alternatives:
            raise exceptions.PermissionDenied(f"This route declares no scopes for {method}.")
        if allows(principal, alternatives):
            return True
        wanted = " or ".join(" + ".join(needed) for needed in alternatives)
        raise MissingScope(
            f"This API key lacks the scope {wanted}.",
            required_scopes=[list(needed) for needed in alternatives],
        )
