"""Stored results hold speaker ids only; names are looked up when a result is read (GET, the
downloads, the webhook), so an erased speaker's name is never served again."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from diarization.models import DiarizationJob
from diarization.services import webhook_delivery
from enrollment.models import Speaker
from enrollment.services import erase_speaker
from tests.diarization.jobs import engine_result, make_finished_job
from tests.factories import make_speaker, make_tenant
from tests.webhooks import WebhookReceiver

DIARIZE = "/v1/modules/scaiecho/diarize"
NAME = "Alice Marker-7f3c"


@pytest.fixture
def alice(tenant) -> Speaker:
    return make_speaker(tenant, NAME)


@pytest.fixture
def job(tenant, alice) -> DiarizationJob:
    return make_finished_job(tenant, engine_result(str(alice.id)))


def stored_text(job: DiarizationJob) -> str:
    """The row's result column as PostgreSQL holds it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT result::text FROM diarization_diarizationjob WHERE id = %s", [job.id]
        )
        return cursor.fetchone()[0]


def erase(speaker: Speaker, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        erase_speaker(speaker, reason="erasure_requested", actor="test")


def by_label(items: list[dict]) -> dict[str, dict]:
    return {item["speaker_label"]: item for item in items if item["speaker_label"]}


def test_get_shows_the_current_name_of_the_id_the_result_holds(api, job, alice):
    assert "display_name" not in stored_text(job) and NAME not in stored_text(job)

    result = api.get(f"{DIARIZE}/{job.id}").json()["data"]["result"]

    segments = [s for s in result["segments"] if s["speaker_label"] == str(alice.id)]
    assert len(segments) == 2 and all(s["display_name"] == NAME for s in segments)
    speakers = by_label(result["speakers"])
    assert speakers[str(alice.id)]["display_name"] == NAME
    assert speakers[str(alice.id)]["enrolled"] is True
    assert "display_name" not in speakers["spk_0"] and "erased" not in speakers["spk_0"]
    assert not any("erased" in s for s in result["segments"])

    # Looked up at each read: a renamed speaker reads with the new name.
    Speaker.objects.filter(id=alice.id).update(display_name="Alice Renamed")
    renamed = api.get(f"{DIARIZE}/{job.id}").json()["data"]["result"]
    assert by_label(renamed["speakers"])[str(alice.id)]["display_name"] == "Alice Renamed"


def test_after_erasure_get_shows_the_label_as_erased_with_no_name(
    api, job, alice, django_capture_on_commit_callbacks
):
    erase(alice, django_capture_on_commit_callbacks)

    response = api.get(f"{DIARIZE}/{job.id}")

    assert response.status_code == 200
    assert NAME not in response.content.decode()
    result = response.json()["data"]["result"]
    labelled = [s for s in result["segments"] if s["speaker_label"] == str(alice.id)]
    assert len(labelled) == 2
    assert all(s["erased"] is True and "display_name" not in s for s in labelled)
    speaker = by_label(result["speakers"])[str(alice.id)]
    assert speaker["erased"] is True and "display_name" not in speaker
    assert speaker["score"] == 1.0  # the rest of the entry is kept
    assert "erased" not in by_label(result["speakers"])["spk_0"]


@pytest.mark.parametrize("fmt", ["json", "srt", "vtt", "txt", "rttm"])
def test_after_erasure_every_download_shows_the_label_and_no_name(
    api, job, alice, fmt, django_capture_on_commit_callbacks
):
    before = api.get(f"{DIARIZE}/{job.id}/result", {"format": fmt}).content.decode()
    erase(alice, django_capture_on_commit_callbacks)

    response = api.get(f"{DIARIZE}/{job.id}/result", {"format": fmt})

    assert response.status_code == 200
    text = response.content.decode()
    assert NAME not in text and str(alice.id) in text
    if fmt == "json":
        segments = json.loads(text)["segments"]
        assert [s.get("erased") for s in segments] == [True, None, True]
    elif fmt == "rttm":
        assert text == before  # ids only, before and after
    else:
        assert NAME in before
        assert f"{alice.id} (erased)" in text and "spk_0" in text


def test_an_id_the_tenant_does_not_know_reads_as_erased(api, tenant):
    """Another tenant's speaker: its name is not looked up across tenants."""
    stranger = make_speaker(make_tenant(), "Other Tenant Person")
    job = make_finished_job(tenant, engine_result(str(stranger.id)))

    text = api.get(f"{DIARIZE}/{job.id}").content.decode()

    assert "Other Tenant Person" not in text
    speakers = by_label(json.loads(text)["data"]["result"]["speakers"])
    assert speakers[str(stranger.id)]["erased"] is True


def test_a_name_a_stored_result_still_holds_is_never_shown(api, job, alice):
    """A node on an older version may still write names; the read path drops them."""
    old = engine_result(str(alice.id))
    old["segments"][0]["display_name"] = "Stale Name"
    old["speakers"][0]["display_name"] = "Stale Name"
    DiarizationJob.objects.filter(id=job.id).update(result=old)

    text = api.get(f"{DIARIZE}/{job.id}").content.decode()

    assert "Stale Name" not in text and NAME in text


@pytest.fixture
def receiver(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_HOSTS = True
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    made: list[WebhookReceiver] = []

    def make(statuses: list[int]) -> WebhookReceiver:
        made.append(WebhookReceiver(statuses))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_a_webhook_pending_at_the_erasure_is_delivered_without_the_name(
    tenant, alice, receiver, django_capture_on_commit_callbacks
):
    hook = receiver([503, 200])
    job = make_finished_job(tenant, engine_result(str(alice.id)), webhook_url=hook.url)
    with pytest.raises(webhook_delivery.WebhookRetry):
        webhook_delivery.deliver_webhook(str(job.id))
    _, first = hook.received[0]
    assert NAME in first.decode()  # resolved at send time while the speaker exists

    erase(alice, django_capture_on_commit_callbacks)
    assert webhook_delivery.deliver_webhook(str(job.id)) == "delivered"

    _, retried = hook.received[1]
    assert NAME not in retried.decode()
    speakers = by_label(json.loads(retried)["result"]["speakers"])
    assert speakers[str(alice.id)]["erased"] is True
    assert "display_name" not in speakers[str(alice.id)]
    assert NAME not in stored_text(job)


# --- the data migration ---------------------------------------------------------------------

BEFORE_STRIPPING = [("diarization", "0003_result_expiry")]


def migrate(targets: list[tuple[str, str | None]]) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return MigrationExecutor(connection)


def test_the_migration_strips_names_from_results_written_before(live_db):
    tenant = make_tenant()
    old = migrate(BEFORE_STRIPPING).loader.project_state(BEFORE_STRIPPING).apps
    old_job = old.get_model("diarization", "DiarizationJob")
    speaker_id = "0b7c7d3c-6a61-4a4e-9a4f-5e0f1d2c3b4a"
    named = engine_result(speaker_id)
    named["segments"][0]["display_name"] = NAME
    named["segments"][2]["display_name"] = NAME
    named["speakers"][0]["display_name"] = NAME
    fields = {
        "tenant_id": tenant.id,
        "audio_blob_key": "diarize/old",
        "audio_sha256": "0" * 64,
        "audio_size_bytes": 1,
        "audio_duration_s": 12.0,
        "estimated_time_s": 1,
    }
    with_names = old_job.objects.create(status="succeeded", result=named, **fields)
    without = old_job.objects.create(status="succeeded", result=engine_result(speaker_id), **fields)
    pending = old_job.objects.create(status="pending", result=None, **fields)

    executor = MigrationExecutor(connection)
    migrate(executor.loader.graph.leaf_nodes())

    stripped = DiarizationJob.objects.get(id=with_names.id)
    assert stripped.result == engine_result(speaker_id)
    assert NAME not in stored_text(stripped)
    assert DiarizationJob.objects.get(id=without.id).result == engine_result(speaker_id)
    assert DiarizationJob.objects.get(id=pending.id).result is None
