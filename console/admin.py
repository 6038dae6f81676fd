"""The Django admin for operators: tenants, keys and console users; the immutable tables
are shown read-only (the database refuses changes to them anyway)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from audit.models import AuditEvent, ErasureAudit, ErasureConfirmation
from consent.models import ConsentRecord
from console.models import ConsoleMembership
from nodes import registry
from nodes.models import Node
from tenancy.models import ApiKey, Tenant


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "retention_days", "identification_threshold", "created_at"]
    search_fields = ["slug", "name"]
    exclude = ["webhook_secret"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are made with `manage.py create_api_key` (the secret is shown once there);
    here they can be inspected and revoked."""

    list_display = ["prefix", "tenant", "name", "scopes", "created_at", "revoked_at"]
    list_filter = ["tenant"]
    readonly_fields = ["id", "tenant", "prefix", "key_sha256", "scopes", "created_at"]
    fields = [*readonly_fields, "name", "revoked_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(ConsoleMembership)
class ConsoleMembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "tenant", "role", "created_at"]
    list_filter = ["tenant", "role"]
    readonly_fields = ["api_key"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # made by `manage.py create_console_user`, with the user's console key


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ConsentRecord)
class ConsentRecordAdmin(ReadOnlyAdmin):
    """Operators see no personal field: those are ciphertext, read through the console by
    the tenant's own admins and auditors (tenancy.permissions)."""

    list_display = ["id", "tenant", "speaker_id", "consent_stated_purpose", "recorded_at"]
    list_filter = ["tenant"]
    exclude = ["full_name_ciphertext", "consent_text_ciphertext", "client_ip_ciphertext"]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["seq", "occurred_at", "tenant", "action", "actor", "speaker_id"]
    list_filter = ["action"]


@admin.register(ErasureAudit)
class ErasureAuditAdmin(ReadOnlyAdmin):
    list_display = ["id", "tenant", "speaker", "reason", "requested_by", "erased_at"]


@admin.register(ErasureConfirmation)
class ErasureConfirmationAdmin(ReadOnlyAdmin):
    list_display = ["erasure", "node_id", "outcome", "confirmed_at"]


@admin.register(Node)
class NodeAdmin(ReadOnlyAdmin):
    """Hosts, pids and whole galleries are for operators: tenants see their own warm counts."""

    list_display = [
        "node_id",
        "engine",
        "model_id",
        "host",
        "pid",
        "boot_id",
        "gallery_size",
        "last_seen_at",
    ]

    @admin.display(description="gallery size (live)")
    def gallery_size(self, node: Node) -> int | None:
        beat = registry.live_heartbeats().get(node.node_id)
        return beat.gallery_size if beat else None
