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
from common.client_address import client_address, limit_subject
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


def current_principal(principal: ApiPrincipal) -> ApiPrincipal | None:
    """The principal's key as it stands now: None once it is revoked (or gone), else its
    current scopes; for a session that outlives the request that authenticated it."""
    key = ApiKey.objects.select_related("tenant").filter(id=principal.api_key.id).first()
    if key is None or key.revoked_at is not None:
        return None
    return ApiPrincipal(api_key=key, tenant=key.tenant, scopes=frozenset(key.scopes))


class AuthenticationThrottled(Exception):
    def __init__(self, retry_after_s: int, message: str):
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.message = message


@dataclass(frozen=True)
class FailedAuthentications:
    """The failed-authentication limits one attempt falls under, checked before the key is:
    its key's public prefix (AUTH_FAILURE_KEY_LIMIT), so that guessing one key's secret stops
    there without locking out other keys, and its client address (AUTH_FAILURE_LIMIT, looser,
    since one address can stand for a whole NAT or proxy), so that trying prefix after prefix
    stops too."""

    prefix: str | None
    address: str

    @classmethod
    def of(cls, raw_key: str, address: str | None) -> FailedAuthentications:
        return cls(prefix=prefix_of(raw_key), address=limit_subject(address))

    def _limits(self) -> list[tuple[str, int, str]]:
        limits = [(f"auth-failures:address:{self.address}", settings.AUTH_FAILURE_LIMIT, "address")]
        if self.prefix is not None:
            limits.append(
                (f"auth-failures:key:{self.prefix}", settings.AUTH_FAILURE_KEY_LIMIT, "key")
            )
        return limits

    def check(self) -> None:
        """Raises AuthenticationThrottled while either limit is used up."""
        for name, limit, what in self._limits():
            try:
                rate_limits.check(name, limit, settings.AUTH_FAILURE_WINDOW_S)
            except rate_limits.RateLimited as limited:
                raise AuthenticationThrottled(
                    limited.retry_after_s,
                    f"Too many failed authentications with this {what}; "
                    f"retry in {limited.retry_after_s} s.",
                ) from limited

    def count(self) -> None:
        for name, limit, _ in self._limits():
            with contextlib.suppress(rate_limits.RateLimited):
                rate_limits.consume(name, limit, settings.AUTH_FAILURE_WINDOW_S)


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[ApiPrincipal, ApiKey] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, raw_key = header.partition(" ")
        raw_key = raw_key.strip() if scheme.lower() == "bearer" else ""
        failures = FailedAuthentications.of(raw_key, client_address(request.META))
        try:
            failures.check()
        except AuthenticationThrottled as throttled:
            raise exceptions.Throttled(
                wait=throttled.retry_after_s, detail=throttled.message
            ) from throttled
        key = resolve_api_key(raw_key) if raw_key else None
        if key is None:
            failures.count()
            if not raw_key:
                raise exceptions.AuthenticationFailed(
                    "Authorization header must be 'Bearer <api key>'."
                )
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        return ApiPrincipal(api_key=key, tenant=key.tenant, scopes=frozenset(key.scopes)), key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="scaiecho"'
