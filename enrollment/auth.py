"""Bearer API-key authentication and per-view scope checks."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from enrollment.models import ApiKey, Tenant
from operations import rate_limits

KEY_PREFIX_LENGTH = 12


def hash_api_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def prefix_of(raw_key: str) -> str | None:
    # Keys look like "se_<prefix>_<secret>".
    parts = raw_key.split("_", 2)
    if len(parts) != 3 or parts[0] != "se" or len(parts[1]) != KEY_PREFIX_LENGTH:
        return None
    return parts[1]


@dataclass(frozen=True)
class ApiPrincipal:
    """Who is calling: one tenant, through one key, holding some scopes."""

    api_key: ApiKey
    tenant: Tenant
    scopes: frozenset[str]

    is_authenticated = True

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    @property
    def actor(self) -> str:
        return f"api-key:{self.api_key.prefix}"


def resolve_api_key(raw_key: str) -> ApiKey | None:
    prefix = prefix_of(raw_key)
    if prefix is None:
        return None
    key = ApiKey.objects.select_related("tenant").filter(prefix=prefix).first()
    if key is None or key.revoked_at is not None:
        return None
    if not hmac.compare_digest(key.key_sha256, hash_api_key(raw_key)):
        return None
    return key


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[ApiPrincipal, ApiKey] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        # Guessing keys from one address is cut off after AUTH_FAILURE_LIMIT misses a window.
        failures = f"auth-failures:{request.META.get('REMOTE_ADDR', 'unknown')}"
        window = settings.AUTH_FAILURE_WINDOW_S
        try:
            rate_limits.check(failures, settings.AUTH_FAILURE_LIMIT, window)
        except rate_limits.RateLimited as limited:
            raise exceptions.Throttled(
                wait=limited.retry_after_s,
                detail="Too many failed authentications from this address.",
            ) from limited
        scheme, _, raw_key = header.partition(" ")
        key = resolve_api_key(raw_key.strip()) if scheme.lower() == "bearer" else None
        if key is None:
            with contextlib.suppress(rate_limits.RateLimited):
                rate_limits.consume(failures, settings.AUTH_FAILURE_LIMIT, window)
            if scheme.lower() != "bearer" or not raw_key.strip():
                raise exceptions.AuthenticationFailed(
                    "Authorization header must be 'Bearer <api key>'."
                )
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        return ApiPrincipal(api_key=key, tenant=key.tenant, scopes=frozenset(key.scopes)), key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="scaiecho"'


class MissingScope(exceptions.PermissionDenied):
    default_code = "missing_scope"

    def __init__(self, detail: str, required_scopes: list[list[str]]):
        super().__init__(detail)
        self.required_scopes = required_scopes


class HasRequiredScopes(BasePermission):
    """Checks ``view.required_scopes[METHOD]``: a list of alternatives, each a tuple of scopes.

    ``{"GET": [("scaiecho:enroll",), ("scaiecho:audit",)]}`` means enroll OR audit;
    ``{"POST": [("scaiecho:transcribe", "scaiecho:diarize")]}`` means both.
    """

    def has_permission(self, request: Request, view: Any) -> bool:
        principal = request.user
        if not isinstance(principal, ApiPrincipal):
            raise exceptions.NotAuthenticated("Missing 'Authorization: Bearer <api key>' header.")
        alternatives = getattr(view, "required_scopes", {}).get(request.method, [])
        if not alternatives:
            return True
        for needed in alternatives:
            if all(principal.has_scope(scope) for scope in needed):
                return True
        wanted = " or ".join(" + ".join(needed) for needed in alternatives)
        raise MissingScope(
            f"This API key lacks the scope {wanted}.",
            required_scopes=[list(needed) for needed in alternatives],
        )
