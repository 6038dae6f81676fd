"""Faults injected for real: the database connection severed in the middle of a request."""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection

from consent.models import ConsentRecord
from enrollment import preflight as preflight_module
from enrollment.models import Speaker
from tests.factories import client_for, enrollment_form, make_key, make_tenant

pytestmark = [pytest.mark.live]


def sever(backend_pid: int) -> None:
    """What a PostgreSQL restart or a dropped network does to one connection."""
    conf = connection.settings_dict
    with psycopg.connect(
        host=conf["HOST"] or None,
        port=conf["PORT"] or None,
        user=conf["USER"] or None,
        dbname=conf["NAME"],
        autocommit=True,
    ) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [backend_pid])


def test_a_connection_lost_mid_enrollment_answers_503_and_leaves_nothing(
    live_db, s3_blob_store, monkeypatch
):
    api = client_for(make_key(make_tenant())[1])
    original = preflight_module.Preflight.run

    def run_then_lose_the_database(self, *args, **kwargs):
        report = original(self, *args, **kwargs)
        # The preflight passed; the database goes away before anything is written.
        sever(connection.connection.info.backend_pid)
        return report

    monkeypatch.setattr(preflight_module.Preflight, "run", run_then_lose_the_database)

    response = api.post("/v1/modules/scaiecho/speakers", enrollment_form(), format="multipart")

    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "database_unavailable"
    assert response["Retry-After"]
    connection.close()  # the test's own connection was the one severed
    assert Speaker.objects.count() == 0
    assert ConsentRecord.objects.count() == 0
    listing = s3_blob_store.client.list_object_versions(Bucket=s3_blob_store.bucket)
    assert listing.get("Versions", []) == []
    # The next request gets a fresh connection and is served.
    assert api.get("/v1/modules/scaiecho/speakers").status_code == 200
