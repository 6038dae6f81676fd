"""Tenants and API keys: creation and the tenant's webhook signing secret."""

from __future__ import annotations

import secrets

from common.errors import ServiceError
from tenancy.auth import KEY_PREFIX_LENGTH, hash_api_key
from tenancy.models import ALL_SCOPES, ApiKey, Tenant


def create_tenant(slug: str, name: str = "") -> Tenant:
    tenant, _ = Tenant.objects.get_or_create(slug=slug, defaults={"name": name or slug})
    return tenant


def webhook_secret(tenant: Tenant, *, rotate: bool = False) -> str:
    """The secret that signs the tenant's webhook deliveries, made on first use."""
    if tenant.webhook_secret and not rotate:
        return tenant.webhook_secret
    fresh = f"whsec_{secrets.token_urlsafe(32)}"
    updated = Tenant.objects.filter(id=tenant.id)
    if not rotate:
        # Two first uses at once must agree on one secret.
        updated = updated.filter(webhook_secret="")
    updated.update(webhook_secret=fresh)
    secret = Tenant.objects.values_list("webhook_secret", flat=True).get(id=tenant.id)
    tenant.webhook_secret = secret
    return secret


def new_api_key(tenant: Tenant, scopes: list[str], name: str = "") -> tuple[ApiKey, str]:
    """Returns the key row and the raw key, which is shown once and never stored.

    Not audited by itself: ``operations.services.create_api_key`` is the audited way in.
    """
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if unknown or not scopes:
        raise ServiceError(
            f"unknown scopes {unknown}" if unknown else "at least one scope is required",
            details={"valid_scopes": ALL_SCOPES},
        )
    prefix = secrets.token_hex(KEY_PREFIX_LENGTH // 2)
    raw_key = f"se_{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey.objects.create(
        tenant=tenant,
        name=name,
        prefix=prefix,
        key_sha256=hash_api_key(raw_key),
        scopes=sorted(set(scopes)),
    )
    return key, raw_key
