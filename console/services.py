"""Console users: who they are, which tenant they act for, with which rights."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from common.errors import ServiceError
from console.models import ConsoleMembership, ConsoleRole
from operations.services import create_api_key
from tenancy.auth import ApiPrincipal
from tenancy.models import Scope, Tenant

ROLE_SCOPES = {
    ConsoleRole.ADMIN: [Scope.ENROLL.value, Scope.AUDIT.value],
    ConsoleRole.AUDITOR: [Scope.AUDIT.value],
}


@dataclass(frozen=True)
class ConsolePrincipal(ApiPrincipal):
    """A signed-in console user, acting through the services like an API key would."""

    username: str = ""

    @property
    def actor(self) -> str:
        return f"console:{self.username}"


def create_console_user(
    tenant: Tenant, username: str, role: str, password: str | None = None
) -> tuple[AbstractBaseUser, str]:
    """Makes the user and its membership; returns the user and the password (generated
    when none is given, so it can be shown once)."""
    if role not in ConsoleRole.values:
        raise ServiceError(f"Unknown role {role!r}; use admin or auditor.")
    user_model = get_user_model()
    if user_model.objects.filter(username=username).exists():
        raise ServiceError(f"A user {username!r} already exists.")
    password = password or secrets.token_urlsafe(12)
    with transaction.atomic():
        user = user_model.objects.create_user(username=username, password=password)
        key, _ = create_api_key(tenant, ROLE_SCOPES[ConsoleRole(role)], name=f"console:{username}")
        ConsoleMembership.objects.create(user=user, tenant=tenant, role=role, api_key=key)
    return user, password


def principal_for(membership: ConsoleMembership) -> ConsolePrincipal:
    return ConsolePrincipal(
        api_key=membership.api_key,
        tenant=membership.tenant,
        scopes=frozenset(membership.api_key.scopes),
        username=membership.user.get_username(),
    )
