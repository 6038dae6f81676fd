"""Operator workflows that span tenancy and the audit trail."""

from __future__ import annotations

from django.db import transaction

from audit.services import record_event
from tenancy.models import ApiKey, Tenant
from tenancy.services import new_api_key


def create_api_key(tenant: Tenant, scopes: list[str], name: str = "") -> tuple[ApiKey, str]:
    """Makes a key and records it in the audit trail; returns the row and the raw key, which
    is shown once and never stored."""
    with transaction.atomic():
        key, raw_key = new_api_key(tenant, scopes, name)
        record_event(
            "api_key.created",
            actor="operator",
            tenant=tenant,
            details={"prefix": key.prefix, "scopes": key.scopes, "name": name},
        )
    return key, raw_key
