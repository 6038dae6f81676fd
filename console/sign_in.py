"""Sign-in to the console (and the Django admin), throttled.

Failed sign-ins are counted in Redis (``common.rate_limits``, shared by every API process) per
user name (CONSOLE_SIGN_IN_USER_LIMIT) and per client address (CONSOLE_SIGN_IN_ADDRESS_LIMIT,
looser: one address can be a whole office). Past either limit the sign-in page answers 429
with a message until the window (CONSOLE_SIGN_IN_WINDOW_S) ends, without checking the
password, and the audit trail records it once per window and limit. The trail never holds
what was typed: the user's id when the name is a user's, else a hash of the name keyed with
the server's secret (a password typed into the name field stays unreadable); the address
likewise.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import render
from django.utils.crypto import salted_hmac
from redis.exceptions import RedisError

from audit.services import record_event
from common import rate_limits
from common.client_address import client_address, limit_subject
from console.models import ConsoleMembership

logger = logging.getLogger(__name__)

SIGN_IN_TEMPLATE = "console/login.html"
THROTTLE_ACTOR = "system:sign-in-throttle"


def keyed_hash(kind: str, value: str) -> str:
    """A stable pseudonym of ``value``: HMAC-SHA256 keyed with SECRET_KEY."""
    return salted_hmac(f"scaiecho.console.sign-in.{kind}", value, algorithm="sha256").hexdigest()


class SignInThrottled(Exception):
    def __init__(self, limit: str, retry_after_s: int):
        super().__init__(f"sign-in throttled per {limit}")
        self.limit = limit
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class SignInLimits:
    """The two limits one sign-in attempt counts against."""

    user_name: str
    address: str | None

    def _limits(self) -> list[tuple[str, str, int]]:
        return [
            (
                "user_name",
                f"sign-in-failures:user:{keyed_hash('user-name', self.user_name)}",
                settings.CONSOLE_SIGN_IN_USER_LIMIT,
            ),
            (
                "address",
                f"sign-in-failures:address:{limit_subject(self.address)}",
                settings.CONSOLE_SIGN_IN_ADDRESS_LIMIT,
            ),
        ]

    def check(self) -> None:
        """Raises SignInThrottled while either limit is used up."""
        for limit, name, allowed in self._limits():
            try:
                rate_limits.check(name, allowed, settings.CONSOLE_SIGN_IN_WINDOW_S)
            except rate_limits.RateLimited as limited:
                raise SignInThrottled(limit, limited.retry_after_s) from limited

    def count_failure(self) -> None:
        for _, name, allowed in self._limits():
            # Past the limit already: the next attempt is refused anyway.
            with contextlib.suppress(rate_limits.RateLimited):
                rate_limits.consume(name, allowed, settings.CONSOLE_SIGN_IN_WINDOW_S)

    def first_refusal(self, limit: str) -> bool:
        """True for the first refusal of this window by ``limit``: the one worth auditing."""
        name = next(name for which, name, _ in self._limits() if which == limit)
        try:
            rate_limits.consume(f"{name}:audited", 1, settings.CONSOLE_SIGN_IN_WINDOW_S)
        except rate_limits.RateLimited:
            return False
        return True


def _audit_throttled(surface: str, limits: SignInLimits, throttled: SignInThrottled) -> None:
    users = get_user_model()
    user = users.objects.filter(**{users.USERNAME_FIELD: limits.user_name}).first()
    membership = (
        ConsoleMembership.objects.filter(user=user).select_related("tenant").first()
        if user is not None
        else None
    )
    details: dict[str, Any] = {
        "limit": throttled.limit,
        "retry_after_s": throttled.retry_after_s,
        "client_address_hmac": keyed_hash("address", limits.address or "unknown"),
    }
    if user is not None:
        details["user_id"] = user.pk
    else:
        details["user_name_hmac"] = keyed_hash("user-name", limits.user_name)
    record_event(
        f"{surface}.sign_in_throttled",
        actor=THROTTLE_ACTOR,
        tenant=membership.tenant if membership is not None else None,
        details=details,
    )


def _audit_signed_in(surface: str, user: AbstractBaseUser) -> None:
    membership = ConsoleMembership.objects.filter(user_id=user.pk).select_related("tenant").first()
    record_event(
        f"{surface}.signed_in",
        # By id: the user name of someone who only signs in stays out of the immutable trail.
        actor=f"{surface}-user:{user.pk}",
        tenant=membership.tenant if membership is not None else None,
        details={"user_id": user.pk},
    )


def _refused(request: HttpRequest, message: str, status: int) -> HttpResponse:
    context = {
        "form": AuthenticationForm(request),
        "refusal": message,
        "next": request.POST.get("next", ""),
    }
    return render(request, SIGN_IN_TEMPLATE, context, status=status)


def throttled_sign_in(
    view: Callable[..., HttpResponseBase], surface: str
) -> Callable[..., HttpResponseBase]:
    """Puts a sign-in view (Django's LoginView, the admin's login) under the limits, which
    both share: alternating between them gains a guesser nothing."""

    @wraps(view)
    def sign_in(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.method != "POST":
            return view(request, *args, **kwargs)
        limits = SignInLimits(
            user_name=str(request.POST.get("username", "")),
            address=client_address(request.META),
        )
        try:
            limits.check()
        except SignInThrottled as throttled:
            logger.warning(
                "console sign-in throttled per %s (address %s)", throttled.limit, limits.address
            )
            try:
                first = limits.first_refusal(throttled.limit)
            except RedisError:
                # The refusal stands; whether it was the first of its window cannot be told.
                logger.exception("console sign-in: refusal not audited, Redis unavailable")
                first = False
            if first:
                _audit_throttled(surface, limits, throttled)
            minutes = -(-throttled.retry_after_s // 60)
            response = _refused(
                request,
                "Too many failed sign-ins for this user name or from this address. "
                f"Try again in {minutes} minute{'s' if minutes != 1 else ''}.",
                429,
            )
            response["Retry-After"] = str(throttled.retry_after_s)
            return response
        except RedisError:
            # Unthrottled guessing is not offered instead.
            logger.exception("console sign-in: Redis unavailable")
            return _refused(
                request,
                "Sign-in is unavailable for a moment (the service's Redis did not "
                "answer). Try again shortly.",
                503,
            )
        answer = view(request, *args, **kwargs)
        if answer.status_code == 302 and isinstance(request.user, AbstractBaseUser):
            _audit_signed_in(surface, request.user)
            return answer
        try:
            limits.count_failure()
        except RedisError:
            # The answer stands; this one failure goes uncounted.
            logger.exception("console sign-in: failure not counted, Redis unavailable")
        return answer

    return sign_in


console_sign_in = throttled_sign_in(
    auth_views.LoginView.as_view(template_name=SIGN_IN_TEMPLATE), "console"
)
admin_sign_in = throttled_sign_in(admin.site.login, "admin")
