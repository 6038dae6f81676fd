"""The permission check fails closed: what a view does not declare, no key may do."""

from __future__ import annotations

import pytest
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory, force_authenticate
from rest_framework.views import APIView

from tenancy.api_views import ScopedView
from tenancy.auth import ApiPrincipal
from tenancy.models import ALL_SCOPES, Scope
from tenancy.permissions import AUDIT


class Undeclared(APIView):
    """Serves GET but declares nothing (and is not a ScopedView)."""

    def get(self, request: Request) -> Response:
        return Response({"data": "secret"})


class ReadOnly(ScopedView):
    """Declares GET; serves POST without declaring it."""

    required_scopes = {"GET": [AUDIT]}

    def get(self, request: Request) -> Response:
        return Response({"data": "secret"})

    def post(self, request: Request) -> Response:
        return Response({"data": "changed"})


class EmptyDeclaration(ScopedView):
    required_scopes = {"GET": []}

    def get(self, request: Request) -> Response:
        return Response({"data": "secret"})


def principal(*scopes: str) -> ApiPrincipal:
    return ApiPrincipal(api_key=None, tenant=None, scopes=frozenset(scopes))  # type: ignore[arg-type]


def answer(view: type[APIView], method: str, who: ApiPrincipal | None) -> Response:
    request = APIRequestFactory().generic(method, "/anything")
    if who is not None:
        force_authenticate(request, user=who)
    response = view.as_view()(request)
    response.render()
    return response


def code(response: Response) -> str:
    return response.data["error"]["code"]


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_a_view_that_declares_no_scopes_is_refused_to_every_key(method):
    response = answer(Undeclared, method, principal(*ALL_SCOPES))

    assert response.status_code == 403 and code(response) == "forbidden"


def test_a_method_served_but_not_declared_is_refused_to_every_key():
    response = answer(ReadOnly, "POST", principal(*ALL_SCOPES))

    assert response.status_code == 403 and code(response) == "forbidden"
    assert "declares no scopes for POST" in response.data["error"]["message"]


def test_an_empty_declaration_refuses_rather_than_allows():
    response = answer(EmptyDeclaration, "GET", principal(*ALL_SCOPES))

    assert response.status_code == 403 and code(response) == "forbidden"


def test_head_needs_what_get_needs():
    refused = answer(ReadOnly, "HEAD", principal(Scope.ENROLL.value, Scope.TRANSCRIBE.value))
    allowed = answer(ReadOnly, "HEAD", principal(Scope.AUDIT.value))

    assert refused.status_code == 403 and code(refused) == "missing_scope"
    assert allowed.status_code == 200


@pytest.mark.parametrize("who", [None, principal(*ALL_SCOPES)], ids=["no key", "every scope"])
@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "OPTIONS"])
def test_a_method_without_a_handler_is_405_for_anyone(method, who):
    response = answer(ReadOnly, method, who)

    assert response.status_code == 405 and code(response) == "method_not_allowed"
    assert response["Allow"] == "GET, HEAD, POST"
