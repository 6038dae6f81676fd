"""Schemathesis against the service's own OpenAPI schema: no input it generates gets a 5xx.

Runs in-process on the WSGI application with a key holding every scope (the access matrix
covers refusals); requests that need a node, an upload's real audio or another tenant's
objects simply get their 4xx.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests.factories import make_key, make_tenant

MAX_EXAMPLES = 12


@pytest.fixture(autouse=True)
def keep_test_connection():
    """As Django's test client does: the WSGI handler must not close the test's connection."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def bearer(db) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_key(make_tenant())[1]}"}


schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", get_wsgi_application())


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
@pytest.mark.django_db(transaction=False)
def test_generated_requests_never_get_a_server_error(case, bearer):
    response = case.call(headers=bearer)
    case.validate_response(response, checks=[not_a_server_error])
