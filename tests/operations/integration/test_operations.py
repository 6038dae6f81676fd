"""Health, readiness, metrics, request ids, structured logs and rate limits."""

from __future__ import annotations

import json
import logging
import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from common.blobs import BlobStoreError
from nodes import registry
from operations.structured_logs import JsonFormatter, RequestIdFilter
from tenancy.models import Scope
from tests import audio
from tests.factories import client_for, enrollment_form, make_key, upload

SPEAKERS = "/v1/modules/scaiecho/speakers"


def heartbeat(node_id: str = "node-ops") -> None:
    registry.publish_heartbeat(
        registry.Heartbeat(
            node_id=node_id,
            engine="pyannote",
            model_id="resemblyzer/ge2e-voice-encoder",
            model_version="test",
            boot_id="boot",
            host="here",
            pid=1,
            gallery_size=0,
            sent_at=time.time(),
        )
    )


def test_healthz_answers_without_any_dependency(client, monkeypatch):
    monkeypatch.setattr(registry, "redis_client", lambda: (_ for _ in ()).throw(OSError()))
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_checks_database_redis_blob_store_and_nodes(db, client, s3_blob_store):
    response = client.get("/readyz")
    assert response.status_code == 503
    checks = {c["name"]: c for c in response.json()["checks"]}
    assert checks["database"]["ok"] and checks["redis"]["ok"] and checks["blob_store"]["ok"]
    assert not checks["nodes"]["ok"] and "no pyannote node" in checks["nodes"]["detail"]

    heartbeat()
    response = client.get("/readyz")
    assert response.status_code == 200 and response.json()["status"] == "ready"
    assert "node-ops" in {c["name"]: c for c in response.json()["checks"]}["nodes"]["detail"]


def test_readyz_names_a_failing_blob_store(db, client, s3_blob_store, monkeypatch):
    heartbeat()

    def broken() -> str:
        raise BlobStoreError("bucket gone")

    monkeypatch.setattr(s3_blob_store, "check", broken)
    body = client.get("/readyz").json()
    assert body["status"] == "not_ready"
    failing = [c for c in body["checks"] if not c["ok"]]
    assert [c["name"] for c in failing] == ["blob_store"] and "bucket gone" in failing[0]["detail"]


def metric(text: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    raise AssertionError(f"{name} {labels} not in metrics")


def test_metrics_cover_requests_preflight_nodes_and_queues(api, client):
    heartbeat()
    silent = upload("quiet.wav", audio.encode(audio.silence(5.0)), "audio/wav")
    assert (
        api.post(SPEAKERS, enrollment_form(reference=silent), format="multipart").status_code == 422
    )

    text = client.get("/metrics").content.decode()
    assert metric(text, "scaiecho_live_state_up") == 1.0
    assert metric(text, "scaiecho_nodes_alive") >= 1.0
    assert metric(text, "scaiecho_queue_depth", queue="orchestrator") >= 0.0
    assert metric(text, "scaiecho_preflight_outcomes_total", outcome="rejected", finding="") >= 1
    assert (
        metric(
            text,
            "scaiecho_http_request_duration_seconds_count",
            route="v1/modules/scaiecho/speakers",
            method="POST",
            status="422",
        )
        >= 1
    )


def test_metrics_still_answer_when_redis_is_down(db, client, monkeypatch):
    def broken() -> dict:
        raise RedisConnectionError("down")

    monkeypatch.setattr(registry, "live_heartbeats", broken)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert metric(response.content.decode(), "scaiecho_live_state_up") == 0.0


def test_request_ids_are_echoed_or_made(client):
    assert client.get("/healthz", HTTP_X_REQUEST_ID="abc-123").headers["X-Request-ID"] == "abc-123"
    made = client.get("/healthz", HTTP_X_REQUEST_ID="bad id\nwith newline").headers["X-Request-ID"]
    assert len(made) == 32 and "\n" not in made


def test_json_logs_carry_the_request_id_and_fields(client, caplog):
    caplog.set_level(logging.INFO, logger="scaiecho.access")
    client.get("/healthz", HTTP_X_REQUEST_ID="req-42")
    record = next(r for r in caplog.records if r.name == "scaiecho.access")
    RequestIdFilter().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "req-42" and line["status"] == 200
    assert line["route"] == "healthz" and line["level"] == "INFO"
    assert "Authorization" not in json.dumps(line)


def test_repeated_authentication_failures_are_cut_off(db, settings, tenant):
    settings.AUTH_FAILURE_LIMIT = 3
    guesser = client_for("se_000000000000_guess")
    codes = [guesser.get(SPEAKERS).status_code for _ in range(4)]
    assert codes == [401, 401, 401, 429]
    response = guesser.get(SPEAKERS)
    assert response.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(response["Retry-After"]) <= settings.AUTH_FAILURE_WINDOW_S
    # From that address even a valid key waits: the guesser cannot keep probing.
    assert client_for(make_key(tenant)[1]).get(SPEAKERS).status_code == 429


def test_enrollments_are_limited_per_tenant(db, settings, tenant):
    settings.ENROLLMENT_RATE_LIMIT = 1
    api = client_for(make_key(tenant, [Scope.ENROLL.value])[1])
    first = api.post(SPEAKERS, {"display_name": "x"}, format="multipart")
    assert first.status_code == 400
    second = api.post(SPEAKERS, {"display_name": "x"}, format="multipart")
    assert second.status_code == 429 and second.json()["error"]["code"] == "rate_limited"
    assert api.get(SPEAKERS).status_code == 200  # reading is not limited


def test_slots_are_leased_renewed_released_and_lapse():
    from common.rate_limits import SlotsTaken, release_slot, renew_slot, take_slot

    take_slot("sessions:t", "a", 1, 1)
    with pytest.raises(SlotsTaken):
        take_slot("sessions:t", "b", 1, 1)
    assert renew_slot("sessions:t", "a", 1)
    time.sleep(1.2)  # a's process died without releasing its slot: the lease lapses
    assert not renew_slot("sessions:t", "a", 1)
    take_slot("sessions:t", "b", 1, 30)
    release_slot("sessions:t", "b")
    # A renewal that arrives after the release brings nothing back.
    assert not renew_slot("sessions:t", "b", 30)
    take_slot("sessions:t", "c", 1, 30)


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Bearer se_short"])
def test_malformed_credentials_count_as_failures(db, settings, header):
    settings.AUTH_FAILURE_LIMIT = 1
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    assert client.get(SPEAKERS).status_code == 401
    assert client.get(SPEAKERS).status_code == 429


def test_keys_and_secrets_never_reach_the_logs(api, tenant, caplog, capsys):
    from tenancy.services import webhook_secret

    caplog.set_level(logging.DEBUG)
    raw_key = make_key(tenant)[1]
    secret = webhook_secret(tenant)
    client_for(raw_key).get(SPEAKERS)
    client_for(raw_key + "x").get(SPEAKERS)  # a failed authentication is logged as such
    silent = upload("quiet.wav", audio.encode(audio.silence(5.0)), "audio/wav")
    client_for(raw_key).post(SPEAKERS, enrollment_form(reference=silent), format="multipart")

    logged = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    logged += capsys.readouterr().err
    assert caplog.records
    for leaked in (raw_key, raw_key.split("_", 2)[2], secret):
        assert leaked not in logged


def test_hostile_file_names_and_fields_never_reach_storage_keys_or_logs(
    api, tenant, s3_blob_store, caplog, django_capture_on_commit_callbacks
):
    caplog.set_level(logging.DEBUG)
    hostile_name = "../../etc/passwd\u202e\u0000" + "ü" * 300 + ".wav"
    name = "Ana/../../b" + "\u00e9" * 150
    form = enrollment_form(
        display_name=name,
        reference=upload(hostile_name, audio.encode(audio.clip(audio.SPEAKER_A)), "audio/wav"),
    )
    with django_capture_on_commit_callbacks(execute=False):
        response = api.post(SPEAKERS, form, format="multipart")
    assert response.status_code == 201, response.content
    listing = s3_blob_store.client.list_object_versions(Bucket=s3_blob_store.bucket)
    keys = [v["Key"] for v in listing["Versions"]]
    assert len(keys) == 2
    for key in keys:
        assert ".." not in key and "passwd" not in key and "\u00e9" not in key
        assert key.isascii() and len(key) < 200
    logged = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert "passwd" not in logged and name not in logged

    refused = api.post(SPEAKERS, enrollment_form(display_name="bad\x07name"), format="multipart")
    assert refused.status_code == 400 and "display_name" in refused.json()["error"]["fields"]
