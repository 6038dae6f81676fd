"""Bearer API-key authentication: which tenant and key a request comes from."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from dataclasses import dataclass

from django.conf import settings
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from common import rate_limits
from tenancy.models import ApiKey, Tenant

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
