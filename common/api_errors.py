"""One error envelope for every API failure: ``{"error": {"code", "message", ...}}``."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import InterfaceError, OperationalError
from django.http import Http404
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import RedisError
from rest_framework import exceptions, status
from rest_framework.response import Response

from common.errors import ServiceError


class MissingScope(exceptions.PermissionDenied):
    """The key is valid but lacks the scopes the route needs; names the alternatives."""

    default_code = "missing_scope"

    def __init__(self, detail: str, required_scopes: list[list[str]]):
        super().__init__(detail)
        self.required_scopes = required_scopes


_CODES: list[tuple[type[exceptions.APIException], str]] = [
    (MissingScope, "missing_scope"),
    (exceptions.NotAuthenticated, "unauthenticated"),
    (exceptions.AuthenticationFailed, "invalid_api_key"),
    (exceptions.PermissionDenied, "forbidden"),
    (exceptions.NotFound, "not_found"),
    (exceptions.MethodNotAllowed, "method_not_allowed"),
    (exceptions.UnsupportedMediaType, "unsupported_media_type"),
    (exceptions.NotAcceptable, "not_acceptable"),
    (exceptions.ParseError, "malformed_request"),
    (exceptions.Throttled, "rate_limited"),
    (exceptions.ValidationError, "invalid_request"),
]


def error_response(
    status_code: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    return Response(
        {"error": {"code": code, "message": message, **extra}}, status=status_code, headers=headers
    )


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ServiceError):
        return error_response(exc.status_code, exc.code, exc.message, **exc.details)
    if isinstance(exc, RedisError | KombuOperationalError):
        return error_response(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "backend_unavailable",
            "The registry or the task broker is unavailable; nothing was changed. Try again later.",
            headers={"Retry-After": "5"},
        )
    if isinstance(exc, OperationalError | InterfaceError):
        return error_response(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "database_unavailable",
            "The database is unavailable; the request did not complete. Try again later.",
            headers={"Retry-After": "5"},
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if not isinstance(exc, exceptions.APIException):
        return None

    code = next((c for klass, c in _CODES if isinstance(exc, klass)), "error")
    headers: dict[str, str] = {}
    auth_header = getattr(exc, "auth_header", None)
    if auth_header:
        headers["WWW-Authenticate"] = auth_header
    wait = getattr(exc, "wait", None)
    if wait:
        headers["Retry-After"] = str(int(wait))

    if isinstance(exc, exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        return error_response(
            status.HTTP_400_BAD_REQUEST,
            code,
            "The request has invalid fields.",
            headers=headers,
            fields=fields,
        )
    extra: dict[str, Any] = {}
    if isinstance(exc, MissingScope):
        extra["required_scopes"] = exc.required_scopes
    return error_response(exc.status_code, code, str(exc.detail), headers=headers, **extra)
