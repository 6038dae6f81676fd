from django.conf import settings
from django.db import models

from tenancy.models import ApiKey, Tenant


class ConsoleRole(models.TextChoices):
    ADMIN = "admin", "Admin (enroll, re-warm, erase)"
    AUDITOR = "auditor", "Auditor (read-only)"


class ConsoleMembership(models.Model):
    """A console user's tenant and role.

    Enrollments and erasures made in the console are attributed to the user and, where the
    consent record needs a key, to the user's own console key (never shown, never usable
    over the API: its secret is thrown away when it is made).
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="console_membership"
    )
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="console_members")
    role = models.CharField(max_length=16, choices=ConsoleRole.choices)
    api_key = models.OneToOneField(ApiKey, on_delete=models.PROTECT, related_name="console_member")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.user} ({self.role} of {self.tenant})"
